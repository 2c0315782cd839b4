import pytest
from pydantic import ValidationError

from playpen_attribution.core.jsonl import write_jsonl
from playpen_attribution.core.rows import ROW_COLUMNS
from playpen_attribution.errors import UserError
from playpen_attribution.sources.generic import GenericSource, load_generic


def _pairs(n, prefix="p"):
    return [{"prompt": f"{prefix} prompt {i}", "completion": f"answer {i}", "topic": f"t{i % 7}"} for i in range(n)]


def _chats(n):
    return [
        {
            "messages": [{"role": "user", "content": f"hello {i}"}, {"role": "assistant", "content": f"hi {i}"}],
            "outcome": "failure" if i % 2 else "success",
        }
        for i in range(n)
    ]


def test_one_file_split_by_fractions_per_row(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, _pairs(50))
    cfg = GenericSource(path=path)
    out = load_generic(cfg, seed=4)
    assert [len(out.splits[s]) for s in ("train_base", "attr_query", "eval")] == [30, 10, 10]
    row = out.splits["train_base"][0]
    assert set(ROW_COLUMNS) <= set(row) and row["topic"].startswith("t")
    assert (row["game"], row["game_role"], row["outcome"], row["experiment"]) == (
        "generic",
        "assistant",
        "success",
        "rows",
    )
    assert out.dropped == {}
    assert out.splits == load_generic(cfg, seed=4).splits
    ids = [r["example_id"] for part in out.splits.values() for r in part]
    assert len(ids) == len(set(ids))


def test_group_column_keeps_groups_together(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, _pairs(70))
    out = load_generic(GenericSource(path=path, group_column="topic", query_fraction=0.3, eval_fraction=0.3), seed=1)
    groups = {s: {r["group_id"] for r in out.splits[s]} for s in out.splits}
    assert not groups["attr_query"] & groups["eval"]
    assert not groups["train_base"] & (groups["attr_query"] | groups["eval"])
    assert sum(len(g) for g in groups.values()) == 7


def test_one_file_per_split_in_three_formats(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    write_jsonl(tmp_path / "train.jsonl", _pairs(5, "train"))
    pq.write_table(pa.Table.from_pylist(_chats(4)), tmp_path / "query.parquet")
    Dataset.from_list(_pairs(3, "eval")).save_to_disk(str(tmp_path / "eval_ds"))
    cfg = GenericSource(
        splits={
            "train_base": tmp_path / "train.jsonl",
            "attr_query": tmp_path / "query.parquet",
            "eval": tmp_path / "eval_ds",
        }
    )
    out = load_generic(cfg, seed=0)
    assert [len(out.splits[s]) for s in ("train_base", "attr_query", "eval")] == [5, 4, 3]
    query = out.splits["attr_query"][1]
    assert query["prompt"] == "USER: hello 1\n\nASSISTANT:" and query["completion"] == "hi 1" and query["outcome"] == "failure"
    assert query["prompt_messages"] == [{"role": "user", "content": "hello 1"}]
    assert out.splits["eval"][0]["prompt"] == "eval prompt 0"


def test_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"prompt": "x", "answer": "y"}])
    with pytest.raises(UserError, match=r"rows\.jsonl: missing column 'completion'"):
        load_generic(GenericSource(path=path), seed=0)
    write_jsonl(path, _pairs(3))
    with pytest.raises(UserError, match=r"rows\.jsonl: missing column 'family'"):
        load_generic(GenericSource(path=path, group_column="family"), seed=0)


def test_empty_completion_names_file_and_row(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = _pairs(4)
    rows[2]["completion"] = "   "
    write_jsonl(path, rows)
    with pytest.raises(UserError, match=r"rows\.jsonl line 3: empty completion"):
        load_generic(GenericSource(path=path), seed=0)


def test_bad_outcome_and_unknown_file_type(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"prompt": "a", "completion": "b", "outcome": "won"}])
    with pytest.raises(UserError, match=r"rows.jsonl line 1: outcome 'won'"):
        load_generic(GenericSource(path=path), seed=0)
    (tmp_path / "rows.csv").write_text("prompt,completion\n")
    with pytest.raises(UserError, match="expected a .jsonl or .parquet"):
        load_generic(GenericSource(path=tmp_path / "rows.csv"), seed=0)


def test_config_validation():
    with pytest.raises(ValidationError, match=r"splits\.validation"):
        GenericSource(splits={"train_base": "a", "attr_query": "b", "eval": "c", "validation": "d"})
    with pytest.raises(ValidationError, match="exactly one of"):
        GenericSource()
    with pytest.raises(ValidationError, match="exactly one of"):
        GenericSource(path="a.jsonl", splits={"train_base": "a", "attr_query": "b", "eval": "c"})
    with pytest.raises(ValidationError, match="must be < 1"):
        GenericSource(path="a.jsonl", query_fraction=0.6, eval_fraction=0.5)


def test_ids_are_kept_as_given_and_integer_ids_become_strings(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = _pairs(10)
    for i, row in enumerate(rows):
        row["example_id"] = i if i % 2 else f"id-{i}"
    write_jsonl(path, rows)
    out = load_generic(GenericSource(path=path), seed=0)
    ids = {r["example_id"] for part in out.splits.values() for r in part}
    assert ids == {str(i) if i % 2 else f"id-{i}" for i in range(10)}
    rows[0]["example_id"] = 0  # zero is an id, not a missing one
    write_jsonl(path, rows)
    assert "0" in {r["example_id"] for part in load_generic(GenericSource(path=path), seed=0).splits.values() for r in part}


def test_empty_outcome_is_refused(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = _pairs(3)
    rows[1]["outcome"] = ""
    write_jsonl(path, rows)
    with pytest.raises(UserError, match=r"rows.jsonl line 2: outcome '' is not one of"):
        load_generic(GenericSource(path=path), seed=0)


def test_exact_duplicates_are_left_to_the_data_stage(tmp_path):
    """The source keeps every row it read (the data stage removes exact duplicates for every source, counted
    per split); an id given twice is refused unless the two rows are exact copies."""
    path = tmp_path / "rows.jsonl"
    rows = _pairs(20)
    write_jsonl(path, rows + [dict(r) for r in rows[:5]])
    out = load_generic(GenericSource(path=path), seed=0)
    assert sum(len(part) for part in out.splits.values()) == 25 and out.dropped == {}
    with_ids = [dict(r, example_id=f"id-{i}") for i, r in enumerate(rows)]
    write_jsonl(path, with_ids + with_ids[:2])  # repeated lines, ids included
    assert sum(len(part) for part in load_generic(GenericSource(path=path), seed=0).splits.values()) == 22
    write_jsonl(path, with_ids + [dict(with_ids[3], completion="another answer")])
    with pytest.raises(UserError, match=r"example_id 'id-3' occurs twice with different rows"):
        load_generic(GenericSource(path=path), seed=0)


def test_blank_lines_keep_line_numbers(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "c", "completion": " "}\n')
    with pytest.raises(UserError, match=r"rows.jsonl line 3: empty completion"):
        load_generic(GenericSource(path=path), seed=0)


def test_non_utf8_and_truncated_parquet_are_one_line_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "\xff", "completion": "b"}\n')
    with pytest.raises(UserError, match=r"rows.jsonl:2: not UTF-8"):
        load_generic(GenericSource(path=path), seed=0)
    parquet = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(_pairs(20)), parquet)
    parquet.write_bytes(parquet.read_bytes()[:-30])
    with pytest.raises(UserError, match=r"rows.parquet: not a readable Parquet file"):
        load_generic(GenericSource(path=parquet), seed=0)
