"""Content hashes: sha256 of a file, of a folder tree, of a JSON-able value.

Stage manifests, the query-index cache key and the rank stage's input fingerprint all use these, so
"the same content" means the same thing everywhere.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

_BLOCK = 1 << 20


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_sha256(path: Path | str) -> str:
    """Hex sha256 over every file of a folder (relative names and bytes, sorted); a non-folder is keyed
    by its name (a hub id names its content)."""
    path = Path(path)
    if not path.is_dir():
        return str(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        with file.open("rb") as f:
            for block in iter(lambda: f.read(_BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()


def json_sha256(value: object) -> str:
    """Hex sha256 of a JSON-able value, keys sorted (the same value always gives the same hash)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
