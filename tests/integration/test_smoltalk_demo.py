"""The SmolTalk-shaped demo end to end: a shrunken copy of configs/smoltalk_demo.yaml (one seed, few rows, one
epoch) runs every stage on the tiny model, and the report holds lm-eval results for the base model, the base
adapter and every arm, and every arm's token budget."""

from __future__ import annotations

import json

import yaml
from helpers import REPO

from playpen_attribution.attribution.arms import plan_arms
from playpen_attribution.config import parse_config
from playpen_attribution.pipeline import run_experiment
from playpen_attribution.run import artifacts

CONFIG = REPO / "configs" / "smoltalk_demo.yaml"
ARMS = {"top_k", "matched_random_k", "random_k", "random_2x_k", "random_4x_k", "label_k", "metadata_k",
        "matched_random_metadata_k", "probe_top_k", "matched_random_probe_top_k", "sae_top_k",
        "matched_random_sae_top_k", "probe_top_k@0", "matched_random_probe_top_k@0"}
PREDICTOR_ARMS = {"probe_top_k", "matched_random_probe_top_k", "sae_top_k", "matched_random_sae_top_k", "probe_top_k@0",
                  "matched_random_probe_top_k@0"}


def _shrunken() -> dict:
    data = yaml.safe_load(CONFIG.read_text())
    data["model"]["tiny"] |= {"hidden_size": 64, "intermediate_size": 128, "pretrain_epochs": 1,
                              "pretrain_rows_per_word": 4}
    data["data"]["source"] |= {"n_train": 100, "n_query": 12, "n_eval": 16}
    data["data"]["candidates"]["source"] |= {"n_train": 80, "n_query": 12, "n_eval": 16}
    data["train"]["epochs"] = 1
    data["arm_train"]["epochs"] = 1
    data["select"]["k"] = 20
    data["sae"]["d_sae"] = 32
    data["predict"]["folds"] = 3
    data["sweep"]["seeds"] = [1]
    data["evaluate"] |= {"benchmark_limit": 8, "benchmark_include_path": str(REPO / "configs" / "lm_eval_tasks")}
    return data


def test_shipped_config_parses_with_every_arm_and_the_local_task():
    cfg = parse_config(yaml.safe_load(CONFIG.read_text()), str(CONFIG))
    assert {a.name for a in plan_arms(cfg.select)} == ARMS and len(cfg.seeds) == 4
    assert cfg.data.source.kind == "instruct_demo" and cfg.tokenize.format == "chat_template"
    assert cfg.tokenize.supervise == "all_assistant_turns" and cfg.evaluate.benchmarks == ["instruct_guess"]
    assert (REPO / cfg.evaluate.benchmark_include_path / "instruct_guess" / "instruct_guess.yaml").is_file()


def test_shrunken_smoltalk_demo_reports_benchmarks_and_token_budgets_for_every_arm(tmp_path):
    cfg = parse_config(_shrunken(), "shrunken smoltalk_demo")
    run_experiment(cfg, tmp_path)
    report = json.loads((tmp_path / artifacts.REPORT_JSON).read_text())
    results = report["benchmarks"]["results"]
    assert {(r["name"], r["seed"]) for r in results} == {("base", None), ("base_adapter", None)} | {(a, 1) for a in ARMS}
    assert all(r["task"] == "instruct_guess" and r["n"] == 8 and 0 <= r["value"] <= 1 for r in results if r["metric"] == "acc")
    compared = {(c["arm"], c["versus"]) for c in report["benchmarks"]["comparisons"]}
    assert ("top_k", "matched_random_k") in compared and ("random_4x_k", "top_k") in compared
    arms = report["selection"]["1"]
    assert set(arms) == ARMS
    for name, arm in arms.items():  # every arm's token budget, all tokens and the supervised ones
        assert arm["tokens"] > arm["completion_tokens"] > 0, name
        assert arm["rows"] == {"random_2x_k": 40, "random_4x_k": 80}.get(name, 20)
        assert "clean_fraction" in arm and set(arm["planted"]) == {"wrong_answer", "off_task"}
    for name in ("matched_random_k", "label_k"):  # token-matched to top_k (as close as a 100-row pool allows)
        matching = arms[name]["matching"]
        assert matching["tokens_target"] == arms["top_k"]["completion_tokens"]
        assert matching["tokens"] == arms[name]["completion_tokens"] and matching["swaps"] >= 0
    metrics = artifacts.load_metrics(tmp_path / "seed_1" / artifacts.eval_dir("top_k"))
    assert metrics.accuracy is not None and metrics.eval_loss is not None
    assert report["attribution"]["planted"]["planted_in_pool"].keys() == {"wrong_answer", "off_task"}
    assert "instruct_guess" in (tmp_path / artifacts.REPORT_MD).read_text()
    efficiency = report["data_efficiency"]  # one seed here: the arms, no verdict
    assert [(r["arm"], r["rows"]) for r in efficiency["random"]] == [("random_k", 20), ("random_2x_k", 40), ("random_4x_k", 80)]
    assert [r.get("verdict") for r in efficiency["random"]] == [None, "one seed", "one seed"]
    assert efficiency["worth_at_least"] is None and "## Data efficiency" in (tmp_path / artifacts.REPORT_MD).read_text()
    # the predictor arms and their controls come from the candidates (never scored by gradients), the rest from the pool
    candidates = {r["example_id"] for r in artifacts.load_split(tmp_path / artifacts.DATA, "candidates")}
    pool = {r["example_id"] for r in artifacts.load_split(tmp_path / artifacts.DATA, "train_base")}
    selections = artifacts.load_selections(tmp_path / "seed_1" / artifacts.SELECT)
    for name, sel in selections.items():
        from_candidates = name in PREDICTOR_ARMS
        assert sel.split == ("candidates" if from_candidates else "train_base"), name
        assert set(sel.example_ids) <= (candidates if from_candidates else pool), name
    assert report["predictor"]["candidates_ranked"] == len(candidates)
    # the probe study (sae.probe_layers): its table in report.md, its plot beside it
    study = report["probe_study"]
    assert study["layers"] == [0, 1] and len(study["rows"]) == 2 * 3 * 2 + 2 + 1  # layers x poolings x raw/resid, sae, length
    text = (tmp_path / artifacts.REPORT_MD).read_text()
    table = text[text.index("## Probe study"):]
    assert "| layer | pooling | Spearman | R² | Spearman, length-residualised |" in table
    assert "| 1 | first_response_token |" in table and "![probe study](probe_study.png)" in table
    assert (tmp_path / artifacts.REPORT / "probe_study.png").is_file() and (tmp_path / "probe_study.png").is_file()
