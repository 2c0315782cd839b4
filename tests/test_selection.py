import math
from collections import Counter

import pytest

from playpen_attribution.errors import UserError
from playpen_attribution.selection import length_bins, matched_random, rank_ids, strata, top_k


def test_rank_puts_non_finite_last_and_breaks_ties_by_id():
    scores = {"a": 1.0, "b": float("nan"), "c": 3.0, "d": 1.0, "e": float("inf")}
    assert rank_ids(scores) == ["c", "a", "d", "b", "e"]


def test_top_k_and_k_larger_than_pool():
    scores = {f"r{i}": float(i) for i in range(10)}
    assert top_k(scores, 3) == ["r9", "r8", "r7"]
    with pytest.raises(UserError, match="larger than the pool"):
        top_k(scores, 11)


def test_length_bins_are_quantiles():
    bins = length_bins({f"r{i}": i for i in range(10)}, 5)
    assert [bins[f"r{i}"] for i in range(10)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def _pool(n=900):
    outcomes = {f"r{i}": ("success" if i % 3 else "failure") for i in range(n)}
    lengths = {f"r{i}": 10 + (i * 7) % 50 for i in range(n)}
    return outcomes, lengths


def test_matched_random_reproduces_strata_without_overlap():
    outcomes, lengths = _pool()
    stratum = strata(outcomes, lengths, 5)
    chosen = [f"r{i}" for i in range(0, 120, 3)] + [f"r{i}" for i in range(1, 30, 3)]
    picked, info = matched_random(chosen, stratum, seed=1)
    assert len(picked) == len(chosen) and len(set(picked)) == len(picked)
    assert not set(picked) & set(chosen)
    assert Counter(stratum[e] for e in picked) == Counter(stratum[e] for e in chosen)
    assert info["unmatched_filled"] == 0
    assert matched_random(chosen, stratum, seed=1)[0] == picked  # seeded
    assert matched_random(chosen, stratum, seed=2)[0] != picked


def test_matched_random_fills_a_short_stratum_and_counts_it():
    stratum = {"a": "x", "b": "x", "c": "y", "d": "y", "e": "y"}
    picked, info = matched_random(["a", "b"], stratum, seed=0)
    assert len(picked) == 2 and not {"a", "b"} & set(picked)
    assert info == {"matched": 0, "unmatched_filled": 2, "shortfall_by_stratum": {"x": 2}}


def test_matched_random_with_overlap_allowed_may_reuse_chosen_rows():
    stratum = {f"r{i}": "s" for i in range(4)}
    picked, _ = matched_random(["r0", "r1", "r2"], stratum, seed=0, allow_overlap=True)
    assert len(picked) == 3


def test_matched_random_refuses_when_rest_of_pool_is_too_small():
    stratum = {f"r{i}": "s" for i in range(5)}
    with pytest.raises(UserError, match="fewer than k"):
        matched_random(["r0", "r1", "r2"], stratum, seed=0)


# --- arms from named rankings -------------------------------------------------------------------

from playpen_attribution.config import parse_config  # noqa: E402
from playpen_attribution.selection import build_arms  # noqa: E402


def _plan(**select):
    return parse_config({"select": select}).select.plan()


def test_plan_names_standard_arms_per_k_and_pairs_each_with_its_matched_random():
    plan = {a.name: a for a in _plan(k=300, extra_k=[500], arms=["top_k", "matched_random_k", "longest_k", "full_pool"])}
    assert list(plan) == ["top_300", "top_500", "matched_random_300", "matched_random_500", "longest_300",
                          "longest_500", "full_pool"]
    assert plan["top_500"].versus == "matched_random_500" and plan["longest_300"].versus == "matched_random_300"
    assert plan["matched_random_300"].versus is None and plan["top_500"].n == 500
    assert (plan["longest_300"].family, plan["longest_300"].k, plan["longest_300"].ranking) == ("longest_k", 300, "length")
    single = {a.name: a for a in _plan(k=100)}
    assert list(single) == ["top_k", "matched_random_k"] and single["top_k"].versus == "matched_random_k"


def test_metadata_arm_names_its_column():
    plan = _plan(k=10, arms=["metadata_k"], metadata_column="reward_model_score")
    assert plan[0].ranking == "metadata:reward_model_score"
    with pytest.raises(UserError, match="metadata_k needs select.metadata_column"):
        _plan(arms=["metadata_k"])


@pytest.mark.parametrize("select, message", [
    ({"arms": [{"name": "w", "kind": "window"}]}, "`ranks` is required for kind window"),
    ({"arms": [{"name": "w", "kind": "window", "ranks": [5, 2]}]}, "expected 1 <= first <= last"),
    ({"arms": [{"name": "r", "kind": "random_beyond", "n": 5}]}, "`beyond` is required"),
    ({"arms": [{"name": "t", "kind": "top", "ranking": "vibes"}]}, "ranking = 'vibes'"),
    ({"arms": ["top_k", {"name": "t", "kind": "top", "versus": "nope"}]}, "versus names arm\\(s\\) nope"),
    ({"arms": ["top_k", {"name": "top_k", "kind": "top"}]}, "top_k appear more than once"),
    ({"k": 100, "extra_k": [100]}, "repeats a size"),
])
def test_bad_arm_configs_name_the_problem(select, message):
    with pytest.raises(UserError, match=message):
        parse_config({"select": select}, "my.yaml")


def test_sweep_seeds_are_checked_and_a_dumped_config_parses_again():
    from playpen_attribution.config import to_yaml
    import yaml

    cfg = parse_config({"arm_train": {"seed": 7}, "sweep": {"seeds": [1, 2], "retrain_base": True}})
    assert parse_config(yaml.safe_load(to_yaml(cfg))) == cfg  # experiment.yaml replays
    with pytest.raises(UserError, match="repeats a seed"):
        parse_config({"sweep": {"seeds": [1, 1]}})
    assert parse_config({"select": {"seed": 42}}).select.seed == 42  # an older one-seed config still parses
    with pytest.raises(UserError, match="select.seed = 4 but the run's seeds are \\[1, 2\\]"):
        parse_config({"select": {"seed": 4}, "sweep": {"seeds": [1, 2]}})


def test_build_arms_of_every_kind_from_several_rankings():
    outcomes, lengths = _pool(200)
    ids = list(outcomes)
    stratum = strata(outcomes, lengths, 5)
    rankings = {"attribution": {e: float(i) for i, e in enumerate(ids)}, "length": {e: float(lengths[e]) for e in ids},
                "loss": {e: -float(i) for i, e in enumerate(ids)}}
    plan = _plan(k=20, arms=["top_k", "matched_random_k", "longest_k", "full_pool",
                             {"name": "loss_top", "kind": "top", "ranking": "loss", "n": 5}])
    arms = build_arms(plan, rankings, ids, stratum, seed=3)
    assert arms["top_k"]["example_ids"] == ids[::-1][:20]
    assert arms["loss_top"]["example_ids"] == ids[:5]
    assert arms["longest_k"]["example_ids"] == rank_ids(rankings["length"])[:20]
    assert arms["full_pool"]["example_ids"] == ids
    rnd = arms["matched_random_k"]
    assert len(rnd["example_ids"]) == 20 and not set(rnd["example_ids"]) & set(arms["top_k"]["example_ids"])
    assert rnd["matching"]["matched"] + rnd["matching"]["unmatched_filled"] == 20
    assert build_arms(plan, rankings, ids, stratum, seed=3) == arms
    assert build_arms(plan, rankings, ids, stratum, seed=4)["matched_random_k"] != rnd


def test_build_arms_refuses_a_ranking_that_misses_pool_rows():
    plan = _plan(k=2, arms=["top_k"])
    with pytest.raises(UserError, match="does not score exactly the pool"):
        build_arms(plan, {"attribution": {"a": 1.0, "b": 2.0}}, ["a", "b", "c"], {"a": "s", "b": "s", "c": "s"}, seed=0)


def test_metadata_ranking_keeps_rows_without_a_value_last_and_refuses_text():
    from playpen_attribution.stages.select import metadata_ranking

    pool = [{"example_id": "a", "score": 2}, {"example_id": "b"}, {"example_id": "c", "score": 5.5}]
    ranking = metadata_ranking(pool, "score")
    assert rank_ids(ranking) == ["c", "a", "b"] and math.isnan(ranking["b"])
    with pytest.raises(UserError, match="no pool row has that column"):
        metadata_ranking(pool, "quality")
    with pytest.raises(UserError, match=r"pool row 1 \(b\): score = 'high' is not a number"):
        metadata_ranking([pool[0], {"example_id": "b", "score": "high"}], "score")
