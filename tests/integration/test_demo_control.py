"""The shipped demo is a control experiment with a known answer (slow: the full configs/demo.yaml, about
4 minutes on 2 cores, then the A/A config on the same shared stages, about 2 more). `.ci/run` runs the same
controls through benchmarks/controls.py, under PyTorch's `default` kernels too."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import REPO

from playpen_attribution.config import load_config
from playpen_attribution.pipeline import run_experiment
from playpen_attribution.run import artifacts

pytestmark = pytest.mark.slow


def _report(run_dir) -> dict:
    return json.loads((run_dir / artifacts.REPORT_JSON).read_text())


def test_top_k_beats_matched_random_in_every_seed_and_the_a_a_control_finds_nothing(tmp_path):
    demo = tmp_path / "demo"
    run_experiment(load_config(REPO / "configs" / "demo.yaml"), demo)
    resolved = yaml.safe_load((demo / artifacts.EXPERIMENT_FILE).read_text())
    assert resolved["arm_train"]["init"] == "base" and resolved["attribute"]["loss_reduction"] == "mean"
    report = _report(demo)
    assert report["control"] == {"expect": "arm_better", "found": "arm", "passed": True, "seeds_agree": True}
    primary = report["primary"]["test"]
    assert primary["ci_low"] > 0 and primary["p_value"] < 0.05 and "p_holm" not in primary
    assert not [w for w in report["warnings"] if w["kind"] == "not_converged"]  # every arm finished learning
    assert (demo / artifacts.REPORT_MD).read_text().split("## Answer", 1)[1].lstrip().startswith("**Control PASSED**")

    aa = tmp_path / "demo_aa"  # the same shared stages, so the A/A arms differ from the demo's by their draw only
    aa.mkdir()
    for name in (artifacts.DATA, artifacts.BASE_MODEL, artifacts.TRAIN_BASE, artifacts.ATTRIBUTE):
        (aa / name).symlink_to(demo / name, target_is_directory=True)
    run_experiment(load_config(REPO / "configs" / "demo_aa.yaml"), aa)
    same = _report(aa)
    assert same["control"]["passed"] and same["primary"]["verdict"] == "none"
    assert same["primary"]["test"]["ci_low"] < 0 < same["primary"]["test"]["ci_high"]
