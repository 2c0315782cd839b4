import json
from collections import Counter

import pytest
from pydantic import ValidationError

from playpen_attribution.core.rows import ROW_COLUMNS
from playpen_attribution.errors import UserError
from playpen_attribution.sources.smoltalk import (
    SmolTalkSource,
    load_smoltalk,
    stratified_sample,
)

CATEGORIES = {"coding": 0.5, "math": 0.25, "creative-writing": 0.15, "advice": 0.10}
DIFFICULTIES = ["easy", "medium", "hard"]


def tiny_tokenizer(chat_template=False):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "<eos>": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<eos>")
    if chat_template:
        fast.chat_template = (
            "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}"
        )
    return fast


def _rows(n, long_every=0):
    rows = []
    names = [c for c, share in CATEGORIES.items() for _ in range(round(share * 20))]
    for i in range(n):
        words = 60 if long_every and i % long_every == 0 else 3
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "You are helpful."},
                    {"role": "user", "content": f"question {i}"},
                    {"role": "assistant", "content": "first answer"},
                    {"role": "user", "content": "and more?"},
                    {"role": "assistant", "content": " ".join(["word"] * words) + f" {i}"},
                ],
                "category": names[i % len(names)],
                "difficulty": DIFFICULTIES[i % 3],
                "quality": "good",
                "reward_model_score": i / 10,
                "conversation_tokens": 10 + i,
            }
        )
    return rows


@pytest.fixture
def local_smoltalk(tmp_path):
    folder = tmp_path / "smoltalk"
    folder.mkdir()
    for split, rows in {"train": _rows(400, long_every=10), "test": _rows(200)}.items():
        with (folder / f"{split}.jsonl").open("w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    return folder


def _cfg(folder, **kw):
    return SmolTalkSource(
        **{"dataset": str(folder), "pool_size": 80, "query_size": 20, "eval_size": 20, "token_cap": 40, **kw}
    )


def test_pool_query_eval_and_token_cap(local_smoltalk):
    out = load_smoltalk(_cfg(local_smoltalk), seed=3, tokenizer=tiny_tokenizer())
    assert out.dropped == {"over_token_cap": 40}
    assert [len(out.splits[s]) for s in ("train_base", "attr_query", "eval")] == [80, 20, 20]
    row = out.splits["train_base"][0]
    assert set(ROW_COLUMNS) <= set(row)
    assert (row["game"], row["game_role"], row["outcome"], row["target_word"]) == (
        "smoltalk",
        "assistant",
        "success",
        None,
    )
    assert {"category", "difficulty", "quality", "reward_model_score", "conversation_tokens"} <= set(row)
    assert row["prompt"].startswith("SYSTEM: You are helpful.\n\nUSER: question")
    assert row["prompt"].endswith("USER: and more?\n\nASSISTANT:")
    assert [m["role"] for m in row["prompt_messages"]] == ["system", "user", "assistant", "user"]
    assert row["prompt_messages"][-1] == {"role": "user", "content": "and more?"}
    assert all(r["source_split"] == "train" for r in out.splits["train_base"])
    assert all(r["source_split"] == "test" for r in out.splits["attr_query"] + out.splits["eval"])
    query_groups = {r["group_id"] for r in out.splits["attr_query"]}
    assert query_groups and not query_groups & {r["group_id"] for r in out.splits["eval"]}
    ids = [r["example_id"] for part in out.splits.values() for r in part]
    assert len(ids) == len(set(ids))


def test_pool_is_stratified_by_category(local_smoltalk):
    out = load_smoltalk(_cfg(local_smoltalk), seed=3, tokenizer=tiny_tokenizer())
    counts = Counter(r["category"] for r in out.splits["train_base"])
    # kept train rows (long ones capped): coding 180, math 80, creative 60, advice 40 of 360
    assert counts == {"coding": 40, "math": 18, "creative-writing": 13, "advice": 9}


def test_same_seed_same_rows(local_smoltalk):
    cfg = _cfg(local_smoltalk, group_by="category::difficulty")
    a = load_smoltalk(cfg, seed=1, tokenizer=tiny_tokenizer())
    assert a.splits == load_smoltalk(cfg, seed=1, tokenizer=tiny_tokenizer()).splits
    assert a.splits != load_smoltalk(cfg, seed=2, tokenizer=tiny_tokenizer()).splits
    assert all(r["group_id"].count("::") == 1 for r in a.splits["eval"])


def test_scan_rows_bounds_the_stream(local_smoltalk):
    out = load_smoltalk(_cfg(local_smoltalk, scan_rows=100, token_cap=None), seed=0)
    assert len(out.splits["train_base"]) == 80
    assert max(int(r["task_id"].split(":")[1]) for r in out.splits["train_base"]) < 100
    assert out.dropped == {}


def test_parquet_files_and_short_supply(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "pq"
    folder.mkdir()
    for split, rows in {"train": _rows(30), "test": _rows(12)}.items():
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{split}.parquet")
    out = load_smoltalk(_cfg(folder, token_cap=None), seed=0)
    assert len(out.splits["train_base"]) == 30
    assert out.info["short"]["train_base"] == {"asked": 80, "got": 30}


def test_tokenizer_required_for_token_cap(local_smoltalk):
    with pytest.raises(UserError, match="token_cap"):
        load_smoltalk(_cfg(local_smoltalk), seed=0)
    # without a cap the tokenizer is not needed, whatever the run's format
    out = load_smoltalk(_cfg(local_smoltalk, token_cap=None), seed=0, tokenize_format="chat_template")
    assert out.dropped == {}


def test_token_cap_follows_the_run_format(local_smoltalk):
    # short rows: raw prompt 13 tokens (ROLE: blocks), templated prompt 10, completion 4 + EOS
    tok = tiny_tokenizer(chat_template=True)
    raw = load_smoltalk(_cfg(local_smoltalk, token_cap=16, scan_rows=30), seed=0, tokenizer=tok)
    assert raw.dropped == {"over_token_cap": 60}
    templated = load_smoltalk(
        _cfg(local_smoltalk, token_cap=16, scan_rows=30), seed=0, tokenizer=tok, tokenize_format="chat_template"
    )
    assert templated.dropped == {"over_token_cap": 3}
    row = templated.splits["train_base"][0]
    assert row["prompt"].startswith("SYSTEM: You are helpful.") and "<|" not in row["prompt"]
    with pytest.raises(UserError, match="no chat template"):
        load_smoltalk(_cfg(local_smoltalk), seed=0, tokenizer=tiny_tokenizer(), tokenize_format="chat_template")


def test_missing_split(local_smoltalk):
    with pytest.raises(UserError, match="no 'validation' split"):
        load_smoltalk(_cfg(local_smoltalk, token_cap=None, query_eval_split="validation"), seed=0)


def test_stratified_sample_keeps_shares():
    rows = [{"category": c} for c, share in CATEGORIES.items() for _ in range(int(share * 1000))]
    picked = stratified_sample(rows, 100, seed=0)
    assert Counter(r["category"] for r in picked) == {"coding": 50, "math": 25, "creative-writing": 15, "advice": 10}


def test_config():
    cfg = SmolTalkSource()
    assert (cfg.pool_size, cfg.query_size, cfg.eval_size, cfg.token_cap) == (8000, 500, 500, 2048)
    with pytest.raises(ValidationError, match="group_by"):
        SmolTalkSource(group_by="quality")


def test_token_lengths_match_tokenize_row():
    from playpen_attribution.core.tokenization import TokenizeConfig, tokenize_row
    from playpen_attribution.sources.smoltalk import token_lengths

    rows = [{"prompt": "a b c", "completion": "d e"}, {"prompt": "a", "completion": "b c d e f"}] * 3
    assert token_lengths(rows, tiny_tokenizer(), "raw") == [6, 7] * 3
    tok = tiny_tokenizer(chat_template=True)
    rows[0]["prompt_messages"] = [{"role": "user", "content": "a b c"}, {"role": "assistant", "content": "x"}]
    lengths = token_lengths(rows, tok, "chat_template")
    assert lengths == [len(tokenize_row(tok, r, TokenizeConfig(format="chat_template", max_length=10**9))["input_ids"]) for r in rows]
    # "<|user|>a", b, c, "<|assistant|>x", "<|assistant|>" + d e + EOS (the kept messages, not the prompt);
    # "<|user|>a", "<|assistant|>" + 5 completion tokens + EOS
    assert lengths[:2] == [8, 8]


@pytest.fixture
def mixed_quality_smoltalk(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    qualities = ["poor", "average", "good", "excellent"]
    for split, n in {"train": 400, "test": 60}.items():
        rows = _rows(n)
        for i, row in enumerate(rows):
            row["quality"] = qualities[i % 4]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_query_builder_never_shares_a_row_with_the_pool(mixed_quality_smoltalk):
    query = {"size": 30, "quotas": {"coding": 12, "math": 10, "advice": 8}}
    out = load_smoltalk(_cfg(mixed_quality_smoltalk, pool_size=300, query=query, token_cap=None), seed=1)
    pool, q = out.splits["train_base"], out.splits["attr_query"]
    assert not {r["example_id"] for r in pool} & {r["example_id"] for r in q}
    assert not {r["task_id"] for r in pool} & {r["task_id"] for r in q}  # the same stream rows, by position too
    assert all(r["source_split"] == "train" and r["quality"] in ("good", "excellent") for r in q)
    assert Counter(r["category"] for r in q) == {"coding": 12, "math": 10, "advice": 8}
    assert all(r["source_split"] == "test" for r in out.splits["eval"]) and len(out.splits["eval"]) == 20
    counts = out.info["query_builder"]
    assert counts["scanned"] == 400 and counts["passed_filters"] == 200 and counts["failed_filters"] == 200
    assert counts["filters"] == {"quality": ["good", "excellent"]} and counts["query_rows"] == 30


def test_query_builder_stratifies_without_quotas_and_counts_a_shortfall(mixed_quality_smoltalk):
    from playpen_attribution.sources.query import QueryBuilder, build_query

    rows = [{"example_id": f"r{i}", "category": ("a", "b")[i % 2], "quality": ("good", "poor")[i % 4 // 2]}
            for i in range(40)]
    q, rest, counts = build_query(rows, QueryBuilder(size=10), 0)
    assert len(q) == 10 and Counter(r["category"] for r in q) == {"a": 5, "b": 5}
    assert len(rest) == 30 and not {r["example_id"] for r in q} & {r["example_id"] for r in rest}
    _, _, counts = build_query(rows, QueryBuilder(size=30, quotas={"a": 15}), 0)
    assert counts["short"] == {"a": {"asked": 15, "got": 10}}
    with pytest.raises(UserError, match=r"query.filters: no scanned row has column\(s\) \['score'\]"):
        build_query(rows, QueryBuilder(filters={"score": ["1"]}), 0)


def test_a_bad_row_is_named_by_its_1_based_row_number(tmp_path):
    folder = tmp_path / "smoltalk"
    folder.mkdir()
    rows = _rows(3)
    rows[1]["messages"] = rows[1]["messages"][:2]  # no assistant turn in the second row
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match=r"train row 2: no assistant message"):
        load_smoltalk(_cfg(folder, token_cap=None, pool_size=1, query_size=1, eval_size=1), seed=0)


def test_categories_keep_only_those_rows_in_every_split_and_count_the_rest(local_smoltalk):
    cfg = _cfg(local_smoltalk, categories=["coding", "math"], token_cap=None, group_by="category::difficulty")
    out = load_smoltalk(cfg, seed=3)
    assert {r["category"] for rows in out.splits.values() for r in rows} == {"coding", "math"}
    assert out.dropped == {"other_category": 100 + 50}  # 25% of 400 train and of 200 test rows are neither
    assert out.splits["attr_query"] and out.splits["eval"]
    assert SmolTalkSource().model_dump()["categories"] is None and cfg.model_dump()["categories"] == ["coding", "math"]
