"""sweep.retrain_base: the base adapter, attribution and selection are redone per seed (slow: two base trainings)."""

import json

import pytest
from helpers import small_demo_dict

from playpen_attribution.config import parse_config
from playpen_attribution.run import artifacts


@pytest.mark.slow
def test_retrain_base_runs_every_base_adapter_stage_per_seed(tmp_path):
    from playpen_attribution.pipeline import run_experiment

    cfg = parse_config(small_demo_dict(
        data={"source": {"kind": "demo", "n_train": 160, "n_query": 12, "n_eval": 16, "n_targets": 12}},
        train={"epochs": 1}, arm_train={"epochs": 1},
        select={"k": 20, "arms": ["top_k", "matched_random_k"]}, sweep={"seeds": [1, 2], "retrain_base": True}))
    run_dir = tmp_path / "run"
    run_experiment(cfg, run_dir)
    assert not (run_dir / "train_base").exists() and not (run_dir / "attribute").exists()
    for seed in (1, 2):
        folder = run_dir / f"seed_{seed}"
        for name in ("train_base", "attribute", "eval_base_adapter", "select", "train_top_k", "eval_matched_random_k"):
            assert (folder / name / "manifest.json").is_file() and not (folder / name).is_symlink()
        assert artifacts.load_stage_config(folder / "train_base")["train"]["seed"] == seed
    report = json.loads((run_dir / "report.json").read_text())
    assert [(a["name"], a["seed"]) for a in report["arms"]] == [("base", None)] + [
        (m, s) for s in (1, 2) for m in ("base_adapter", "top_k", "matched_random_k")]
    assert report["setup"]["retrain_base"] is True and report["aggregate"][0]["seeds"] == [1, 2]
