import math
from collections import Counter

import pytest

from playpen_attribution.attribution.arms import SelectConfig, plan_arms
from playpen_attribution.attribution.selection import (
    build_arms,
    length_bins,
    matched_random,
    rank_ids,
    strata,
    top_k,
)
from playpen_attribution.errors import UserError


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


def test_matched_random_from_the_whole_pool_may_reuse_chosen_rows():
    stratum = {f"r{i}": "s" for i in range(4)}
    picked, _ = matched_random(["r0", "r1", "r2"], stratum, seed=0, allow_overlap=True)
    assert len(picked) == 3


def test_the_counterfactual_control_draws_from_the_whole_pool_and_the_seed_control_from_the_rest():
    from playpen_attribution.attribution.arms import SelectConfig, plan_arms
    from playpen_attribution.attribution.selection import build_arms

    ids = [f"r{i:03d}" for i in range(200)]
    scores = {e: float(i) for i, e in enumerate(ids)}  # r199 ranks first
    stratum = {e: "s" for e in ids}
    plan = plan_arms(SelectConfig(k=100, arms=["top_k", "matched_random_k", "matched_random_rest_k"]))
    overlaps = []
    for seed in range(5):
        arms = build_arms(plan, {"attribution": scores}, ids, stratum, seed)
        top = set(arms["top_k"]["example_ids"])
        assert not top & set(arms["matched_random_rest_k"]["example_ids"])
        overlaps.append(len(top & set(arms["matched_random_k"]["example_ids"])))
    assert 30 < sum(overlaps) / len(overlaps) < 70  # about half: drawn from all 200 rows


def test_matched_random_refuses_when_rest_of_pool_is_too_small():
    stratum = {f"r{i}": "s" for i in range(5)}
    with pytest.raises(UserError, match="fewer than k"):
        matched_random(["r0", "r1", "r2"], stratum, seed=0)


# --- arms from named rankings -------------------------------------------------------------------


def _plan(**select):
    return plan_arms(SelectConfig(**select))


def test_build_arms_of_every_kind_from_several_rankings():
    outcomes, lengths = _pool(200)
    ids = list(outcomes)
    stratum = strata(outcomes, lengths, 5)
    rankings = {"attribution": {e: float(i) for i, e in enumerate(ids)}, "length": {e: float(lengths[e]) for e in ids},
                "loss": {e: -float(i) for i, e in enumerate(ids)}}
    plan = _plan(k=20, arms=["top_k", "matched_random_k", "matched_random_rest_k", "longest_k", "full_pool",
                             {"name": "loss_top", "kind": "top", "ranking": "loss", "n": 5}])
    arms = build_arms(plan, rankings, ids, stratum, seed=3)
    assert arms["top_k"]["example_ids"] == ids[::-1][:20]
    assert arms["loss_top"]["example_ids"] == ids[:5]
    assert arms["longest_k"]["example_ids"] == rank_ids(rankings["length"])[:20]
    assert arms["full_pool"]["example_ids"] == ids
    rnd = arms["matched_random_rest_k"]
    assert len(rnd["example_ids"]) == 20 and not set(rnd["example_ids"]) & set(arms["top_k"]["example_ids"])
    assert rnd["matching"]["matched"] + rnd["matching"]["unmatched_filled"] == 20
    assert build_arms(plan, rankings, ids, stratum, seed=3) == arms
    assert build_arms(plan, rankings, ids, stratum, seed=4)["matched_random_rest_k"] != rnd
    assert len(arms["matched_random_k"]["example_ids"]) == 20


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
    with pytest.raises(UserError, match=r"pool row 2 \(b\): score = 'high' is not a number"):  # 1-based
        metadata_ranking([pool[0], {"example_id": "b", "score": "high"}], "score")


def test_a_uniform_random_arm_is_seeded_by_seed_and_name_and_ignores_rankings():
    from playpen_attribution.attribution.arms import PlannedArm

    outcomes, lengths = _pool(100)
    ids = list(outcomes)
    stratum = strata(outcomes, lengths, 5)
    plan = [PlannedArm("random_k", "random", None, 30), PlannedArm("random_b", "random", None, 30)]
    first = build_arms(plan, {}, ids, stratum, seed=1)
    again = build_arms(plan, {}, ids, stratum, seed=1)
    other = build_arms(plan, {}, ids, stratum, seed=2)
    assert first == again and first["random_k"] != other["random_k"] and first["random_k"] != first["random_b"]
    assert len(set(first["random_k"]["example_ids"])) == 30 and set(first["random_k"]["example_ids"]) <= set(ids)
    with pytest.raises(UserError, match="n = 200 is larger than the pool"):
        build_arms([PlannedArm("r", "random", None, 200)], {}, ids, stratum, seed=1)


def _token_pool(n=400, seed=0):
    import random as _random

    rng = _random.Random(seed)
    ids = [f"r{i}" for i in range(n)]
    category = {e: ("code", "math", "chat")[i % 3] for i, e in enumerate(ids)}
    tokens = {e: rng.randint(5, 200) for e in ids}
    return ids, category, tokens


def test_token_matched_random_arm_is_within_two_percent_of_its_targets_completion_tokens():
    from collections import Counter

    from playpen_attribution.attribution.selection import length_bins, match_tokens, matched_random

    ids, category, tokens = _token_pool()
    bins = length_bins(tokens, 3)
    stratum = {e: f"{category[e]}|{bins[e]}" for e in ids}
    longer = sorted(ids, key=lambda e: -tokens[e])[:150]
    chosen = [e for i, e in enumerate(longer) if i % 3 == 0][:40]  # long rows: a stratum draw alone falls short
    drawn, _ = matched_random(chosen, stratum, "s1")
    target = sum(tokens[e] for e in chosen)
    assert abs(sum(tokens[e] for e in drawn) - target) > 0.02 * target
    allowed = [e for e in ids if e not in set(chosen)]
    matched, info = match_tokens(drawn, allowed, stratum, tokens, target, 0.02)
    assert abs(sum(tokens[e] for e in matched) - target) <= 0.02 * target and info["within_tolerance"]
    assert info["tokens"] == sum(tokens[e] for e in matched) and info["swaps"] > 0
    assert Counter(stratum[e] for e in matched) == Counter(stratum[e] for e in drawn)  # strata unchanged
    assert len(set(matched)) == 40 and not set(matched) & set(chosen)


def test_build_arms_token_matches_matched_random_and_label_arms():
    from playpen_attribution.attribution.arms import PlannedArm
    from playpen_attribution.attribution.selection import build_arms, length_bins

    ids, category, tokens = _token_pool()
    bins = length_bins(tokens, 3)
    stratum = {e: f"{category[e]}|{bins[e]}" for e in ids}
    ranking = {e: float((i * 7919) % 401) + tokens[e] / 4 for i, e in enumerate(ids)}  # favours longer rows
    labelled = {e for i, e in enumerate(ids) if i % 2 == 0}
    plan = [PlannedArm("top_k", "top", "attribution", 30), PlannedArm("matched_random_k", "matched_random", "attribution", 30),
            PlannedArm("label_k", "label", "attribution", 30)]
    arms = build_arms(plan, {"attribution": ranking}, ids, stratum, 1, tokens=tokens, labelled=labelled)
    target = sum(tokens[e] for e in arms["top_k"]["example_ids"])
    for name in ("matched_random_k", "label_k"):
        total = sum(tokens[e] for e in arms[name]["example_ids"])
        assert abs(total - target) <= 0.02 * target, name
        assert arms[name]["matching"]["tokens_target"] == target
    assert set(arms["label_k"]["example_ids"]) <= labelled
    with pytest.raises(UserError, match="pass the label filter"):
        build_arms([PlannedArm("label_k", "label", "attribution", 300)], {"attribution": ranking}, ids, stratum, 1,
                   tokens=tokens, labelled=labelled)
