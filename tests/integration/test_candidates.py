"""The candidates split: new rows the data stage builds from any source (and the synth command's rows),
never a copy of a pool, query or eval row, every removal counted; the select stage draws the predictor
arms and their matched controls from them, ranked by the predictor's candidate scores, every other arm
from the pool."""

from __future__ import annotations

import json

import pytest
from helpers import small_demo_dict

from playpen_attribution.attribution.arms import arm_split, plan_arms
from playpen_attribution.config import parse_config
from playpen_attribution.core.jsonl import write_jsonl
from playpen_attribution.errors import UserError
from playpen_attribution.run import artifacts
from playpen_attribution.sources.duplicates import content_key
from playpen_attribution.stages import data
from playpen_attribution.stages.select import build_selections

SMALL_DEMO = {"kind": "demo", "n_train": 300, "n_query": 20, "n_eval": 30, "n_targets": 30,
              "failure_fraction": 0.2, "mislabeled_fraction": 0.2}
SAE = {"release": "random", "layer": 0, "d_sae": 32}


def _cfg(candidates, **select):
    return parse_config(small_demo_dict(data={"source": SMALL_DEMO, "candidates": candidates},
                                        select={"k": 20, **select}, sae=SAE, predict={"folds": 2}))


def test_candidates_are_new_rows_with_every_removal_counted(tmp_path):
    cfg = _cfg({"source": SMALL_DEMO, "seed": 7})
    data.run(cfg, tmp_path)
    splits = {s: artifacts.load_split(tmp_path / "data", s) for s in ("train_base", "attr_query", "eval", "candidates")}
    fields = artifacts.load_manifest(tmp_path / "data").fields
    cands = splits["candidates"]
    assert fields["rows"]["candidates"] == len(cands) == fields["candidates"]["rows"] > 200
    others = {content_key(r) for s in ("train_base", "attr_query", "eval") for r in splits[s]}
    assert not others & {content_key(r) for r in cands}                      # no copy of another split's row
    assert len({content_key(r) for r in cands}) == len(cands)               # and none twice
    assert not {r["example_id"] for r in cands} & {r["example_id"] for s in ("train_base", "eval") for r in splits[s]}
    dropped = {k: v for k, v in fields["dropped"].items() if k.startswith("candidates:")}
    assert dropped.get("candidates:aborted", 0) > 0                          # the pool's outcomes only
    # 300 generated rows = kept + every removal, each under its reason
    assert len(cands) + sum(dropped.values()) == SMALL_DEMO["n_train"]
    assert {r["outcome"] for r in cands} <= set(cfg.data.pool_outcomes)
    assert fields["candidates"]["seed"] == 7 and fields["candidates"]["source"]["planted"]["mislabeled"]


def test_candidates_from_the_pools_own_generator_and_seed_are_all_removed_and_the_message_says_why(tmp_path):
    cfg = _cfg({"source": SMALL_DEMO, "seed": 42})  # data.seed: the same rows as the pool
    with pytest.raises(UserError, match=r"data.candidates: no candidate row is left .*duplicate_of_train_base"):
        data.run(cfg, tmp_path)


def test_synthetic_candidates_drop_copies_of_pool_rows_and_cap_at_max_rows(tmp_path):
    probe = _cfg({"source": SMALL_DEMO, "seed": 7})
    data.run(probe, tmp_path / "probe")
    pool = artifacts.load_split(tmp_path / "probe" / "data", "train_base")
    fresh = artifacts.load_split(tmp_path / "probe" / "data", "candidates")[:6]
    copy = dict(pool[0]) | {"example_id": "synth-copy"}                       # a pool row under another id
    synthetic = tmp_path / "synth.jsonl"
    write_jsonl(synthetic, [dict(r) | {"example_id": f"synth-{i}"} for i, r in enumerate(fresh)] + [copy])
    cfg = _cfg({"synthetic": {"path": str(synthetic), "allow_eval_word_overlap": True}, "max_rows": 4})
    data.run(cfg, tmp_path / "run")
    cands = artifacts.load_split(tmp_path / "run" / "data", "candidates")
    dropped = artifacts.load_manifest(tmp_path / "run" / "data").fields["dropped"]
    assert len(cands) == 4 and dropped["candidates:duplicate_of_train_base"] == 1 and dropped["candidates:over_max_rows"] == 2
    assert all(r["example_id"].startswith("synth-") and r["example_id"] != "synth-copy" for r in cands)


def test_a_predictor_arm_larger_than_the_candidates_stops_the_data_stage(tmp_path):
    synthetic = tmp_path / "synth.jsonl"
    probe = _cfg({"source": SMALL_DEMO, "seed": 7})
    data.run(probe, tmp_path / "probe")
    write_jsonl(synthetic, artifacts.load_split(tmp_path / "probe" / "data", "candidates")[:10])
    cfg = _cfg({"synthetic": {"path": str(synthetic), "allow_eval_word_overlap": True}},
               arms=["top_k", "matched_random_k", "sae_top_k"])
    with pytest.raises(UserError, match=r"arm 'sae_top_k': select.k = 20 is larger than the candidates \(10 rows\) "
                                        r"\(data.candidates gives 10 candidate rows\)"):
        data.run(cfg, tmp_path / "run")


def test_predictor_split_says_where_each_arm_is_drawn_from():
    cfg = _cfg({"source": SMALL_DEMO, "seed": 7}, arms=["top_k", "matched_random_k", "random_k", "sae_top_k",
                                                         "probe_top_k"])
    split = {a.name: arm_split(cfg.select, a, True) for a in plan_arms(cfg.select)}
    assert split == {"top_k": "train_base", "matched_random_k": "train_base", "random_k": "train_base",
                     "sae_top_k": "candidates", "matched_random_sae_top_k": "candidates",
                     "probe_top_k": "candidates", "matched_random_probe_top_k": "candidates"}
    assert all(arm_split(cfg.select, a, False) == "train_base" for a in plan_arms(cfg.select))
    pool_only = cfg.select.model_copy(update={"predictor_split": "train_base"})
    assert all(arm_split(pool_only, a, True) == "train_base" for a in plan_arms(pool_only))


def _ranking_files(run_dir, pool, cands):
    """Plain ranking files where the select stage reads them: attribution over the pool, the predictor's
    cross-fitted pool predictions and its candidate scores (higher = better)."""
    (run_dir / artifacts.ATTRIBUTE).mkdir(parents=True)
    (run_dir / artifacts.PREDICT).mkdir(parents=True)
    write_jsonl(run_dir / artifacts.ATTRIBUTE / artifacts.SCORES_FILE,
                [{"example_id": r["example_id"], "score": float(i)} for i, r in enumerate(pool)])
    artifacts.write_predicted_scores(run_dir / artifacts.PREDICT, [
        {"example_id": r["example_id"], "predicted": float(-i), "probe": float(i % 7), "fold": 0}
        for i, r in enumerate(pool)])
    artifacts.write_candidate_scores(run_dir / artifacts.PREDICT, [
        {"example_id": r["example_id"], "predicted": float(i), "probe": float(-i)} for i, r in enumerate(cands)])


def test_predictor_arms_and_their_controls_come_from_the_candidates_ranked_by_candidate_scores(tmp_path, tokenizer):
    cfg = _cfg({"source": SMALL_DEMO, "seed": 7}, arms=["top_k", "matched_random_k", "sae_top_k", "probe_top_k"])
    data.run(cfg, tmp_path)
    pool = artifacts.load_split(tmp_path / "data", "train_base")
    cands = artifacts.load_split(tmp_path / "data", "candidates")
    _ranking_files(tmp_path, pool, cands)
    selections, extra = build_selections(cfg, pool, 1, tmp_path, tokenizer, cands)
    pool_ids, cand_ids = {r["example_id"] for r in pool}, [r["example_id"] for r in cands]
    assert selections["sae_top_k"].example_ids == cand_ids[::-1][:20]        # highest candidate score first
    assert selections["probe_top_k"].example_ids == cand_ids[:20]
    for name in ("sae_top_k", "matched_random_sae_top_k", "probe_top_k", "matched_random_probe_top_k"):
        assert set(selections[name].example_ids) <= set(cand_ids) and selections[name].split == "candidates", name
    control, top = selections["matched_random_sae_top_k"], selections["sae_top_k"]
    assert control.strata == top.strata  # drawn from all candidates (the counterfactual), so it may share rows
    for name in ("top_k", "matched_random_k"):
        assert set(selections[name].example_ids) <= pool_ids and selections[name].split == "train_base"
    assert extra["drawn_from_candidates"] == ["sae_top_k", "matched_random_sae_top_k", "probe_top_k",
                                              "matched_random_probe_top_k"]
    # the selection file records the split only where it is not the pool (files from before it unchanged)
    (tmp_path / "sel").mkdir()
    artifacts.write_selections(tmp_path / "sel", selections)
    raw = json.loads((tmp_path / "sel" / artifacts.SELECTIONS_FILE).read_text())
    assert raw["sae_top_k"]["split"] == "candidates" and "split" not in raw["top_k"]
    assert artifacts.load_selections(tmp_path / "sel")["sae_top_k"].split == "candidates"

    pool_cfg = cfg.model_copy(update={"select": cfg.select.model_copy(update={"predictor_split": "train_base"})})
    from_pool, _ = build_selections(pool_cfg, pool, 1, tmp_path, tokenizer, None)
    assert from_pool["sae_top_k"].example_ids == [r["example_id"] for r in pool][:20]  # the cross-fitted predictions
    assert all(s.split == "train_base" for s in from_pool.values())
