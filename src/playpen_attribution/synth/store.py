"""The files of a synth output folder: append-only JSONL that survives kills, and atomic JSON.

Every record is one line written with a single write, flushed and fsynced under a lock, so after a
crash a file holds whole lines plus at most one cut-off last line. Resuming drops that line
(`repair_jsonl`); readers for other stages (`load_synth_rows`) refuse it with a clear message.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from playpen_attribution.core import atomic
from playpen_attribution.core.jsonl import dumps
from playpen_attribution.core.rows import ROW_COLUMNS
from playpen_attribution.errors import UserError

GAMES_FILE = "games.jsonl"
"""Full game records: transcripts, models, turns, repairs, outcome, usage tokens."""
ROWS_FILE = "rows_wordguesser.jsonl"
"""WordGuesser rows with every column of rows.ROW_COLUMNS, one per game with a valid guess."""
SUMMARY_FILE = "summary.json"
"""Success rate, turns, repairs, aborts and usage, overall and per guesser model."""
CONFIG_FILE = "config.yaml"
"""The resolved synth config of the first run in the folder (resumes must match it)."""
HF_DATASET_DIR = "hf_dataset"
"""The rows as a Hugging Face dataset (`--save-hf-dataset`)."""


class JsonlAppender:
    """Appends JSON objects to a file, one durable line each; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, record: dict) -> None:
        """Write one line and fsync it before returning."""
        line = (dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock, self.path.open("ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def _parse_lines(path: Path, data: bytes) -> list[dict]:
    """Objects of complete lines; a malformed complete line is a UserError naming file and line."""
    return [record for _, record in _numbered_lines(path, data)]


def _numbered_lines(path: Path, data: bytes) -> list[tuple[int, dict]]:
    """(1-based line number, object) of every non-blank complete line (`_parse_lines`)."""
    records = []
    for line_no, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path}:{line_no}: malformed JSON line ({err}); fix or delete it") from err
        if not isinstance(record, dict):
            raise UserError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
        records.append((line_no, record))
    return records


def repair_jsonl(path: Path) -> tuple[list[dict], int]:
    """Read an append-only file for resuming: cut off a partial last line left by a kill (the file
    is truncated to its last newline) and return (records, bytes removed)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    removed = len(data) - end
    if removed:
        with path.open("r+b") as handle:
            handle.truncate(end)
            handle.flush()
            os.fsync(handle.fileno())
    return _parse_lines(path, data[:end]), removed


def write_json_atomic(path: Path, data: dict) -> None:
    """Replace a JSON file in one step (`core.atomic.write_text`: temporary file, fsync, os.replace)."""
    atomic.write_text(path, dumps(data, indent=2, ensure_ascii=False) + "\n")


def load_synth_rows(path: str | Path) -> list[dict]:
    """The WordGuesser rows of a synth output folder (or of its rows_wordguesser.jsonl), checked:
    every row has every column of rows.ROW_COLUMNS. A line cut off by a killed run is an error that
    says to rerun the synth command, which repairs the file."""
    path = Path(path)
    if path.is_dir():
        path = path / ROWS_FILE
    if not path.is_file():
        raise UserError(f"{path}: synth rows file not found")
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        line_no = data.count(b"\n") + 1
        raise UserError(
            f"{path}:{line_no}: last line is cut off (a synth run was stopped while writing); rerun the "
            "same synth command to repair the file"
        )
    numbered = _numbered_lines(path, data)
    for line_no, row in numbered:
        missing = [column for column in ROW_COLUMNS if column not in row]
        if missing:
            raise UserError(f"{path}:{line_no}: row lacks column(s) {', '.join(missing)}")
    return [row for _, row in numbered]
