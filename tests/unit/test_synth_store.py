"""The synth output store: rows files named by file and 1-based line in every message."""

import json

import pytest

from playpen_attribution.core.rows import ROW_COLUMNS
from playpen_attribution.errors import UserError
from playpen_attribution.synth.store import load_synth_rows


def test_a_row_without_columns_is_named_by_its_file_line(tmp_path):
    path = tmp_path / "rows_wordguesser.jsonl"
    good = {column: "x" for column in ROW_COLUMNS}
    bad = {k: v for k, v in good.items() if k != "group_id"}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")  # a blank line keeps the numbering
    with pytest.raises(UserError, match=r"rows_wordguesser\.jsonl:3: row lacks column\(s\) group_id"):
        load_synth_rows(path)
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(good) + "\n")
    assert load_synth_rows(tmp_path) == [good, good]
