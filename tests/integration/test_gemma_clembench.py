"""The real experiment, shrunken (slow, a few minutes on 2 cores): Gemma-3-270M on one clembench version's
Taboo records, end to end through the CLI, as `configs/taboo_clembench_gemma3.yaml` runs it (guess-turn
rows, raw prompts, top_k against matched_random_k over seeds) and with its chat-template variant. What it
asserts is what BENCHMARKS.md reports of the full run: every model was evaluated on the same rows, the base
adapter learned the answer format (at least 90% of eval generations hold a parsable guess), the across-seed
test ran on the declared primary comparison, and the report carries each stage's cost. Set
PLAYPEN_KEEP_RUNS=<folder> to keep the run folders for reading."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import CLEMBENCH_RECORDS, REPO

from playpen_attribution.cli import main

pytestmark = pytest.mark.slow

MODELS = ["base", "base_adapter", "top_k", "matched_random_k"]
SHRUNKEN = ["--set", f"data.source.path={CLEMBENCH_RECORDS / 'v1.6'}", "--set", "select.k=12",
            "--set", "sweep.seeds=[1,2]", "--set", "arm_train.epochs=2",
            "--set", "train.epochs=3"]  # 36 pool rows: 3 epochs (14 steps; the full run: 37) to learn the format


@pytest.mark.parametrize("config", ["taboo_clembench_gemma3.yaml", "taboo_clembench_gemma3_chat.yaml"])
def test_gemma_3_270m_on_clembench_records(config, gemma_270m_dir, tmp_path, monkeypatch):
    if not (CLEMBENCH_RECORDS / "v1.6").is_dir():
        pytest.skip(f"shared clembench records not found at {CLEMBENCH_RECORDS}")
    monkeypatch.chdir(REPO)  # the config names models/ relative to the repository
    keep = os.environ.get("PLAYPEN_KEEP_RUNS")
    run_dir = (Path(keep) if keep else tmp_path) / Path(config).stem
    assert main(["run", f"configs/{config}", "--run-dir", str(run_dir), *SHRUNKEN]) in (0, None)

    report = json.loads((run_dir / "report.json").read_text())
    arms = {a["name"]: a for a in report["arms"]}
    assert sorted(arms) == sorted(MODELS)
    totals = {arms[name]["total"] for name in MODELS}
    assert len(totals) == 1 and totals.pop() > 0
    for name in MODELS:
        assert arms[name]["metric"] == "target_correct"
        assert 0 <= arms[name]["ci_low"] <= arms[name]["accuracy"] <= arms[name]["ci_high"] <= 1
    assert arms["base_adapter"]["no_guess"] / arms["base_adapter"]["total"] <= 0.10
    primary = report["primary"]
    assert (primary["arm"], primary["versus"], primary["metric"]) == ("top_k", "matched_random_k", "choice_accuracy")
    assert primary["declared"] and primary["test"]["seeds"] == 2
    assert primary["verdict"] != "one_seed"
    assert {"train_base", "attribute"} <= set(report["stage_peak_rss_mb"])
