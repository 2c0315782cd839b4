"""Attribution methods: the config (magic refused in one line, methods headed by method), the per-method arm
plan, the attribute stage's config (a gradient-cosine run's is unchanged), the column reduction, the stage's
peak over its parts and the report's method table."""

from __future__ import annotations

import numpy as np
import pytest

from playpen_attribution.attribution.arms import SelectConfig, plan_arms
from playpen_attribution.attribution.methods import MAGIC_REFUSAL, reduce_columns
from playpen_attribution.config import parse_config
from playpen_attribution.errors import UserError
from playpen_attribution.report.methods import method_lines, relative, spearman, top_k_verdict
from playpen_attribution.run.peak_memory import highest
from playpen_attribution.stages.attribute import attribute_stage_config


def _refusal(attribute: dict) -> str:
    with pytest.raises(UserError) as caught:
        parse_config({"attribute": attribute}, "x.yaml")
    return str(caught.value)


@pytest.mark.parametrize("attribute", [{"method": "magic"}, {"methods": ["magic", "trak"]},
                                       {"methods": ["trak", "magic"]}])
def test_magic_is_refused_in_one_line_naming_the_field_and_why(attribute):
    message = _refusal(attribute)
    assert "\n" not in message and message.count(MAGIC_REFUSAL) == 1
    assert "field 'attribute.method" in message and "cannot follow the LoRA fine-tune" in message


def test_methods_name_the_main_method_first_and_only_once():
    cfg = parse_config({"attribute": {"methods": ["trak", "gradient_cosine"]}})
    assert cfg.attribute.method == "trak"
    assert "main method is methods' first entry" in _refusal({"method": "ekfac", "methods": ["trak", "ekfac"]})
    assert "repeats a method" in _refusal({"methods": ["trak", "trak"]})
    assert "attribute.trak.projection_dim" in _refusal({"trak": {"projection_dim": 0}})


def test_each_method_gets_its_own_top_k_and_control_the_rest_refer_to_the_first():
    plan = {a.name: a for a in plan_arms(SelectConfig(k=5, arms=["top_k", "matched_random_k", "random_k"]),
                                         ["gradient_cosine", "trak"])}
    assert list(plan) == ["top_k@gradient_cosine", "top_k@trak", "matched_random_k@gradient_cosine",
                          "matched_random_k@trak", "random_k"]
    assert plan["top_k@trak"].versus == ("matched_random_k@trak",)
    assert plan["matched_random_k@trak"].ranking == plan["top_k@trak"].ranking == "attribution@trak"
    assert plan["top_k@trak"].family == "top_k@trak"
    assert plan["random_k"].versus == ("matched_random_k@gradient_cosine",)
    assert [a.name for a in plan_arms(SelectConfig(k=5))] == ["top_k", "matched_random_k", "random_k"]


def test_primary_may_name_a_method_arm_and_must_exist():
    arms = {"select": {"k": 5, "arms": ["top_k", "matched_random_k"]}}
    cfg = parse_config(arms | {"attribute": {"methods": ["gradient_cosine", "ekfac"]},
                               "report": {"primary": {"arm": "top_k@ekfac", "versus": "matched_random_k@ekfac",
                                                      "metric": "choice_accuracy"}}})
    assert cfg.report.primary.arm == "top_k@ekfac"
    with pytest.raises(UserError, match="not a comparison the arms make"):
        parse_config(arms | {"attribute": {"methods": ["gradient_cosine", "ekfac"]},
                             "report": {"primary": {"arm": "top_k", "versus": "matched_random_k",
                                                    "metric": "choice_accuracy"}}})


def test_stage_config_carries_the_method_and_only_the_options_of_the_methods_that_run():
    default = attribute_stage_config(parse_config({}).attribute)
    assert default["method"] == "gradient_cosine" and default["methods"] == []
    assert not {"trackstar", "ekfac", "trak", "nproc_per_node", "nnode"} & set(default)
    trak = attribute_stage_config(parse_config({"attribute": {"method": "trak"}}).attribute)
    assert trak["method"] == "trak" and trak["trak"]["projection_dim"] == 16 and "ekfac" not in trak
    several = attribute_stage_config(parse_config({"attribute": {"methods": ["gradient_cosine", "ekfac"]}}).attribute)
    assert several["methods"] == ["gradient_cosine", "ekfac"] and "ekfac" in several and "trak" not in several


def test_reduce_columns_mean_nearest_and_group_mean_max():
    m = np.array([[1.0, 3.0, 5.0], [2.0, np.nan, 0.0]])
    assert reduce_columns(m, "mean")[0] == 3.0 and np.isnan(reduce_columns(m, "individual")[1])
    assert reduce_columns(m[:1], "nearest").tolist() == [5.0]
    assert reduce_columns(m[:1], "group_mean_max", ["a", "a", "b"]).tolist() == [5.0]
    assert reduce_columns(np.array([[4.0, 0.0, 1.0]]), "group_mean_max", ["a", "b", "b"]).tolist() == [4.0]
    with pytest.raises(ValueError):
        reduce_columns(m, "group_mean_max", ["a"])


def test_a_stage_measured_in_parts_reports_its_highest_part():
    out = highest({"peak_rss_mb": 100.0, "peak_rss_scope": "stage"}, [{"peak_rss_mb": 300.0}, {"peak_rss_mb": 200.0}])
    assert out == {"peak_rss_mb": 300.0, "peak_rss_scope": "stage"}
    assert highest({"peak_rss_mb": 50.0}, []) == {"peak_rss_mb": 50.0}


def test_method_table_pieces():
    costs = {"gradient_cosine": {"seconds": 10.0, "peak_rss_mb": 500.0}, "trak": {"seconds": 25.0, "peak_rss_mb": 750.0}}
    assert relative(costs, "seconds") == {"gradient_cosine": 1.0, "trak": 2.5}
    assert relative({"trak": {"seconds": 4.0}, "ekfac": {"seconds": 2.0}}, "seconds") == {"trak": 1.0, "ekfac": 0.5}
    a, b = {"x": 1.0, "y": 2.0, "z": 3.0, "w": float("nan")}, {"x": 3.0, "y": 2.0, "z": 1.0, "w": 0.0}
    assert spearman(a, b) == pytest.approx(-1.0) and spearman({"x": 1.0}, {"x": 1.0}) is None
    aggregate = [{"arm": "top_k@trak", "versus": "matched_random_k@trak",
                  "metrics": {"eval_loss": {"mean": -0.1}, "choice_accuracy": {"mean": 0.2, "ci_low": 0.1,
                                                                              "ci_high": 0.3, "p_value": 0.01,
                                                                              "verdict": "arm"}}}]
    verdict = top_k_verdict(aggregate, "trak")
    assert verdict["metric"] == "choice_accuracy" and verdict["verdict"] == "arm" and verdict["mean"] == 0.2
    assert top_k_verdict(aggregate, "ekfac") is None
    sized = [{**aggregate[0], "arm": "top_300@trak"}, {**aggregate[0], "arm": "top_150@trak", "metrics": {}}]
    assert top_k_verdict(sized, "trak")["mean"] == 0.2  # with extra_k: select.k's arm, the first of its sizes
    assert top_k_verdict([{**aggregate[0], "arm": "probe_top_k@1"}], "1") is None
    table = {"methods": {"trak": {"seconds": 25.0, "peak_rss_mb": 750.0, "relative_seconds": 2.5,
                                  "relative_peak_rss": 1.5, "auroc_planted": 0.9, "top_k": verdict}},
             "spearman": {"gradient_cosine vs trak": 0.5}}
    text = "\n".join(method_lines(table))
    assert "| trak | 25.0 | 2.50 | 750 | 1.50 | 0.900 | +0.200 [+0.100, +0.300] on choice accuracy, p 0.01 | arm |" in text
    assert "gradient_cosine vs trak 0.500" in text and method_lines(None) == []
