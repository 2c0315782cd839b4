"""The real experiment (slow, ~25 min on 2 cores each): Gemma-3-270M on the shared clembench Taboo
records, end to end through the CLI, with the chat template and with raw prompts. What it asserts is
what BENCHMARKS.md reports: every model was generated from, the base adapter learned the answer format
(at least 90% of eval generations hold a parsable guess), and the one-seed report says it cannot
declare a winner. Set PLAYPEN_KEEP_RUNS=<folder> to keep the run folders for reading."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import CLEMBENCH_RECORDS, REPO

from playpen_attribution.cli import main

pytestmark = pytest.mark.slow

MODELS = ["base", "base_adapter", "top_k", "matched_random_k", "random_k"]


@pytest.mark.parametrize("config", ["taboo_clembench_gemma3.yaml", "taboo_clembench_gemma3_raw.yaml"])
def test_gemma_3_270m_on_clembench_records(config, gemma_270m_dir, tmp_path, monkeypatch):
    if not CLEMBENCH_RECORDS.is_dir():
        pytest.skip(f"shared clembench records not found at {CLEMBENCH_RECORDS}")
    monkeypatch.chdir(REPO)  # the config names models/ and ../shared relative to the repository
    keep = os.environ.get("PLAYPEN_KEEP_RUNS")
    run_dir = (Path(keep) if keep else tmp_path) / Path(config).stem
    assert main(["run", f"configs/{config}", "--run-dir", str(run_dir)]) in (0, None)

    report = json.loads((run_dir / "report.json").read_text())
    arms = {a["name"]: a for a in report["arms"]}
    assert sorted(arms) == sorted(MODELS)
    for name in MODELS:
        assert arms[name]["metric"] == "target_correct" and arms[name]["total"] == 42
        assert 0 <= arms[name]["ci_low"] <= arms[name]["accuracy"] <= arms[name]["ci_high"] <= 1
    assert arms["base_adapter"]["no_guess"] / arms["base_adapter"]["total"] <= 0.10
    markdown = (run_dir / "report.md").read_text()
    assert "one seed: training variance not measured" not in markdown  # 3 seeds: the across-seed test runs
