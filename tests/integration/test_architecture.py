"""The layer contracts are live: `lint-imports` passes on the package and fails on a copy of it where one
stage imports another (so CI, which runs it, stops when a contract breaks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path, src: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(src)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(cwd / "pyproject.toml"), "--no-cache"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_the_package_keeps_its_contracts():
    done = _lint(REPO, REPO / "src")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "src" / "playpen_attribution", tmp_path / "src" / "playpen_attribution",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path / "src" / "playpen_attribution"


def test_a_stage_importing_another_stage_breaks_the_contract(tmp_path):
    package = _copy(tmp_path)
    data = package / "stages" / "data.py"
    data.write_text(data.read_text() + "\nfrom playpen_attribution.stages import train  # noqa: E402,F401\n")
    done = _lint(tmp_path, tmp_path / "src")
    assert done.returncode != 0
    assert "Stages never import each other" in done.stdout and "BROKEN" in done.stdout
    assert "playpen_attribution.stages.data -> playpen_attribution.stages.train" in done.stdout


def test_a_lower_layer_importing_a_higher_one_breaks_the_contract(tmp_path):
    package = _copy(tmp_path)
    rows = package / "core" / "rows.py"
    rows.write_text(rows.read_text() + "\nfrom playpen_attribution.run import artifacts  # noqa: E402,F401\n")
    done = _lint(tmp_path, tmp_path / "src")
    assert done.returncode != 0 and "Layers run one way" in done.stdout and "BROKEN" in done.stdout
