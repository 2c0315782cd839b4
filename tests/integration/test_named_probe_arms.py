"""A probe arm from a chosen layer runs with its own control (issue 28): a shrunken copy of
configs/smoltalk_demo.yaml (tiny model, random SAE on block 1, probe study on blocks 0 and 1, a candidates split)
runs data -> base adapter -> attribute -> sae -> predict -> select with `probe_top_k@0` and the stratified, label-
filtered length arm; no arm is trained."""

from __future__ import annotations

from collections import Counter

import yaml
from helpers import REPO

from playpen_attribution.attribution.selection import stratified_top
from playpen_attribution.config import parse_config
from playpen_attribution.run import artifacts
from playpen_attribution.run.seeds import seed_folder
from playpen_attribution.stages import attribute, base_model, data, predict, sae, select, train

CONFIG = REPO / "configs" / "smoltalk_demo.yaml"


def _shrunken() -> dict:
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["model"]["tiny"] |= {"hidden_size": 64, "intermediate_size": 128, "pretrain_epochs": 1,
                             "pretrain_rows_per_word": 4}
    cfg["data"]["source"] |= {"n_train": 100, "n_query": 12, "n_eval": 16}
    cfg["data"]["candidates"]["source"] |= {"n_train": 80, "n_query": 12, "n_eval": 16}
    cfg["train"]["epochs"] = 1
    cfg["select"] |= {"k": 20, "arms": ["top_k", "matched_random_k", "probe_top_k@0", "longest_label_k"],
                      "stratify_by": "category"}
    cfg["sae"]["d_sae"] = 32
    cfg["predict"]["folds"] = 3
    cfg["sweep"]["seeds"] = [1]
    cfg["report"] = {}
    return cfg


def test_a_probe_arm_of_a_chosen_layer_runs_with_its_own_control(tmp_path):
    cfg = parse_config(_shrunken(), "shrunken smoltalk_demo")
    for stage in (data, base_model, train, attribute, sae, predict):
        stage.run(cfg, tmp_path)
    out = select.run(cfg.for_seed(1), seed_folder(tmp_path, 1, False))
    selections = artifacts.load_selections(out)
    assert list(selections) == ["top_k", "matched_random_k", "probe_top_k@0", "matched_random_probe_top_k@0",
                                "longest_label_k"]
    arm, control = selections["probe_top_k@0"], selections["matched_random_probe_top_k@0"]
    assert (arm.ranking, arm.versus, control.ranking, control.versus) == ("probe@0", ["matched_random_probe_top_k@0"],
                                                                          "probe@0", [])
    # drawn from the candidates (never scored by gradients), ranked by block 0's probe, stratified by category
    candidates = {r["example_id"]: r for r in artifacts.load_split(tmp_path / artifacts.DATA, "candidates")}
    ranking = artifacts.load_ranking(tmp_path / artifacts.PREDICT / artifacts.CANDIDATE_SCORES, "probe@0")
    assert ranking.keys() == candidates.keys() and arm.split == control.split == "candidates"
    order = sorted(ranking, key=lambda e: (-ranking[e], e))
    category = {e: r["category"] for e, r in candidates.items()}
    expected, quotas = stratified_top(order, 20, category)
    assert arm.example_ids == expected and arm.matching == {"stratified_quotas": quotas}
    assert Counter(category[e] for e in control.example_ids) == quotas and set(control.example_ids) <= candidates.keys()
    assert ranking != artifacts.load_ranking(tmp_path / artifacts.PREDICT / artifacts.CANDIDATE_SCORES, "probe")
    # the pool's cross-fitted named probes, the label-filtered length arm matched to top_k's completion tokens
    predicted = artifacts.load_ranking(tmp_path / artifacts.PREDICT / artifacts.PREDICTED_SCORES, "probe@0")
    assert predicted.keys() == {r["example_id"] for r in artifacts.load_split(tmp_path / artifacts.DATA, "train_base")}
    pool = {r["example_id"]: r for r in artifacts.load_split(tmp_path / artifacts.DATA, "train_base")}
    longest, top = selections["longest_label_k"], selections["top_k"]
    assert longest.split == "train_base" and all(pool[e]["quality"] in ("good", "excellent") for e in longest.example_ids)
    assert longest.matching["tokens_target"] == top.completion_tokens
    assert longest.matching["within_tolerance"] and longest.versus == ["matched_random_k"]
    manifest = artifacts.load_manifest(out).fields
    assert manifest["stratify_by"]["column"] == "category" and set(manifest["stratify_by"]) == {
        "column", "train_base", "candidates"}
    assert sum(manifest["stratify_by"]["candidates"].values()) == len(candidates)
    assert manifest["drawn_from_candidates"] == ["probe_top_k@0", "matched_random_probe_top_k@0"]
