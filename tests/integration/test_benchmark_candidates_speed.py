"""`benchmarks/candidates_speed.py --tiny`: the candidate-ranking speed script runs both paths on the same
rows and prints its table (no timing assertions; slow: it builds a shrunken demo run, about a minute)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from helpers import REPO


@pytest.mark.slow
def test_tiny_run_prints_both_paths_and_their_ratio(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "candidates_speed.py"), "--tiny",
                           "--run-dir", str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True,
                          timeout=1200, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout
    assert "40 candidate rows" in out
    predictor = re.search(r"\| predictor: .* \| ([\d.]+) \| ([\d.]+) \| 1\.00 \|", out)
    gradients = re.search(r"\| gradients: .* \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", out)
    assert predictor and gradients, out[-2000:]
    assert all(float(x) > 0 for x in predictor.groups() + gradients.groups())
    assert (tmp_path / "run" / "predict" / "predictor.joblib").is_file()  # --run-dir kept
