"""Read and write JSON Lines files: one JSON object per line, UTF-8; and strict JSON text for every file.

A malformed line or a file that is not UTF-8 is a user error that names the file and the 1-based line
number; blank lines are skipped (`numbered_jsonl` keeps each object's line number for later messages).
Everything the package writes as JSON goes through `dumps`: strict JSON, a non-finite number (NaN,
infinity) written as null, never as the bare `NaN` other readers reject.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from playpen_attribution.errors import UserError


def finite(value):
    """`value` with every non-finite float inside it (dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value, **kwargs) -> str:
    """`json.dumps` that writes strict JSON: non-finite numbers as null (`finite`), `allow_nan=False`."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)


def read_jsonl(path: str | Path) -> list[dict]:
    """All objects of a JSONL file, in file order."""
    return [obj for _, obj in numbered_jsonl(path)]


def numbered_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(1-based line number, object) for every non-blank line of a JSONL file, in file order."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a JSONL file")
    if not path.is_file():
        raise UserError(f"{path}: JSONL file not found")
    rows: list[tuple[int, dict]] = []
    try:
        with path.open("rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise UserError(f"{path}:{line_no}: not UTF-8 text ({err.reason} at byte {err.start})") from None
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise UserError(f"{path}:{line_no}: malformed JSON line ({err.msg})") from err
                if not isinstance(obj, dict):
                    raise UserError(f"{path}:{line_no}: expected a JSON object, got {type(obj).__name__}")
                rows.append((line_no, obj))
    except PermissionError:
        raise UserError(f"{path}: permission denied (cannot read it)") from None
    return rows


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Write rows as one JSON object per line (UTF-8, non-ASCII kept as is)."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(dumps(row, ensure_ascii=False) + "\n")
