"""Arm planning (`attribution.arms`): standard arms at every k, custom arms, each arm's comparison.
Pure logic on config sections; no model, no files."""

import pytest
import yaml

from playpen_attribution.attribution.arms import SelectConfig, plan_arms
from playpen_attribution.config import parse_config
from playpen_attribution.core.yaml_config import dump
from playpen_attribution.errors import UserError


def _plan(**select):
    return plan_arms(SelectConfig(**select))


def test_plan_names_standard_arms_per_k_and_pairs_each_with_its_matched_random():
    plan = {a.name: a for a in _plan(k=300, extra_k=[500], arms=["top_k", "matched_random_k", "longest_k", "full_pool"])}
    assert list(plan) == ["top_300", "top_500", "matched_random_300", "matched_random_500",
                          "longest_300", "matched_random_longest_300", "longest_500", "matched_random_longest_500",
                          "full_pool"]
    assert plan["top_500"].versus == ("matched_random_500",) and plan["matched_random_300"].versus == ()
    assert plan["top_500"].n == 500 and plan["full_pool"].versus == ("matched_random_300",)
    assert (plan["longest_300"].family, plan["longest_300"].k, plan["longest_300"].ranking) == ("longest_k", 300, "length")


def test_every_ranked_baseline_is_tested_against_a_control_matched_to_itself():
    plan = {a.name: a for a in _plan(k=50, arms=["top_k", "matched_random_k", "highest_loss_k", "embedding_knn_k"])}
    for arm, ranking in (("highest_loss_k", "loss"), ("embedding_knn_k", "embedding")):
        (control,) = plan[arm].versus
        assert control == "matched_random_" + arm
        assert (plan[control].kind, plan[control].ranking, plan[control].n, plan[control].versus) == (
            "matched_random", ranking, 50, ())
    assert plan["top_k"].versus == ("matched_random_k",)  # attribution keeps the shared control


def test_the_seed_control_is_a_second_comparison_of_top_k():
    """matched_random_k is drawn from the whole pool (the counterfactual); matched_random_rest_k, the seed's
    control drawn from what top_k left, is tested against top_k as well, after it."""
    plan = {a.name: a for a in _plan(k=50, arms=["top_k", "matched_random_k", "matched_random_rest_k"])}
    assert plan["top_k"].versus == ("matched_random_k", "matched_random_rest_k")
    assert (plan["matched_random_k"].kind, plan["matched_random_rest_k"].kind) == ("matched_random", "matched_random_rest")
    assert plan["matched_random_rest_k"].versus == ()
    custom = {a.name: a for a in _plan(k=50, arms=["top_k", "matched_random_k", {
        "name": "t2", "kind": "top", "versus": ["top_k", "matched_random_k"]}])}
    assert custom["t2"].versus == ("top_k", "matched_random_k")


def test_the_default_arms_add_a_uniform_random_arm_against_the_matched_one():
    plan = {a.name: a for a in _plan(k=100)}
    assert list(plan) == ["top_k", "matched_random_k", "random_k"]
    assert plan["top_k"].versus == plan["random_k"].versus == ("matched_random_k",)
    assert (plan["random_k"].kind, plan["random_k"].ranking, plan["random_k"].n) == ("random", None, 100)


def test_metadata_arm_names_its_column():
    plan = _plan(k=10, arms=["metadata_k"], metadata_column="reward_model_score")
    assert plan[0].ranking == "metadata:reward_model_score"
    with pytest.raises(UserError, match="metadata_k needs select.metadata_column"):
        parse_config({"select": {"arms": ["metadata_k"]}})


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
    cfg = parse_config({"arm_train": {"seed": 7}, "sweep": {"seeds": [1, 2], "retrain_base": True}})
    assert parse_config(yaml.safe_load(dump(cfg))) == cfg  # experiment.yaml replays
    with pytest.raises(UserError, match="repeats a seed"):
        parse_config({"sweep": {"seeds": [1, 1]}})
    with pytest.raises(UserError, match="unknown field 'select.seed'"):  # random arms draw with each sweep seed
        parse_config({"select": {"seed": 42}})




def test_arm_sizes_are_checked_against_the_pool():
    from playpen_attribution.attribution.arms import SelectConfig, plan_arms, size_problems

    select = SelectConfig(k=300, arms=["top_k", "matched_random_k",
                                       {"name": "w", "kind": "window", "ranks": [10, 400]},
                                       {"name": "b", "kind": "random_beyond", "beyond": 150, "n": 100}])
    assert size_problems(plan_arms(select), 1000) == []
    problems = size_problems(plan_arms(select), 200)
    assert problems[0] == "arm 'top_k': select.k = 300 is larger than the pool (200 rows)"
    assert "arm 'w': ranks 10..400 reach beyond the pool (200 rows)" in problems
    assert "arm 'b': only 50 rows rank beyond 150, fewer than n = 100" in problems


def test_data_efficiency_and_label_arms_are_planned_with_their_sizes_and_comparisons():
    cfg = SelectConfig(k=50, arms=["top_k", "matched_random_k", "random_k", "random_2x_k", "random_4x_k", "label_k"],
                       label_column="quality", match_tokens=True)
    by_name = {a.name: a for a in plan_arms(cfg)}
    assert (by_name["random_2x_k"].n, by_name["random_4x_k"].n, by_name["random_k"].n) == (100, 200, 50)
    assert by_name["random_2x_k"].versus == by_name["random_4x_k"].versus == ("top_k",)
    assert by_name["label_k"].kind == "label" and by_name["label_k"].versus == ("matched_random_k",)
    with pytest.raises(ValueError, match="label_k needs select.label_column"):
        SelectConfig(arms=["top_k", "label_k"])
