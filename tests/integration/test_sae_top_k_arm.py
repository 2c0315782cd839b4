"""The demo can run with `sae_top_k` and `probe_top_k` as arms: sae -> predict -> select ranks by the
SAE predictor and by the residual-stream probe (both cross-fitted)."""

import json

import pytest
from helpers import small_demo_dict

from playpen_attribution.attribution.selection import rank_ids
from playpen_attribution.config import parse_config
from playpen_attribution.errors import UserError
from playpen_attribution.pipeline import run_experiment
from playpen_attribution.run import artifacts


def _cfg(**select):
    return small_demo_dict(
        data={"source": {"kind": "demo", "n_train": 300, "n_query": 30, "n_eval": 40, "n_targets": 20}},
        select={"k": 60, "arms": ["top_k", "matched_random_k", "sae_top_k", "probe_top_k"], **select},
        sweep={"seeds": [1]},
        sae={"release": "random", "layer": 1, "d_sae": 64, "model": "base_adapter"},
        predict={"cv_folds": 3},
    )


def test_sae_top_k_arm_runs_end_to_end(tmp_path):
    cfg = parse_config(_cfg())
    run_experiment(cfg, tmp_path)
    predicted = artifacts.load_ranking(tmp_path / "predict" / artifacts.PREDICTED_SCORES, "predicted")
    selections = artifacts.load_selections(tmp_path / "seed_1" / "select")
    assert selections["sae_top_k"].example_ids == rank_ids(predicted)[:60]
    probe = artifacts.load_ranking(tmp_path / "predict" / artifacts.PREDICTED_SCORES, "probe")
    assert selections["probe_top_k"].example_ids == rank_ids(probe)[:60]
    assert selections["probe_top_k"].versus == ["matched_random_probe_top_k"]
    assert (tmp_path / "seed_1" / "eval_sae_top_k" / "metrics.json").is_file()
    report = json.loads((tmp_path / "report.json").read_text())
    assert "sae_top_k" in {a["name"] for a in report["arms"]}
    assert list(report["predictor"]["models"]) == ["sae", "sae_topk", "sae_logistic", "length", "residual"]
    assert "candidates_ranked" not in report["predictor"] and not (tmp_path / "predict" / "candidate_scores.jsonl").exists()
    assert not (tmp_path / "sae" / "candidates").exists() and "candidates" not in artifacts.load_manifest(tmp_path / "sae").fields
    markdown = (tmp_path / "report.md").read_text()
    assert "## SAE predictor of attribution" in markdown
    assert "| sae (ranks sae_top_k) |" in markdown and "| residual (mean pooling; ranks probe_top_k) |" in markdown
    assert "sae_logistic: Pearson and R² are not computed for a classifier" in markdown


def test_sae_arm_without_sae_sections_is_refused():
    data = _cfg()
    del data["sae"]
    with pytest.raises(UserError, match="sae_top_k.*needs the `sae` and `predict` sections"):
        parse_config(data)
