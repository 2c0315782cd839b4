import pytest

from playpen_attribution.core.jsonl import read_jsonl, write_jsonl
from playpen_attribution.errors import UserError


def test_round_trip_keeps_unicode_and_order(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"word": "café", "n": 1}, {"word": "naïve", "list": [1, 2]}]
    write_jsonl(path, rows)
    text = path.read_text(encoding="utf-8")
    assert "café" in text  # ensure_ascii=False
    assert text.count("\n") == 2
    assert read_jsonl(path) == rows


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.jsonl:2: malformed JSON line"):
        read_jsonl(path)


def test_non_object_line_is_rejected(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"list\.jsonl:1: expected a JSON object"):
        read_jsonl(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_jsonl(tmp_path / "absent.jsonl")
