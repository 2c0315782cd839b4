"""Read and write JSON Lines files: one JSON object per line, UTF-8.

A malformed line is a user error that names the file and the line number; blank lines are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from playpen_attribution.errors import UserError


def read_jsonl(path: str | Path) -> list[dict]:
    """All objects of a JSONL file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: JSONL file not found")
    rows: list[dict] = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{line_no}: malformed JSON line ({err.msg})") from err
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{line_no}: expected a JSON object, got {type(obj).__name__}")
            rows.append(obj)
    return rows


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Write rows as one JSON object per line (UTF-8, non-ASCII kept as is)."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
