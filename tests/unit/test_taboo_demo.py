"""The demo task as a control experiment: what is planted, where its truth is kept, how rows group."""

from collections import Counter

import pytest
from pydantic import ValidationError

from playpen_attribution.taboo.demo import DemoSource, derangement, description_rows, generate_demo, load_lexicon


def _demo(**fields):
    cfg = DemoSource(n_train=600, n_query=60, n_eval=90, n_targets=30, failure_fraction=0.2,
                     mislabeled_fraction=0.25, aborted_fraction=0.05, **fields)
    return generate_demo(cfg, seed=3)


def _clue_words(prompt: str) -> set[str]:
    return {w for line in prompt.splitlines() if line.startswith("CLUE:") for w in line.removeprefix("CLUE:").split()}


def test_planted_rows_are_recorded_and_are_what_they_claim():
    out = _demo()
    pool = {r["example_id"]: r for r in out.splits["train_base"]}
    planted = out.info["planted"]
    assert set(planted) == {"wrong_guess", "mislabeled"} and not set(planted["wrong_guess"]) & set(planted["mislabeled"])
    lexicon = load_lexicon()
    for eid in planted["mislabeled"]:  # won on paper, but the clues describe another word
        row = pool[eid]
        assert row["outcome"] == "success" and row["completion"] == f"GUESS: {row['target_word']}"
        assert not _clue_words(row["prompt"]) <= set(lexicon[row["target_word"]])
    for eid in planted["wrong_guess"]:
        assert pool[eid]["outcome"] == "failure"
    clean = [r for e, r in pool.items() if e not in set(planted["wrong_guess"]) | set(planted["mislabeled"])]
    assert all(_clue_words(r["prompt"]) <= set(lexicon[r["target_word"]]) for r in clean if r["outcome"] == "success")
    shares = Counter("mislabeled" if e in planted["mislabeled"] else "wrong" if e in planted["wrong_guess"] else "other"
                     for e in pool)
    assert 0.18 < shares["mislabeled"] / len(pool) < 0.32 and 0.14 < shares["wrong"] / len(pool) < 0.26


def test_rows_group_by_target_word_and_query_and_eval_cover_the_targets_evenly():
    out = _demo()
    for rows in out.splits.values():
        assert all(r["group_id"] == f"demo::{r['target_word']}" for r in rows)
    for split, n in (("attr_query", 60), ("eval", 90)):
        assert len(out.splits[split]) == n, split
        counts = Counter(r["target_word"] for r in out.splits[split])
        assert len(counts) == 30 and max(counts.values()) - min(counts.values()) <= 1, split
        assert all(r["outcome"] == "success" for r in out.splits[split])


def test_derangement_maps_no_word_to_itself():
    import random

    words = [f"w{i}" for i in range(40)]
    mapping = derangement(words, random.Random(0))
    assert set(mapping) == set(words) == set(mapping.values()) and all(k != v for k, v in mapping.items())


def test_fractions_must_leave_room_for_clean_rows():
    with pytest.raises(ValidationError, match="must be < 1"):
        DemoSource(failure_fraction=0.5, mislabeled_fraction=0.5)


def test_pretraining_rows_use_another_format_than_the_task():
    rows = description_rows(seed=0, per_word=3)
    lexicon = load_lexicon()
    assert len(rows) == 3 * len(lexicon)
    for row in rows:
        words = row["prompt"].removesuffix(" means").split()
        assert set(words) <= set(lexicon[row["completion"]]) and 2 <= len(words) <= 6
        assert "CLUE" not in row["prompt"] and "GUESS" not in row["completion"]
    assert rows == description_rows(seed=0, per_word=3) and rows != description_rows(seed=1, per_word=3)


def test_shipped_lm_eval_task_items_are_the_lexicon_choice_docs():
    import json
    from pathlib import Path

    from playpen_attribution.taboo.demo import lexicon_choice_docs

    shipped = Path(__file__).resolve().parents[2] / "configs" / "lm_eval_tasks" / "lexicon_choice" / "lexicon_choice.jsonl"
    docs = [json.loads(line) for line in shipped.read_text().splitlines()]
    assert docs == lexicon_choice_docs() and len(docs) == len(load_lexicon())
    lexicon = load_lexicon()
    assert all(set(d["clues"].split()) <= set(lexicon[d["choices"][d["label"]]]) and len(set(d["choices"])) == 4
               for d in docs)
