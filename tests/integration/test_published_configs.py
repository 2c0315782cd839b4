"""The configs of the seed's and its authors' experiments (issue 28) run their data and select stages on tiny
local stand-ins for their hub datasets: each shipped config is loaded as is, with `--set` overrides only
for where rows come from and the sizes, so its own filters, splits and arms are what is tested."""

from __future__ import annotations

import json
import random

import pytest
from helpers import REPO

from playpen_attribution.attribution.arms import plan_arms
from playpen_attribution.config import load_config
from playpen_attribution.core.rows import CANDIDATES
from playpen_attribution.run import artifacts
from playpen_attribution.stages import data as data_stage
from playpen_attribution.stages.select import build_selections

WORDS = ["apple", "dog", "sun", "snow", "tree", "red", "fruit", "cold"]
TABOO = ["taboo_wordguesser", "taboo_nearest", "taboo_mean_k300", "taboo_sae", "taboo_half_synthetic"]
SMOLTALK = {"smoltalk_smollm2": {"reasoning", "planning"}, "smoltalk_smollm2_math": {"math", "data-analysis"},
            "smoltalk_smollm2_coding": {"coding"}, "smoltalk_gemma3_pt": {"reasoning", "planning"}}


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _game(i: int, split: str) -> dict:
    word, clue = WORDS[i % len(WORDS)], " ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + i % 5))
    outcome = ("success", "failure", "success", "aborted")[i % 4]
    guess = word if outcome == "success" else WORDS[(i + 3) % len(WORDS)]
    messages = [{"role": "user", "content": f"CLUE: {clue} {split} {i}"}, {"role": "assistant", "content": f"GUESS: {guess}"}]
    meta = {"game": "taboo", "game_role": "WordGuesser", "outcome": outcome, "experiment": f"exp{i % 3}",
            "task_id": str(i // 2), "model": "m"}
    return {"messages": messages, "meta": meta}


@pytest.fixture(scope="module")
def playpen_folder(tmp_path_factory):
    """A playpen-data stand-in: 120 train and 80 validation games (a quarter aborted, a quarter lost)."""
    folder = tmp_path_factory.mktemp("playpen")
    _write_jsonl(folder / "train.jsonl", [_game(i, "train") for i in range(120)])
    _write_jsonl(folder / "validation.jsonl", [_game(i, "val") for i in range(80)])
    return folder


@pytest.fixture(scope="module")
def synthetic_file(tmp_path_factory):
    rows = [{"example_id": f"synth{i}", "prompt": f"USER: CLUE: synthetic clue {i}\n\nASSISTANT:",
             "completion": "GUESS: kettle", "game": "taboo", "game_role": "WordGuesser", "outcome": "success",
             "experiment": "synth", "task_id": str(i), "group_id": f"synth::{i}", "target_word": "kettle"}
            for i in range(20)]
    return _write_jsonl(tmp_path_factory.mktemp("synth") / "rows.jsonl", rows)


def _fake_attribution(run_dir, pool):
    scores = {r["example_id"]: random.Random(r["example_id"]).random() for r in pool}
    order = sorted(scores, key=scores.get, reverse=True)
    (run_dir / artifacts.ATTRIBUTE).mkdir(parents=True, exist_ok=True)
    artifacts.write_scores(run_dir / artifacts.ATTRIBUTE, scores, {e: i + 1 for i, e in enumerate(order)})


def _data_then_select(cfg, run_dir, tokenizer):
    data_dir = data_stage.run(cfg, run_dir)
    pool = artifacts.load_split(data_dir, "train_base")
    _fake_attribution(run_dir, pool)
    candidates = None
    if artifacts.split_path(data_dir, CANDIDATES).is_file():
        candidates = artifacts.load_split(data_dir, CANDIDATES)
        (run_dir / artifacts.PREDICT).mkdir(exist_ok=True)
        artifacts.write_candidate_scores(run_dir / artifacts.PREDICT, [
            {"example_id": r["example_id"], "predicted": i / 7 % 1, "probe": i / 11 % 1} for i, r in enumerate(candidates)])
    selections, _ = build_selections(cfg.for_seed(cfg.seeds[0]), pool, cfg.seeds[0], run_dir, tokenizer, candidates)
    manifest = json.loads((data_dir / artifacts.MANIFEST_FILE).read_text())
    return manifest, pool, selections


@pytest.mark.parametrize("name", TABOO)
def test_taboo_configs_build_their_splits_and_arms(name, playpen_folder, synthetic_file, tokenizer, tmp_path):
    cfg = load_config(REPO / "configs" / f"{name}.yaml",
                      [f"data.source.dataset={playpen_folder}", "select.k=12", f"data.synthetic.path={synthetic_file}"]
                      if name == "taboo_half_synthetic" else [f"data.source.dataset={playpen_folder}", "select.k=12"])
    manifest, pool, selections = _data_then_select(cfg, tmp_path, tokenizer)
    assert manifest["dropped"]["aborted"] == 50  # a quarter of 200 games
    assert set(manifest["outcomes"]["attr_query"]) == {"success", "failure"}  # as upstream: lost games too
    assert manifest["rows"]["validation"] > 0 and manifest["groups_shared"]["eval&validation"] == 0  # keep_best's
    assert set(selections) == {arm.name for arm in plan_arms(cfg.select)}
    assert all(sel.rows == 12 for sel in selections.values())
    top = set(selections["top_k"].example_ids)
    if name == "taboo_mean_k300":  # the seed's control comes from the rows top_k left behind
        assert not top & set(selections["matched_random_rest_k"].example_ids)
    if name == "taboo_half_synthetic":  # half of the 90 kept train games, then the 20 synthetic ones
        assert manifest["dropped"]["pool_fraction"] == 45 and len(pool) == 45 + 20
        assert sum(r["experiment"] == "synth" for r in pool) == 20
    else:
        assert len(pool) == 90 and "pool_fraction" not in manifest["dropped"]


def _chat(i: int, category: str, split: str) -> dict:
    return {"messages": [{"role": "user", "content": f"question {category} {split} {i}"},
                         {"role": "assistant", "content": " ".join(WORDS[: 1 + i % 7])}],
            "category": category, "difficulty": ("easy", "medium", "hard")[i % 3],
            "quality": ("poor", "average", "good", "excellent")[i % 4], "reward_model_score": (i * 7) % 11 / 10}


@pytest.fixture(scope="module")
def smoltalk_folder(tmp_path_factory):
    """A smol-magpie-ultra stand-in: 6 categories, 150 train and 30 test rows each."""
    folder = tmp_path_factory.mktemp("smoltalk")
    categories = ["reasoning", "planning", "math", "data-analysis", "coding", "editing"]
    for split, n in (("train", 150), ("test", 30)):
        _write_jsonl(folder / f"{split}.jsonl", [_chat(i, c, split) for i in range(n) for c in categories])
    return folder


@pytest.mark.parametrize("name", sorted(SMOLTALK))
def test_smoltalk_category_pool_configs_build_their_splits_and_arms(name, smoltalk_folder, gemma_270m_dir, tmp_path):
    from playpen_attribution.core.modeling import load_tokenizer

    sizes = ["data.source.pool_size=40", "data.source.query.size=12", "data.source.eval_size=10",
             "data.candidates.source.pool_size=40", "select.k=8", "select.extra_k=[4]",
             "report.primary.arm=probe_top_8", "report.primary.versus=matched_random_probe_top_8"]
    where = [f"data.source.dataset={smoltalk_folder}", f"data.candidates.source.dataset={smoltalk_folder}",
             f"model.tokenizer={gemma_270m_dir}", "tokenize.chat_template=gemma3"]
    cfg = load_config(REPO / "configs" / f"{name}.yaml", where + sizes)
    tokenizer = load_tokenizer(str(gemma_270m_dir), "gemma3")
    manifest, pool, selections = _data_then_select(cfg, tmp_path, tokenizer)
    kept = SMOLTALK[name]
    other = 6 - len(kept)
    assert manifest["dropped"]["other_category"] == other * 180  # 150 train + 30 test rows per other category
    assert manifest["dropped"]["candidates:other_category"] == other * 180  # the candidates' own scan
    rows = json.loads((tmp_path / artifacts.DATA / artifacts.MANIFEST_FILE).read_text())["rows"]
    assert (rows["train_base"], rows["attr_query"], rows["eval"] + rows["validation"]) == (40, 12, 10)
    assert rows["eval"] and rows["validation"] and rows[CANDIDATES]  # keep_best's slice held out of eval
    assert {r["category"] for r in pool} == kept
    assert set(selections) == {arm.name for arm in plan_arms(cfg.select)}
    assert {n: s.rows for n, s in selections.items() if n.startswith("probe_top")} == {"probe_top_8": 8, "probe_top_4": 4}
    assert selections["probe_top_8"].split == CANDIDATES and selections["top_8"].split == "train_base"
    by_id = {r["example_id"]: r for r in pool}
    assert {by_id[e]["quality"] for e in selections["label_8"].example_ids} <= {"good", "excellent"}
