"""The shipped demo is a control experiment with a known answer (slow: the full configs/demo.yaml, about
4 minutes on 2 cores, then the A/A config on the same shared stages, about 1 more)."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import REPO

from playpen_attribution.config import load_config
from playpen_attribution.pipeline import run_experiment
from playpen_attribution.run import artifacts

pytestmark = pytest.mark.slow


def _aggregate(run_dir, arm: str, versus: str) -> dict:
    report = json.loads((run_dir / artifacts.REPORT_JSON).read_text())
    return next(a for a in report["aggregate"] if (a["arm"], a["versus"]) == (arm, versus))


def test_top_k_beats_matched_random_and_the_a_a_control_finds_nothing(tmp_path):
    demo = tmp_path / "demo"
    run_experiment(load_config(REPO / "configs" / "demo.yaml"), demo)
    resolved = yaml.safe_load((demo / artifacts.EXPERIMENT_FILE).read_text())
    assert resolved["arm_train"]["init"] == "base" and resolved["attribute"]["loss_reduction"] == "mean"
    top = _aggregate(demo, "top_k", "matched_random_k")
    assert top["accuracy_difference"]["ci_low"] > 0 and top["p_holm"] < 0.05
    assert top["seeds_favouring_arm"] == len(top["seeds"]) == 3
    assert "**top_k beats matched_random_k**" in (demo / artifacts.REPORT_MD).read_text()

    aa = tmp_path / "demo_aa"  # the same shared stages, so the A/A arms differ from the demo's by their draw only
    aa.mkdir()
    for name in (artifacts.DATA, artifacts.BASE_MODEL, artifacts.TRAIN_BASE, artifacts.ATTRIBUTE):
        (aa / name).symlink_to(demo / name, target_is_directory=True)
    run_experiment(load_config(REPO / "configs" / "demo_aa.yaml"), aa)
    same = _aggregate(aa, "matched_random_b", "matched_random_k")
    assert same["accuracy_difference"]["ci_low"] < 0 < same["accuracy_difference"]["ci_high"]
    assert "no reliable difference" in (aa / artifacts.REPORT_MD).read_text()
