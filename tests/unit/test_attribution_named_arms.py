"""The authors' instruction-data arms (issue 28): named probes `probe_top_k@<L>` with their own controls, the
category-stratified top n (`select.stratify_by`) and the label-filtered, token-matched length arm
(`longest_label_k`). Pure logic: plans, selections and config checks; no model, no files."""

from collections import Counter

import pytest
import yaml

from playpen_attribution.attribution.arms import PlannedArm, SelectConfig, arm_split, plan_arms
from playpen_attribution.attribution.selection import (
    build_arms,
    longest_to_tokens,
    proportional_quotas,
    rank_ids,
    strata,
    stratified_top,
)
from playpen_attribution.config import parse_config
from playpen_attribution.core.yaml_config import dump
from playpen_attribution.errors import UserError

PREDICTOR = {"sae": {"release": "random", "layer": 1, "d_sae": 64, "probe_layers": [0, 1]}, "predict": {}}


def _pool(n=300):
    """ids, category (60% a, 30% b, 10% c), completion tokens, quality, and an attribution ranking that
    prefers category a (so a plain top n is mostly a)."""
    ids = [f"r{i:03d}" for i in range(n)]
    category = {e: "a" if i % 10 < 6 else ("b" if i % 10 < 9 else "c") for i, e in enumerate(ids)}
    tokens = {e: 10 + (i * 37) % 90 for i, e in enumerate(ids)}
    quality = {e: "good" if i % 4 else "poor" for i, e in enumerate(ids)}
    ranking = {e: (2.0 if category[e] == "a" else 0.0) + (i % 17) / 17 for i, e in enumerate(ids)}
    return ids, category, tokens, quality, ranking


# --- named probes ----------------------------------------------------------------------------------------------
def test_a_named_probe_arm_ranks_by_its_block_and_brings_its_own_control():
    plan = {a.name: a for a in plan_arms(SelectConfig(k=20, arms=["top_k", "matched_random_k", "probe_top_k@1"]))}
    arm, control = plan["probe_top_k@1"], plan["matched_random_probe_top_k@1"]
    assert (arm.kind, arm.ranking, arm.n, arm.versus, arm.family) == ("top", "probe@1", 20, (control.name,),
                                                                      "probe_top_k@1")
    assert (control.kind, control.ranking, control.versus) == ("matched_random", "probe@1", ())
    assert plan["top_k"].versus == ("matched_random_k",)  # attribution keeps its own control


def test_named_probes_at_several_sizes_and_beside_several_methods_keep_their_suffix():
    sized = [a.name for a in plan_arms(SelectConfig(k=20, extra_k=[10], arms=["probe_top_k", "probe_top_k@0"]))]
    assert sized == ["probe_top_20", "matched_random_probe_top_20", "probe_top_10", "matched_random_probe_top_10",
                     "probe_top_20@0", "matched_random_probe_top_20@0", "probe_top_10@0", "matched_random_probe_top_10@0"]
    per_method = {a.name: a for a in plan_arms(SelectConfig(k=5, arms=["top_k", "matched_random_k", "probe_top_k@0"]),
                                               ["trak", "gradient_cosine"])}
    assert set(per_method) == {"top_k@trak", "matched_random_k@trak", "top_k@gradient_cosine",
                               "matched_random_k@gradient_cosine", "probe_top_k@0", "matched_random_probe_top_k@0"}
    assert per_method["probe_top_k@0"].ranking == "probe@0"  # a probe arm is not built once per method


def test_named_probe_arms_are_drawn_from_the_candidates_like_the_other_predictor_arms():
    select = SelectConfig(k=5, arms=["top_k", "probe_top_k@1"])
    plan = {a.name: a for a in plan_arms(select)}
    assert arm_split(select, plan["probe_top_k@1"], has_candidates=True) == "candidates"
    assert arm_split(select, plan["matched_random_probe_top_k@1"], has_candidates=True) == "candidates"
    assert arm_split(select, plan["probe_top_k@1"], has_candidates=False) == "train_base"
    assert arm_split(select, plan["top_k"], has_candidates=True) == "train_base"


def test_a_probe_layer_the_sae_stage_does_not_collect_is_one_line_naming_it():
    with pytest.raises(UserError) as err:
        parse_config(PREDICTOR | {"select": {"arms": ["top_k", "probe_top_k@3"]}}, "my.yaml")
    assert str(err.value) == ("my.yaml: select.arms: probe_top_k@3 ranks by the probe of block 3, which is not in "
                              "sae.probe_layers ([0, 1]); add 3 there")
    assert parse_config(PREDICTOR | {"select": {"arms": ["probe_top_k@1"]}}).select.arms == ["probe_top_k@1"]
    with pytest.raises(UserError, match="unknown arm 'probe_top_k@x'.*probe_top_k@<L>"):
        parse_config(PREDICTOR | {"select": {"arms": ["probe_top_k@x"]}})
    with pytest.raises(UserError, match="needs the `sae` and `predict` sections"):
        parse_config({"select": {"arms": ["probe_top_k@1"]}})


# --- category-stratified top n ---------------------------------------------------------------------------------
def test_quotas_follow_the_pools_shares_and_sum_to_n():
    _, category, *_ = _pool(100)
    assert proportional_quotas(category, 10) == {"a": 6, "b": 3, "c": 1}
    assert proportional_quotas(category, 7) == {"a": 4, "b": 2, "c": 1}  # 4.2, 2.1, 0.7: the largest remainder
    for n in range(1, 101):
        quotas = proportional_quotas(category, n)
        assert sum(quotas.values()) == n and all(quotas[v] <= c for v, c in Counter(category.values()).items())


def test_a_stratified_top_n_takes_the_best_rows_of_each_category_in_the_pools_proportions():
    _, category, _, _, ranking = _pool()
    order = rank_ids(ranking)
    assert Counter(category[e] for e in order[:30]) == {"a": 30}  # the plain top n: one category
    picked, quotas = stratified_top(order, 30, category)
    assert quotas == {"a": 18, "b": 9, "c": 3} and Counter(category[e] for e in picked) == quotas
    for value, quota in quotas.items():  # within each category, exactly its best-ranked rows
        assert [e for e in picked if category[e] == value] == [e for e in order if category[e] == value][:quota]
    assert picked == sorted(picked, key=order.index)  # in rank order


def test_stratified_arms_record_their_quotas_and_the_control_matches_the_categories():
    ids, category, tokens, _, ranking = _pool()
    stratum = strata({e: f"{category[e]}|x" for e in ids}, tokens, 3)
    plan = [PlannedArm("top_k", "top", "attribution", 30), PlannedArm("matched_random_k", "matched_random", "attribution", 30)]
    arms = build_arms(plan, {"attribution": ranking}, ids, stratum, seed=1, groups=category)
    assert arms["top_k"]["matching"] == {"stratified_quotas": {"a": 18, "b": 9, "c": 3}}
    assert Counter(category[e] for e in arms["matched_random_k"]["example_ids"]) == {"a": 18, "b": 9, "c": 3}
    plain = build_arms(plan, {"attribution": ranking}, ids, stratum, seed=1)
    assert "matching" not in plain["top_k"] and Counter(category[e] for e in plain["top_k"]["example_ids"]) == {"a": 30}


def test_stratify_by_is_dumped_like_every_field():  # no shim: stage folders carry a format version instead
    assert yaml.safe_load(dump(SelectConfig()))["stratify_by"] is None
    assert yaml.safe_load(dump(SelectConfig(stratify_by="category")))["stratify_by"] == "category"


# --- the length arm --------------------------------------------------------------------------------------------
def test_the_length_arm_takes_the_longest_eligible_rows_to_the_token_target():
    tokens = {f"r{i}": t for i, t in enumerate([50, 40, 30, 20, 10, 60])}
    ids, done = longest_to_tokens(["r0", "r1", "r2", "r3", "r4"], tokens, {"": 100}, None, 0.02)  # r5 not eligible
    assert ids == ["r0", "r1", "r4"]  # 50 + 40, then 30 and 20 overshoot, 10 lands on 100
    assert done == {"tokens_target": 100, "tokens": 100, "relative_gap": 0.0, "within_tolerance": True,
                    "filled_from_other_values": 0, "eligible": 5}
    short, done = longest_to_tokens(["r3", "r4"], tokens, {"": 100}, None, 0.02)
    assert short == ["r3", "r4"] and done["tokens"] == 30 and done["within_tolerance"] is False  # said, not hidden


def test_the_length_arm_fills_each_categorys_target_then_tops_up_from_the_others():
    tokens = {"a1": 40, "a2": 10, "b1": 25, "b2": 20, "b3": 5}
    groups = {"a1": "a", "a2": "a", "b1": "b", "b2": "b", "b3": "b"}
    ids, done = longest_to_tokens(list(tokens), tokens, {"a": 40, "b": 60}, groups, 0.02)
    assert ids == ["a1", "b1", "b2", "b3", "a2"]  # a meets 40 with a1; b runs 10 short; a2 tops the total up
    assert (done["filled_from_other_values"], done["tokens"], done["within_tolerance"]) == (1, 100, True)


def test_build_arms_length_arm_is_label_filtered_and_matches_top_ks_completion_tokens():
    ids, category, tokens, quality, ranking = _pool()
    stratum = strata(dict.fromkeys(ids, "x"), tokens, 3)
    labelled = {e for e in ids if quality[e] == "good"}
    plan = [PlannedArm("top_k", "top", "attribution", 30), PlannedArm("longest_label_k", "longest_label", "attribution", 30)]
    arms = build_arms(plan, {"attribution": ranking}, ids, stratum, 1, labelled=labelled, completion=tokens)
    chosen, matching = arms["longest_label_k"]["example_ids"], arms["longest_label_k"]["matching"]
    target = sum(tokens[e] for e in arms["top_k"]["example_ids"])
    assert set(chosen) <= labelled and matching["eligible"] == len(labelled) == 225
    assert matching["tokens_target"] == target and matching["tokens"] == sum(tokens[e] for e in chosen)
    assert abs(matching["tokens"] - target) <= 0.02 * target and matching["within_tolerance"]
    assert len(chosen) < 30  # the same budget in fewer, longer rows
    assert min(tokens[e] for e in chosen) >= sorted((tokens[e] for e in labelled), reverse=True)[len(chosen) + 5]
    stratified = build_arms(plan, {"attribution": ranking}, ids, stratum, 1, labelled=labelled, completion=tokens,
                            groups=category)
    by_value = Counter()
    for e in stratified["top_k"]["example_ids"]:
        by_value[category[e]] += tokens[e]
    got = Counter()
    for e in stratified["longest_label_k"]["example_ids"]:
        got[category[e]] += tokens[e]
    matching = stratified["longest_label_k"]["matching"]  # per category targets, as upstream; the total within 2%
    assert matching["filled_from_other_values"] == 0 and all(got[v] <= 1.02 * by_value[v] for v in by_value)
    assert set(got) == set(by_value) and matching["tokens_target"] == sum(by_value.values()) and matching["within_tolerance"]
    with pytest.raises(UserError, match="no row passes the label filter"):
        build_arms(plan, {"attribution": ranking}, ids, stratum, 1, labelled=set(), completion=tokens)


def test_the_length_arm_is_planned_per_size_and_method_and_needs_its_label_column():
    plan = {a.name: a for a in plan_arms(SelectConfig(k=30, arms=["top_k", "matched_random_k", "longest_label_k"],
                                                      label_column="quality"), ["trak"])}
    arm = plan["longest_label_k@trak"]
    assert (arm.kind, arm.ranking, arm.versus) == ("longest_label", "attribution@trak", ("matched_random_k@trak",))
    with pytest.raises(UserError, match="arm longest_label_k needs select.label_column"):
        parse_config({"select": {"arms": ["top_k", "longest_label_k"]}})
