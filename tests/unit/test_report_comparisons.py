"""Comparisons and verdicts (`report.comparisons`) on synthetic per-row predictions: the fixed sequence (the
primary test alone, the rest Holm-adjusted behind it), the verdicts a few seeds cannot give, a control's
PASSED / FAILED, and how the report's answer reads them."""

from dataclasses import replace

import numpy as np
import pytest

from playpen_attribution.errors import UserError
from playpen_attribution.report import comparisons
from playpen_attribution.report.markdown import _answer_lines
from playpen_attribution.report.records import ArmEntry, Report, SeedComparison, to_json
from playpen_attribution.report.results import warnings
from playpen_attribution.report.training import TrainingSummary
from playpen_attribution.run.artifacts import Prediction

ROWS = 200


def _preds(rng, p_correct: float, loss: float, generate: bool = True) -> dict[str, Prediction]:
    out = {}
    for i in range(ROWS):
        right = bool(rng.random() < p_correct)
        fields = {"correct": right, "target_correct": right, "choice_correct": bool(rng.random() < p_correct),
                  "generated": "GUESS: x"} if generate else {}
        out[f"r{i:03d}"] = Prediction(example_id=f"r{i:03d}", loss=float(loss + rng.normal(0, 0.3)), **fields)
    return out


def _report(arms: dict[str, tuple[float, float]], pairs: list[tuple[str, str]], seeds=(1, 2, 3), generate=True,
            seed_sd=0.0, rng_seed=0) -> Report:
    """arm -> (accuracy, loss) in every seed (plus a per-seed shift of sd `seed_sd`); the comparisons `pairs`."""
    rng = np.random.default_rng(rng_seed)
    preds = {}
    for s in seeds:
        for name, (p, loss) in arms.items():
            shift = rng.normal(0, seed_sd)
            preds[(name, s)] = _preds(rng, min(max(p + shift, 0), 1), loss - shift, generate)
    field = "target_correct"
    return Report(comparisons=[comparisons.per_seed(a, v, s, preds, field) for a, v in pairs for s in seeds],
                  aggregate=[comparisons.across_seeds(a, v, list(seeds), preds, field) for a, v in pairs])


def _decided(report: Report, declared: dict | None = None, expect: str | None = None) -> tuple[Report, dict]:
    """The report with its verdicts (and a control's outcome), and its report.json form."""
    primary, testing = comparisons.decide(report.aggregate, report.comparisons, None, declared)
    report = replace(report, primary=primary, multiple_testing=testing, control=comparisons.control(primary, expect))
    return report, to_json(report)


def test_the_primary_is_tested_alone_and_the_rest_by_holm_behind_it():
    report = _report({"top_k": (0.8, 1.0), "matched_random_k": (0.5, 1.5), "random_k": (0.52, 1.5)},
                     [("top_k", "matched_random_k"), ("random_k", "matched_random_k")])
    report, data = _decided(report)
    primary, first = data["primary"], data["aggregate"][0]["metrics"]["choice_accuracy"]
    assert (primary["arm"], primary["metric"], primary["declared"], primary["verdict"]) == (
        "top_k", "choice_accuracy", False, "arm")
    assert "p_holm" not in first and data["multiple_testing"]["primary_holds"]
    assert data["multiple_testing"]["secondary_tests"] == 5  # top_k's other two metrics, random_k's three
    assert data["aggregate"][1]["metrics"]["accuracy"]["verdict"] == "none"
    assert data["aggregate"][0]["metrics"]["eval_loss"]["verdict"] == "arm"  # lower loss is better
    text = "\n".join(_answer_lines(report))
    assert "Primary comparison (not declared" in text and "**top_k is better than matched_random_k** on choice accuracy" in text
    assert "**top_k has a lower eval loss than matched_random_k**" in text


def test_secondary_verdicts_are_not_claimed_when_the_primary_does_not_hold():
    report = _report({"top_k": (0.5, 1.0), "matched_random_k": (0.5, 1.0), "highest_loss_k": (0.1, 3.0),
                      "matched_random_highest_loss_k": (0.6, 1.0)},
                     [("top_k", "matched_random_k"), ("highest_loss_k", "matched_random_highest_loss_k")])
    report, data = _decided(report, {"arm": "top_k", "versus": "matched_random_k", "metric": "accuracy"})
    assert data["primary"]["verdict"] == "none" and data["primary"]["declared"]
    assert not data["multiple_testing"]["primary_holds"]
    baseline = data["aggregate"][1]["metrics"]["accuracy"]
    assert baseline["p_holm"] < 0.05 and baseline["verdict"] == "gated"
    text = "\n".join(_answer_lines(report))
    assert "not claimed, the primary did not hold" in text and "detects |Δ| ≥" in text


def test_a_declared_primary_must_be_a_comparison_and_metric_of_the_run():
    report = _report({"a": (0.5, 1.0), "b": (0.5, 1.0)}, [("a", "b")], generate=False)
    with pytest.raises(UserError, match="report.primary: a vs c is not a comparison"):
        _decided(report, {"arm": "a", "versus": "c", "metric": "eval_loss"})
    with pytest.raises(UserError, match="report.primary.metric = 'accuracy': a vs b has no values of it"):
        _decided(report, {"arm": "a", "versus": "b", "metric": "accuracy"})


def test_loss_only_runs_answer_on_eval_loss():
    report = _report({"a": (0.5, 1.0), "b": (0.5, 1.4)}, [("a", "b")], generate=False)
    report, data = _decided(report)
    assert data["primary"]["metric"] == "eval_loss" and data["primary"]["verdict"] == "arm"
    assert "**a has a lower eval loss than b**" in "\n".join(_answer_lines(report))


def test_one_seed_and_seeds_that_did_not_vary_give_no_verdict():
    one = _report({"a": (0.9, 1.0), "b": (0.1, 2.0)}, [("a", "b")], seeds=(1,))
    one, data = _decided(one)
    assert data["primary"]["verdict"] == "one_seed" and data["primary"]["test"]["p_value"] is None
    assert "one seed, training variance not measured, no verdict" in "\n".join(_answer_lines(one))
    rng = np.random.default_rng(0)
    same_a, same_b = _preds(rng, 0.9, 1.0), _preds(rng, 0.2, 2.0)
    preds = {(name, s): p for s in (1, 2, 3) for name, p in (("a", same_a), ("b", same_b))}
    frozen = Report(aggregate=[comparisons.across_seeds("a", "b", [1, 2, 3], preds, "target_correct")])
    frozen, data = _decided(frozen)
    assert data["primary"]["verdict"] == "no_replication"
    assert "no replication" in "\n".join(_answer_lines(frozen))


def test_a_control_says_passed_or_failed_and_whether_every_seed_agrees():
    report = _report({"top_k": (0.8, 1.0), "matched_random_k": (0.5, 1.5)}, [("top_k", "matched_random_k")])
    report, data = _decided(report, expect="arm_better")
    assert data["control"] == {"expect": "arm_better", "found": "arm", "passed": True, "seeds_agree": True}
    assert "\n".join(_answer_lines(report)).splitlines()[2].startswith("**Control PASSED**")
    assert not comparisons.control(report.primary, "no_difference").passed
    aa = _report({"top_k": (0.5, 1.0), "matched_random_k": (0.5, 1.0)}, [("top_k", "matched_random_k")])
    aa, data = _decided(aa, expect="no_difference")
    assert data["control"]["passed"] and data["control"]["seeds_agree"] is None
    assert comparisons.control(aa.primary, None) is None


def test_warnings_name_arms_that_did_not_converge_or_wrote_no_guess():
    def arm(name, no_guess, converged, late_drop=None, final_loss=None):
        training = TrainingSummary(steps=10, logged=10, final_loss=final_loss, token_accuracy=None,
                                   late_drop=late_drop, converged=converged)
        return ArmEntry(name=name, seed=1, metric="correct", correct=None, total=100, accuracy=None,
                        no_guess=no_guess, training=training)

    arms = [arm("top_k", 2, True), arm("matched_random_k", 30, False, 0.2, 2.8), arm("longest_k", 60, None)]
    found = to_json(warnings(arms, [SeedComparison("top_k", "matched_random_k", 1, {})]))
    assert found == [{"kind": "not_converged", "model": "matched_random_k", "seed": 1, "late_drop": 0.2, "final_loss": 2.8},
                     {"kind": "no_guess", "model": "matched_random_k", "seed": 1, "share": 0.3}]  # longest_k: not compared
