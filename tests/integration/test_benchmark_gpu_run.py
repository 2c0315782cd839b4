"""`benchmarks/gpu_run.sh --tiny`: the one-command GPU run's CPU dry run, every step at tiny sizes (no timing
assertions): gpu_check, real_model against the raw forward+backward, an experiment end to end, the tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_run")
    env = os.environ | {"PYTHON": sys.executable, "GPU_RUN_WORK": str(out / "work")}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_run.sh"), "--tiny", "--out", str(out / "out")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stderr[-3000:] + (out / "out" / "gpu_run.log").read_text()[-3000:]
    return out / "out"


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_every_step_ran_and_wrote_what_benchmarks_md_takes(out):
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.jsonl", "gpu_run.json", "gpu_run.log", "gpu_run.md",
                                                     "real_model.jsonl", "report.md"]
    summary = json.loads((out / "gpu_run.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["gpu_check", "real_model", "experiment"]
    assert all(s["exit"] == 0 for s in summary["steps"]) and summary["tiny"]
    tables = (out / "gpu_run.md").read_text()
    assert "### gpu_check" in tables and "### real_model" in tables and "| raw_fwd_bwd |" in tables
    assert "## Cost" in (out / "report.md").read_text()


def test_real_model_holds_each_stage_against_the_raw_forward_and_backward(out):
    lines = {line["check"]: line for line in _lines(out / "real_model.jsonl")}
    assert set(lines) == {"setup", "raw_fwd_bwd", "raw_forward", "train", "attribute", "evaluate", "done"}
    assert lines["raw_fwd_bwd"]["tokens_per_s"] > 0 and lines["raw_forward"]["ratio"] > 0
    for stage in ("train", "attribute"):
        assert lines[stage]["tokens_per_s"] > 0 and lines[stage]["ratio"] > 0 and lines[stage]["peak_rss_mb"] > 0
    assert lines["train"]["loop_ratio"] > 0 and lines["attribute"]["attribute_vs_train"] > 0
    assert lines["evaluate"]["speed"]["loss_rows_per_s"] > 0 and lines["evaluate"]["peak_rss_mb"] > 0


def test_gpu_check_ran_its_checks(out):
    checks = {line["check"] for line in _lines(out / "gpu_check.jsonl")}
    assert {"train", "attribute", "sae", "evaluate", "done"} <= checks
