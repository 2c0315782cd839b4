"""Unit tests of the attribution diagnostics: stats over id-keyed scores, NaN handling, plots."""

import math

import pytest

from playpen_attribution.attribution import diagnostics as diag


def _pool(n_success=6, n_failure=4):
    outcomes = {f"s{i}": "success" for i in range(n_success)} | {f"f{i}": "failure" for i in range(n_failure)}
    scores = {e: (10.0 - i if e.startswith("s") else float(-i)) for i, e in enumerate(outcomes)}
    return scores, outcomes


def test_non_finite_scores_are_counted_and_ranked_last_never_zeroed():
    scores, outcomes = _pool()
    scores["s0"] = float("nan")
    scores["f0"] = float("inf")
    summary = diag.summarize(scores, outcomes, k=5)
    assert (summary["rows"], summary["finite"], summary["non_finite"]) == (10, 8, 2)
    assert summary["finite_coverage"] == pytest.approx(0.8)
    assert summary["max"] < 10  # the NaN row did not become a 0 or a top score
    rows = diag.row_diagnostics([{"example_id": e, "outcome": o, "group_id": "g"} for e, o in outcomes.items()],
                                scores, {e: 3 for e in scores}, {e: 1.0 for e in scores})
    assert [r["example_id"] for r in rows[-2:]] == ["f0", "s0"] and rows[-1]["score"] is None


def test_precision_composition_and_auroc_on_a_perfect_ranking():
    scores, outcomes = _pool()
    summary = diag.summarize(scores, outcomes, k=6)
    assert summary["precision_success_at_k"] == 1.0 and summary["pool_success_fraction"] == 0.6
    assert summary["auroc_success_vs_failure"] == 1.0
    assert summary["top_k_composition"] == {"6": {"failure": 0, "success": 6}}  # 50/100/200 exceed the pool
    quality = diag.ranking_quality({e: -s for e, s in scores.items()}, outcomes, (2, 4, 50))
    assert quality["precision_at_k"] == {"2": 0.0, "4": 0.0} and quality["auroc"] == 0.0


def test_correlations_use_finite_pairs_and_say_how_many():
    xs = {"a": 1.0, "b": 2.0, "c": 3.0, "d": float("nan"), "e": 5.0}
    ys = {"a": 2.0, "b": 4.0, "c": 6.0, "d": 1.0, "e": 10.0}
    r = diag.correlation(xs, ys)
    assert r["n"] == 4 and r["pearson"] == pytest.approx(1.0) and r["spearman"] == pytest.approx(1.0)
    assert diag.correlation(xs, {e: 1.0 for e in xs}) == {"pearson": None, "spearman": None, "n": 4}


def test_plots_are_written(tmp_path):
    scores, outcomes = _pool()
    scores["s1"] = math.nan
    diag.plot_score_histogram(scores, outcomes, tmp_path / "h.png", "t")  # no planted rows: by outcome, no cut
    diag.plot_score_vs_length(scores, {e: 10 + i for i, e in enumerate(scores)}, outcomes, tmp_path / "s.png", "t")
    assert (tmp_path / "h.png").stat().st_size > 1000 and (tmp_path / "s.png").stat().st_size > 1000


def test_histogram_groups_are_planted_kinds_and_clean_when_the_source_knows_them_else_outcomes():
    scores, outcomes = _pool()
    planted = {"wrong_guess": ["f0", "f1"], "mislabeled": ["s5", "missing_from_pool"]}
    groups = diag.histogram_groups(scores, outcomes, planted)
    assert groups["f0"] == groups["f1"] == "planted: wrong_guess" and groups["s5"] == "planted: mislabeled"
    assert groups["s0"] == groups["f2"] == "clean" and set(groups) == set(scores)
    assert diag.histogram_groups(scores, outcomes, {}) == outcomes


def test_top_k_cut_is_the_k_th_highest_finite_score():
    scores = {"a": 3.0, "b": 1.0, "c": 2.0, "d": math.nan, "e": 0.5}
    assert diag.top_k_cut(scores, 2) == 2.0 and diag.top_k_cut(scores, 4) == 0.5
    assert diag.top_k_cut(scores, 5) is None  # the 5th ranked row is the NaN one: no score to draw
    assert diag.top_k_cut(scores, 50) is None and diag.top_k_cut(scores, 0) is None


def test_histogram_with_planted_groups_and_a_cut_is_written(tmp_path):
    scores, outcomes = _pool()
    groups = diag.histogram_groups(scores, outcomes, {"wrong_guess": ["f0", "f1"]})
    diag.plot_score_histogram(scores, groups, tmp_path / "h.png", "t", k=4)
    assert (tmp_path / "h.png").stat().st_size > 1000
