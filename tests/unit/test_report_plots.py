"""The report's difference plot: the data it draws from report.json's `aggregate` (arm − vs per seed, the
across-seed mean and interval, the primary marked), and that it draws."""

from playpen_attribution.report import plots


def _test(mean, per_seed, verdict="none", low=None, high=None):
    return {"mean": mean, "per_seed": per_seed, "ci_low": low if low is not None else mean - 0.1,
            "ci_high": high if high is not None else mean + 0.1, "verdict": verdict, "status": "tested"}


def _report():
    return {"aggregate": [
        {"arm": "top_k", "versus": "matched_random_k", "seeds": [1, 3],
         "metrics": {"accuracy": _test(0.1, [0.08, 0.12], "arm", 0.05, 0.15),
                     "eval_loss": _test(-0.2, [-0.1, -0.3], "arm")}},
        {"arm": "random_k", "versus": "matched_random_k", "seeds": [1, 3],
         "metrics": {"eval_loss": _test(0.01, [0.0, 0.02])}}],
        "primary": {"arm": "top_k", "versus": "matched_random_k", "metric": "eval_loss"}}


def test_differences_put_the_primary_metric_first_and_keep_one_row_per_comparison():
    panels = plots.seed_differences(_report())
    assert [p["metric"] for p in panels] == ["eval_loss", "accuracy"]  # the primary's metric, then METRICS order
    assert [p["comparisons"] for p in panels] == [["top_k − matched_random_k", "random_k − matched_random_k"]] * 2
    loss = panels[0]["rows"]
    assert [(r["row"], r["primary"]) for r in loss] == [(0, True), (1, False)]
    assert loss[0]["seeds"] == [1, 3] and loss[0]["per_seed"] == [-0.1, -0.3] and loss[0]["verdict"] == "arm"
    accuracy = panels[1]["rows"]  # random_k has no accuracy: its row stays, empty, so the panels line up
    assert [(r["row"], r["primary"], r["ci_low"], r["ci_high"]) for r in accuracy] == [(0, False, 0.05, 0.15)]


def test_differences_without_a_primary_or_comparisons():
    report = _report() | {"primary": None}
    assert not any(r["primary"] for p in plots.seed_differences(report) for r in p["rows"])
    assert [p["metric"] for p in plots.seed_differences(report)] == ["accuracy", "eval_loss"]
    assert plots.seed_differences({"aggregate": [], "primary": None}) == []


def test_difference_plot_is_written(tmp_path):
    plots.plot_seed_differences(_report(), tmp_path / "d.png")
    assert (tmp_path / "d.png").stat().st_size > 1000
