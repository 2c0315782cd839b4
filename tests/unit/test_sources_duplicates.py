"""Exact duplicate rows: one rule for every source, within and across splits."""

from playpen_attribution.sources.duplicates import KEEP_ORDER, content_key, drop_duplicate_rows


def _row(eid, prompt="p", completion="GUESS: a", messages=None):
    row = {"example_id": eid, "prompt": prompt, "completion": completion}
    return row if messages is None else row | {"prompt_messages": messages}


def test_within_a_split_the_first_copy_is_kept_and_the_others_counted():
    splits = {"train_base": [_row("a"), _row("b", prompt="q"), _row("c"), _row("d")],
              "attr_query": [_row("q1", prompt="x")], "eval": [_row("e1", prompt="y"), _row("e2", prompt="y")]}
    out, dropped = drop_duplicate_rows(splits)
    assert [r["example_id"] for r in out["train_base"]] == ["a", "b"]
    assert [r["example_id"] for r in out["eval"]] == ["e1"]
    assert dropped == {"train_base:duplicate": 2, "eval:duplicate": 1}
    assert list(out) == list(splits)  # the splits keep their order


def test_across_splits_the_eval_copy_then_the_query_copy_is_kept():
    assert KEEP_ORDER == ("eval", "attr_query", "train_base")
    leak = _row("pool-1", prompt="leak")
    splits = {"train_base": [leak, _row("pool-2", prompt="q"), _row("pool-3")],
              "attr_query": [_row("query-1", prompt="leak"), _row("query-2", prompt="q")],
              "eval": [_row("eval-1", prompt="leak")]}
    out, dropped = drop_duplicate_rows(splits)
    assert [r["example_id"] for r in out["eval"]] == ["eval-1"]  # never dropped in favour of another split
    assert [r["example_id"] for r in out["attr_query"]] == ["query-2"]
    assert [r["example_id"] for r in out["train_base"]] == ["pool-3"]
    assert dropped == {"attr_query:duplicate_of_eval": 1, "train_base:duplicate_of_eval": 1,
                       "train_base:duplicate_of_attr_query": 1}
    assert sum(len(v) for v in splits.values()) - sum(len(v) for v in out.values()) == sum(dropped.values())


def test_what_the_tokenizer_reads_decides_equality():
    turns = [{"role": "user", "content": "CLUE: red"}]
    assert content_key(_row("a", messages=[])) == content_key(_row("b"))  # no messages = empty messages
    assert content_key(_row("a", messages=turns)) != content_key(_row("b"))
    assert content_key(_row("a", messages=turns)) == content_key(_row("b", messages=[dict(reversed(turns[0].items()))]))
    assert content_key(_row("a")) != content_key(_row("a", completion="GUESS: b"))
    assert content_key(_row("a") | {"outcome": "failure"}) == content_key(_row("b") | {"outcome": "success"})


def test_a_split_outside_the_keep_order_ranks_last():
    splits = {"candidates": [_row("c1"), _row("c2", prompt="new")], "train_base": [_row("t1")],
              "attr_query": [_row("q1", prompt="x")], "eval": [_row("e1", prompt="y")]}
    out, dropped = drop_duplicate_rows(splits)
    assert [r["example_id"] for r in out["candidates"]] == ["c2"] and dropped == {"candidates:duplicate_of_train_base": 1}
