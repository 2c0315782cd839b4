"""The demo sweep (3 seeds x top_k, matched_random_k, longest_k, highest_loss_k, embedding_knn_k, each
baseline with its own matched control): baselines, per-seed arms, statistics, the report's tables and
plots, and resuming an interrupted sweep."""

import json
import math
import re
import shutil

import numpy as np
import pytest
import yaml
from helpers import SWEEP_PLAN, SWEEP_SEEDS, small_demo_dict
from scipy.stats import ttest_1samp

from playpen_attribution.attribution.selection import rank_ids
from playpen_attribution.log import logger
from playpen_attribution.report.stats import holm, mcnemar_exact
from playpen_attribution.run import artifacts

VERSUS = {"top_k": "matched_random_k", "longest_k": "matched_random_longest_k",
          "highest_loss_k": "matched_random_highest_loss_k", "embedding_knn_k": "matched_random_embedding_knn_k"}
"""Each tested arm and the control it is judged against: attribution's shared one, or the baseline's own."""
TESTED = list(VERSUS)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _report(run_dir):
    return json.loads((run_dir / "report" / "report.json").read_text())


def _finished(run_dir):
    """relative folder -> manifest 'finished' stamp, for every stage folder (seed links skipped)."""
    out = {}
    for path in list(run_dir.iterdir()) + [p for s in SWEEP_SEEDS for p in (run_dir / f"seed_{s}").iterdir()]:
        if path.is_dir() and not path.is_symlink() and (path / "manifest.json").is_file():
            out[path.relative_to(run_dir).as_posix()] = artifacts.load_manifest(path).fields["finished"]
    return out


def test_report_holds_every_table_and_plot(demo_run):
    _, run_dir = demo_run
    md = (run_dir / "report" / "report.md").read_text()
    for heading in ["## Setup", "## Answer", "## Across seeds", "## Shared models", *[f"## Seed {s}" for s in SWEEP_SEEDS],
                    "## Attribution check", "## Arms", "## Plots", "## Cost"]:
        assert heading in md
    assert "Seeds: 1, 2, 3" in md and "p = " in md
    report = _report(run_dir)
    assert {"accuracy.png", "eval_loss.png"} <= set(report["plots"])
    assert report["plots"][0] == "differences.png"  # the first figure, under the answer, before the tables
    assert md.index("](differences.png)") < md.index("## Across seeds") and md.count("](differences.png)") == 1
    assert not re.search(r"[{\[]'|\bNone\b|\bTrue\b|\bFalse\b", md), "a Python repr in report.md"
    for plot in report["plots"]:
        assert f"]({plot})" in md
        assert (run_dir / "report" / plot).read_bytes()[:8] == PNG_MAGIC
    attribute_plots = {p.name for p in (run_dir / "attribute").glob("*.png")}
    assert attribute_plots <= set(report["plots"])
    assert report["setup"]["seeds"] == SWEEP_SEEDS and report["setup"]["retrain_base"] is False


def test_report_statistics_per_seed_and_across_seeds(demo_run):
    _, run_dir = demo_run
    report = _report(run_dir)
    for arm in report["arms"]:
        assert arm["ci_low"] <= arm["accuracy"] <= arm["ci_high"] and math.isfinite(arm["eval_loss"])
        assert 0 <= arm["choice_accuracy"] <= 1 and arm["choice_total"] + arm["choice_skipped"] == arm["total"]
    assert {(c["arm"], c["seed"]) for c in report["comparisons"]} == {(a, s) for a in TESTED for s in SWEEP_SEEDS}
    for c in report["comparisons"]:
        assert c["versus"] == VERSUS[c["arm"]] and set(c["metrics"]) == {"choice_accuracy", "accuracy", "eval_loss"}
        for t in c["metrics"].values():
            assert 0 <= t["p_value"] <= t["p_holm"] <= 1
        loss = c["metrics"]["eval_loss"]["interval"]
        assert loss["ci_low"] <= loss["mean"] <= loss["ci_high"]
    assert [a["arm"] for a in report["aggregate"]] == TESTED
    for agg in report["aggregate"]:
        assert agg["seeds"] == SWEEP_SEEDS
        for t in agg["metrics"].values():
            assert t["ci_low"] <= t["mean"] <= t["ci_high"] and t["status"] == "tested"
            assert t["seeds_favouring_arm"] + t["seeds_favouring_versus"] + t["seeds_tied"] == len(SWEEP_SEEDS)
            assert t["mean"] == pytest.approx(np.mean(t["per_seed"]))
            assert t["verdict"] in ("arm", "versus", "none", "gated") and t["mde"] > 0
            if t["variance"]["row"] == 0:  # no row effect: the t-test of the per-seed differences
                assert t["p_value"] == pytest.approx(ttest_1samp(t["per_seed"], 0.0).pvalue) and t["df"] == 2
        per_seed = [c["metrics"]["accuracy"]["mcnemar"] for c in report["comparisons"] if c["arm"] == agg["arm"]]
        assert agg["metrics"]["accuracy"]["mcnemar"]["a_only"] == sum(m["a_only"] for m in per_seed)
    # the fixed sequence: the primary test alone, every other across-seed test in one Holm family
    primary = report["primary"]
    assert (primary["arm"], primary["versus"], primary["metric"], primary["declared"]) == (
        "top_k", "matched_random_k", "choice_accuracy", False)
    first = report["aggregate"][0]["metrics"]["choice_accuracy"]
    assert "p_holm" not in first and primary["verdict"] == first["verdict"]
    secondary = [t for a in report["aggregate"] for m, t in a["metrics"].items() if t is not first]
    assert [t["p_holm"] for t in secondary] == pytest.approx(holm([t["p_value"] for t in secondary]))
    per_seed_tests = [t for c in report["comparisons"] for t in c["metrics"].values()]
    assert [t["p_holm"] for t in per_seed_tests] == pytest.approx(holm([t["p_value"] for t in per_seed_tests]))
    mt = report["multiple_testing"]
    assert (mt["secondary_tests"], mt["per_seed_tests"], mt["alpha"]) == (len(secondary), len(per_seed_tests), 0.05)
    assert mt["primary_holds"] == (first["p_value"] < 0.05)


def test_mcnemar_in_the_report_matches_the_predictions(demo_run):
    _, run_dir = demo_run
    seed_dir = run_dir / "seed_2"
    top = {p.example_id: p.correct for p in artifacts.load_predictions(seed_dir / "eval_top_k")}
    rnd = {p.example_id: p.correct for p in artifacts.load_predictions(seed_dir / "eval_matched_random_k")}
    ids = sorted(top)
    expected = mcnemar_exact([top[i] for i in ids], [rnd[i] for i in ids])
    reported = next(c for c in _report(run_dir)["comparisons"] if c["arm"] == "top_k" and c["seed"] == 2)
    assert reported["metrics"]["accuracy"]["mcnemar"] == expected


def test_random_arm_is_redrawn_per_seed_and_ranked_arms_are_not(demo_run):
    _, run_dir = demo_run
    sel = {s: artifacts.load_selections(run_dir / f"seed_{s}" / "select") for s in SWEEP_SEEDS}
    draws = [tuple(sel[s]["matched_random_k"].example_ids) for s in SWEEP_SEEDS]
    assert len(set(draws)) == len(SWEEP_SEEDS)
    for arm in TESTED:
        assert len({tuple(sel[s][arm].example_ids) for s in SWEEP_SEEDS}) == 1
    assert all(sel[s][a].seed == s for s in SWEEP_SEEDS for a in SWEEP_PLAN)


def test_baselines_give_the_loss_length_and_embedding_rankings(demo_run):
    cfg, run_dir = demo_run
    rows = {r["example_id"]: r for r in artifacts.load_split(run_dir / "data", "train_base")}
    baselines = {r["example_id"]: r for r in _jsonl(run_dir / "baselines" / artifacts.ROW_BASELINES_FILE)}
    assert set(baselines) == set(rows)
    assert all(math.isfinite(b["loss"]) and -1 <= b["embedding_cosine"] <= 1 and b["length"] > 0 for b in baselines.values())
    sel = artifacts.load_selections(run_dir / "seed_1" / "select")

    def by(field):
        return rank_ids({e: float(b[field]) for e, b in baselines.items()})[: cfg.select.k]

    assert sel["highest_loss_k"].example_ids == by("loss")
    assert sel["embedding_knn_k"].example_ids == by("embedding_cosine")
    assert sel["longest_k"].example_ids == by("length")  # the same one tokenization gives the lengths


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_evaluation_saves_per_row_losses(demo_run):
    _, run_dir = demo_run
    for folder in [run_dir / "eval_base_adapter", run_dir / "seed_3" / "eval_longest_k"]:
        preds = artifacts.load_predictions(folder)
        metrics = artifacts.load_metrics(folder)
        assert all(math.isfinite(p.loss) and p.correct is not None for p in preds)
        assert metrics.eval_loss == pytest.approx(np.mean([p.loss for p in preds]))


def test_report_regenerates_from_the_stage_folders_alone(demo_run, tmp_path):
    from playpen_attribution.cli import main

    _, run_dir = demo_run
    before = _report(run_dir)
    assert main(["report", "--run-dir", str(run_dir)]) == 0
    after = _report(run_dir)
    assert after["arms"] == before["arms"] and after["aggregate"] == before["aggregate"]


def test_cli_trains_one_arm_of_one_seed_and_needs_the_seed(demo_run, tmp_path):
    from playpen_attribution.cli import main

    _, run_dir = demo_run
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(small_demo_dict(name="small_demo")))
    stamp = artifacts.load_manifest(run_dir / "seed_2" / "train_top_k").fields["finished"]
    assert main(["train", "--config", str(config), "--run-dir", str(run_dir), "--arm", "top_k", "--seed", "2"]) == 0
    assert main(["evaluate", "--config", str(config), "--run-dir", str(run_dir), "--arm", "top_k", "--seed", "2"]) == 0
    assert artifacts.load_manifest(run_dir / "seed_2" / "train_top_k").fields["finished"] == stamp  # reused
    assert main(["train", "--config", str(config), "--run-dir", str(run_dir), "--arm", "top_k"]) == 2
    assert main(["train", "--config", str(config), "--run-dir", str(run_dir), "--arm", "top_k", "--seed", "9"]) == 2


def test_interrupted_sweep_resumes_with_only_the_missing_trainings(demo_run, monkeypatch, caplog):
    from playpen_attribution.pipeline import run_experiment
    from playpen_attribution.stages import train

    cfg, run_dir = demo_run
    missing = ["seed_2/train_longest_k", "seed_3/train_top_k"]
    for name in missing:
        shutil.rmtree(run_dir / name)
        shutil.rmtree(run_dir / name.replace("/train_", "/eval_"))
    before = _finished(run_dir)
    real, calls = train.train_rows, []

    def killed_after_one(rows, *args, **kwargs):
        calls.append(len(rows))
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(rows, *args, **kwargs)

    monkeypatch.setattr(train, "train_rows", killed_after_one)
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("INFO", logger="playpen_attribution"), pytest.raises(RuntimeError, match="killed"):
            run_experiment(cfg, run_dir)
        assert (run_dir / "seed_2" / "train_longest_k" / "manifest.json").is_file()
        assert not (run_dir / "seed_3" / "train_top_k").exists()
        n, at = len(SWEEP_PLAN) * len(SWEEP_SEEDS), 2 * len(SWEEP_PLAN) + 1  # seed 3's top_k comes after two seeds
        assert f"[sweep] top_k, seed 3 ({at}/{n}): training + evaluation; about" in caplog.text  # time left, from the mean
        assert f"[sweep] top_k, seed 1 (1/{n}): finished before, reusing" in caplog.text

        calls.clear()
        monkeypatch.setattr(train, "train_rows", lambda rows, *a, **k: calls.append(len(rows)) or real(rows, *a, **k))
        run_experiment(cfg, run_dir)
    finally:
        logger.removeHandler(caplog.handler)
    assert calls == [cfg.select.k]  # only seed 3's top_k was trained again
    after = _finished(run_dir)
    assert set(after) == set(before) | set(missing) | {n.replace("/train_", "/eval_") for n in missing}
    rebuilt = {name for name, stamp in after.items() if before.get(name) != stamp}
    assert rebuilt == set(missing) | {n.replace("/train_", "/eval_") for n in missing} | {"report"}
    assert not list(run_dir.glob("seed_*/*.part"))


def test_loss_only_evaluation_skips_generation(demo_run):
    """(The report's answer on eval loss alone: tests/unit/test_report_comparisons.py.)"""
    from playpen_attribution.config import parse_config
    from playpen_attribution.core.modeling import load_model, load_tokenizer
    from playpen_attribution.stages.evaluate import evaluate_rows

    _, run_dir = demo_run
    cfg = parse_config(small_demo_dict(evaluate={"generate": False, "choices": None}))
    model_path = run_dir / "base_model" / "model"
    rows = artifacts.load_split(run_dir / "data", "eval")[:6]
    preds, metrics = evaluate_rows(cfg, rows, load_model(model_path), load_tokenizer(model_path), "base")
    assert [set(p) for p in preds] == [{"example_id", "loss"}] * 6
    assert "accuracy" not in metrics and metrics["loss_rows"] == 6 and math.isfinite(metrics["eval_loss"])


def test_accuracy_vs_k_is_drawn_when_an_arm_family_ran_at_several_k(tmp_path):
    from playpen_attribution.stages.report import draw

    arms = [{"name": f"top_{k}", "seed": s, "accuracy": 0.5, "correct": 5, "total": 10, "ci_low": 0.2, "ci_high": 0.8,
             "eval_loss": 1.0, "family": "top_k", "k": k} for k in (100, 200) for s in (1, 2)]
    (tmp_path / "run").mkdir()
    plots = draw({"arms": arms}, tmp_path / "run", tmp_path)
    assert plots == ["accuracy.png", "eval_loss.png", "accuracy_vs_k.png"]
    assert (tmp_path / "accuracy_vs_k.png").read_bytes()[:8] == PNG_MAGIC
