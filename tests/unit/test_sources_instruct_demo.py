"""The SmolTalk-shaped demo source: multi-turn chats with varied metadata, planted noise rated lower,
clean held-out query and eval chats, one seed one set of rows, and the shipped lm-eval task's items."""

import json
import re
import statistics
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from playpen_attribution.config import parse_config
from playpen_attribution.core.rows import ROW_COLUMNS
from playpen_attribution.core.tiny_model import train_word_tokenizer
from playpen_attribution.core.tokenization import TokenizeConfig, tokenize_row
from playpen_attribution.errors import UserError
from playpen_attribution.sources.instruct_demo import (
    CATEGORIES,
    GUESSING,
    OFF_TASK,
    QUALITY_LEVELS,
    InstructDemoSource,
    confusion,
    generate_instruct_demo,
    held_out,
    instruct_guess_docs,
)
from playpen_attribution.sources.messages import render_raw_prompt
from playpen_attribution.stages.data import clean_splits, load_source
from playpen_attribution.taboo.demo import corpus_text, load_lexicon

LEXICON = load_lexicon()
TASK_FILE = Path(__file__).resolve().parents[2] / "configs" / "lm_eval_tasks" / "instruct_guess" / "instruct_guess.jsonl"


@pytest.fixture(scope="module")
def source():
    return generate_instruct_demo(InstructDemoSource(n_train=400, n_query=50, n_eval=80), seed=3)


def _messages(row):
    return row["prompt_messages"] + [{"role": "assistant", "content": row["completion"]}]


def _clue_sets(content: str) -> list[str]:
    return [w for line in content.splitlines() if line.startswith("CLUE:") for w in line.removeprefix("CLUE:").split()]


def _guess(content: str) -> str | None:
    return content.removeprefix("GUESS: ") if content.startswith("GUESS: ") else None


def _described(clues: list[str]) -> str | None:
    """The one lexicon word whose describing words hold all these clue words (None when not exactly one)."""
    words = [w for w, d in LEXICON.items() if set(clues) <= set(d)]
    return words[0] if len(words) == 1 else None


def _exchanges(row):
    messages = _messages(row)
    return list(zip((m["content"] for m in messages[::2]), (m["content"] for m in messages[1::2]), strict=False))


def test_rows_are_smoltalk_shaped_multi_turn_chats_with_varied_metadata(source):
    pool = source.splits["train_base"]
    for row in (r for split in source.splits.values() for r in split):
        assert set(ROW_COLUMNS) | {"category", "difficulty", "quality", "reward_model_score", "prompt_messages"} <= set(row)
        messages = _messages(row)
        roles = [m["role"] for m in messages]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and 4 <= len(roles) <= 8  # 1-3 exchanges + final
        assert all(m["content"].strip() for m in messages)
        assert row["prompt"] == render_raw_prompt(row["prompt_messages"]) and row["prompt"].endswith("ASSISTANT:")
        assert row["group_id"] == f"instruct::{row['target_word']}" and row["target_word"] in LEXICON
        assert row["quality"] in QUALITY_LEVELS and isinstance(row["reward_model_score"], float)
    assert Counter(len(r["prompt_messages"]) // 2 for r in pool).keys() == {1, 2, 3}
    assert set(Counter(r["category"] for r in pool)) == set(CATEGORIES)
    assert set(Counter(r["quality"] for r in pool)) == set(QUALITY_LEVELS)
    assert len(Counter(r["difficulty"] for r in pool)) >= 3 and len({r["reward_model_score"] for r in pool}) > 0.9 * len(pool)


def test_planted_noise_is_what_it_claims_and_is_rated_lower(source):
    pool = {r["example_id"]: r for r in source.splits["train_base"]}
    planted = source.info["planted"]
    assert set(planted) == {"wrong_answer", "off_task"} and not set(planted["wrong_answer"]) & set(planted["off_task"])
    noisy = set(planted["wrong_answer"]) | set(planted["off_task"])
    assert noisy <= set(pool) and 0.35 < len(noisy) / len(pool) < 0.55
    for eid in planted["off_task"]:  # every assistant turn chats instead of answering
        assert all(answer in OFF_TASK for _, answer in _exchanges(pool[eid]))
    for eid, row in pool.items():
        if eid in planted["off_task"]:
            continue
        for user, answer in _exchanges(row):
            if row["category"] == "description" and user.startswith("Give clues for "):
                right = set(_clue_sets(answer)) <= set(LEXICON[user.removeprefix("Give clues for ")[:-1]])
            elif _clue_sets(user) and _described(_clue_sets(user)):
                right = _guess(answer) == _described(_clue_sets(user))
            else:
                continue  # the opening exchange, or clues two words share
            assert right == (eid not in noisy), (eid, user, answer)  # wrong in every turn, or right in every turn
    sigma = confusion(sorted(LEXICON))
    assert all(sigma[w] != w for w in LEXICON)
    for eid in planted["wrong_answer"]:  # the confused assistant names sigma(word), the same map in every seed
        row = pool[eid]
        if row["category"] != "description":
            assert row["completion"] == f"GUESS: {sigma[row['target_word']]}"
    for row in pool.values():  # multiple-choice options hold the word and sigma(word)
        if row["category"] == "multiple-choice":
            ask = row["prompt_messages"][-1]["content"].split("\n")[0]
            options = re.split(r", | or ", ask.removeprefix("Which word is it: ").removesuffix("?"))
            assert len(set(options)) == 4 and {row["target_word"], sigma[row["target_word"]]} <= set(options)
    level = {q: i for i, q in enumerate(QUALITY_LEVELS)}
    clean = [r for e, r in pool.items() if e not in noisy]
    bad = [pool[e] for e in noisy]
    assert statistics.mean(level[r["quality"]] for r in clean) > statistics.mean(level[r["quality"]] for r in bad) + 1
    assert statistics.mean(r["reward_model_score"] for r in clean) > statistics.mean(r["reward_model_score"] for r in bad) + 1
    # imperfect on purpose: some noise is rated good, some clean rows are rated poorly
    assert any(r["quality"] in ("good", "excellent") for r in bad) and any(r["quality"] in ("poor", "very poor") for r in clean)


def test_query_and_eval_are_clean_guessing_chats_on_held_out_clue_sets(source):
    final_sets = {}
    for split in ("attr_query", "eval"):
        rows = source.splits[split]
        assert {r["category"] for r in rows} == set(GUESSING)
        for row in rows:
            assert row["completion"] == f"GUESS: {row['target_word']}"
            for user, answer in _exchanges(row):
                if _clue_sets(user):  # right, and on a held-out clue set
                    assert set(_clue_sets(user)) <= set(LEXICON[_guess(answer)])
                    assert held_out(_guess(answer), tuple(_clue_sets(user)))
            final_sets.setdefault(split, set()).add((row["target_word"], frozenset(_clue_sets(_exchanges(row)[-1][0]))))
        counts = Counter(r["target_word"] for r in rows)
        assert max(counts.values()) - min(counts.values()) <= 1
    assert not final_sets["attr_query"] & final_sets["eval"]
    for row in source.splits["train_base"]:  # no pool clue set is a held-out one
        for user, answer in _exchanges(row):
            if row["category"] == "description" and user.startswith("Give clues for "):
                word, clues = _described(_clue_sets(answer)), _clue_sets(answer)
            else:
                word, clues = _described(_clue_sets(user)), _clue_sets(user)
            if clues and word is not None:
                assert not held_out(word, tuple(clues))


def test_each_seed_gives_its_own_rows_and_the_same_seed_the_same_rows():
    cfg = InstructDemoSource(n_train=300, n_query=20, n_eval=20)
    first, again, other = (generate_instruct_demo(cfg, s) for s in (7, 7, 8))
    assert first.splits == again.splits and first.info == again.info
    texts = {(r["prompt"], r["completion"]) for r in first.splits["train_base"]}
    other_texts = {(r["prompt"], r["completion"]) for r in other.splits["train_base"]}
    assert len(texts & other_texts) == 0 and len(other_texts) == 300
    ids = {r["example_id"] for split in first.splits.values() for r in split}
    assert not ids & {r["example_id"] for split in other.splits.values() for r in split}


def test_fractions_are_checked():
    with pytest.raises(ValidationError, match="wrong_fraction \\+ off_task_fraction = 1"):
        InstructDemoSource(wrong_fraction=0.6, off_task_fraction=0.4)
    too_many = InstructDemoSource(n_train=10, n_query=4 * len(LEXICON), n_eval=4 * len(LEXICON))
    with pytest.raises(UserError, match="more questions about .* than it has held-out clue sets; lower n_query or n_eval"):
        generate_instruct_demo(too_many, seed=0)


def test_the_data_stage_reads_the_source_and_the_tiny_tokenizer_covers_every_token(source):
    cfg = parse_config({"data": {"source": {"kind": "instruct_demo", "n_train": 200, "n_query": 20, "n_eval": 30}},
                        "select": {"k": 20}})
    splits, dropped = clean_splits(cfg, load_source(cfg))
    assert {s: len(r) for s, r in splits.items()} == {"train_base": 200, "attr_query": 20, "eval": 30} and not dropped
    rows = [r for split in splits.values() for r in split]
    tokenizer = train_word_tokenizer(corpus_text(rows))
    for row in rows:
        ids = tokenize_row(tokenizer, row, TokenizeConfig(format="chat_template", max_length=10**6, supervise="all_assistant_turns"))["input_ids"]
        assert tokenizer.unk_token_id not in ids
    for doc in instruct_guess_docs():  # the benchmark as the harness renders it: a user turn, then an answer
        text = tokenizer.apply_chat_template([{"role": "user", "content": doc["question"]}], tokenize=False,
                                             add_generation_prompt=True)
        for choice in doc["choices"]:
            assert tokenizer.unk_token_id not in tokenizer(text + " " + choice, add_special_tokens=False)["input_ids"]


def test_shipped_lm_eval_task_items_are_the_instruct_guess_docs():
    docs = [json.loads(line) for line in TASK_FILE.read_text().splitlines() if line]
    assert docs == instruct_guess_docs() and len(docs) == 2 * len(LEXICON)
    for doc in docs:
        word = _guess(doc["choices"][doc["label"]])
        assert held_out(word, tuple(_clue_sets(doc["question"]))) and len(set(doc["choices"])) == 4
        assert f"GUESS: {confusion(sorted(LEXICON))[word]}" in doc["choices"]
    assert len({d["question"] for d in docs}) == len(docs)
