"""Atomic writes: a file or folder appears under its final name only when it is complete.

`write_text` writes `<name>.<pid>.tmp`, flushes it to disk and renames it over `name` (two processes
writing the same file each use their own temporary file; the last rename wins). `building(final)`
yields a fresh `<final>.part` folder to fill and renames it to `final` when the block ends without
an error; with `replace=True` an existing `final` is swapped out only then (the old folder survives
any failure of the block). A `.part` left by an earlier build is emptied first, except the entries
named in `keep` (a resumable build's checkpoints). A failed block leaves the `.part` behind for the
caller to remove or resume. The renames that finish a build run with stop signals held back
(`interruption.deferred`), so Ctrl-C never leaves the old folder moved aside and the new one not yet in
place. Every `.part` / `.tmp` rename in the package goes through here; whoever empties a `.part` must
hold the lock of its build (`core.locking`, taken by `run.stage_folder` and the query-index cache).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playpen_attribution.core.interruption import deferred


def part_path(final: Path) -> Path:
    """The folder a build of `final` is written into."""
    final = Path(final)
    return final.with_name(final.name + ".part")


def write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) in one step: temporary file, fsync, os.replace."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@contextmanager
def building(final: Path, replace: bool = False, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty `<final>.part` folder; it becomes `final` when the block succeeds.

    Without `replace`, `final` must not exist when the block ends. With `replace`, an existing
    `final` is moved aside, the new folder renamed in, and the old one deleted, all after the block.
    """
    final = Path(final)
    part = part_path(final)
    if part.exists() and not keep:
        shutil.rmtree(part)
    elif part.exists():
        for entry in part.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    part.mkdir(parents=True, exist_ok=True)
    yield part
    old = final.with_name(final.name + ".old")
    with deferred():
        if replace and final.exists():
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
        part.rename(final)
    if old.exists():
        shutil.rmtree(old)
