"""`benchmarks/gpu_check.py --tiny`: the GPU speed check's CPU smoke test (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

ROOT = REPO
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"

EXPECTED = [  # (check, start of path): every measurement line the script must print
    ("train", "raw LoRA"),
    ("train", "train stage: trainer loop"),
    ("train", "train stage: end to end"),
    ("attribute", "bare bergson command"),
    ("attribute", "attribute stage"),
    ("attribute", "where its time goes"),
    ("sae", "plain forward pass"),
    ("sae", "sae stage (forward to block"),
    ("sae", "sae stage vs gradient scoring"),
    ("evaluate", "generate one row at a time"),
    ("evaluate", "evaluate stage generation (hf"),
    ("evaluate", "batched vs one-at-a-time"),
    ("evaluate", "vllm backend"),
]


@pytest.fixture(scope="module")
def lines(tmp_path_factory) -> list[dict]:
    work = tmp_path_factory.mktemp("gpu_check")
    done = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--threads", "1", "--workdir", str(work)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def find(lines: list[dict], check: str, path: str) -> dict:
    hits = [x for x in lines if x.get("check") == check and str(x.get("path", "")).startswith(path)]
    assert len(hits) == 1, f"expected one {check} line starting {path!r}, got {hits}"
    return hits[0]


def test_every_measurement_line_is_printed(lines):
    for check, path in EXPECTED:
        find(lines, check, path)
    assert lines[0]["check"] == "setup" and lines[-1]["check"] == "done"


def test_speeds_and_ratios_are_measured(lines):
    for check, path in EXPECTED:
        line = find(lines, check, path)
        for key in ("tokens_per_s", "rows_per_s", "ratio", "speedup", "seconds"):
            if key in line:
                assert line[key] > 0, (check, path, key, line)
    assert "ratio" in find(lines, "train", "train stage: trainer loop")
    assert find(lines, "attribute", "attribute stage")["seconds_ratio"] > 0
    assert find(lines, "sae", "sae stage vs gradient scoring")["speedup"] > 0


def test_batched_generation_matches_one_row_at_a_time(lines):
    line = find(lines, "evaluate", "batched vs one-at-a-time")
    assert line["identical"] == line["rows"]


def test_stages_wrote_their_folders(lines):
    run_dir = Path(lines[-1]["workdir"]) / "run"
    for name in ("data", "train_base", "attribute", "sae", "eval_base_adapter"):
        assert (run_dir / name / "manifest.json").is_file(), name
    assert (Path(lines[-1]["workdir"]) / "bare_bergson" / "scores").is_dir()
