"""An exclusive lock per folder being built, shared by every process that builds there.

`locked(lock_file, what)` holds an advisory `flock` on `lock_file` for the block. A second process that
wants the same lock waits, after one log line naming the holder (pid, host, start time and command,
which the holder writes into the lock file); the kernel releases the lock of a process that dies, so the
lock of a killed build is taken over by the next one (said so, with the dead holder's record). The lock
file itself stays (removing a lock file another process may be opening would let two of them hold "the"
lock at once). On a file system without locks (some cluster mounts), it warns once and builds unlocked.
Locks do not nest within a process (the same lock twice would wait for itself): that is refused as a bug.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from playpen_attribution.log import logger

LOCK_DIR = ".locks"
"""Lock files live in this folder beside what they guard (`lock_path`)."""
_HELD: set[str] = set()
"""Lock files this process holds now."""
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)
_warned_unlocked = False


def lock_path(folder: Path) -> Path:
    """The lock file guarding the build of `folder`: `<parent>/.locks/<name>.lock`."""
    folder = Path(folder)
    return folder.parent / LOCK_DIR / f"{folder.name}.lock"


def holder_record() -> dict:
    """What a holder writes into its lock file: pid, host, start time, command line."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv[:6])}


def describe(record: dict | None) -> str:
    """A holder record in words: 'pid 123 on host h since 2025-01-01T10:00:00+00:00 (command ...)'."""
    if not record:
        return "another process (it left no record)"
    return (f"pid {record.get('pid')} on host {record.get('host')} since {record.get('since')}"
            + (f" ({record['command']})" if record.get("command") else ""))


def _read(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        record = json.loads(raw) if raw.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _write(fd: int, record: dict | None) -> None:
    os.ftruncate(fd, 0)
    if record is not None:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())


def _flock(fd: int, blocking: bool) -> bool:
    """True when the lock is ours; False when another process holds it (only without `blocking`)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _acquire(fd: int, lock_file: Path, what: str) -> bool:
    """Take the lock, waiting for a live holder; False when the file system has no locks (warned once)."""
    global _warned_unlocked
    try:
        if not _flock(fd, blocking=False):
            logger.info("%s: waiting for %s, which is being built by %s", lock_file, what, describe(_read(fd)))
            _flock(fd, blocking=True)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
        if not _warned_unlocked:
            logger.warning("%s: this file system does not support locks (%s); building without them, so do "
                           "not run two builds in one run folder at once", lock_file, exc.strerror)
            _warned_unlocked = True
        return False
    return True


@contextmanager
def locked(lock_file: Path, what: str) -> Iterator[None]:
    """Hold the lock `lock_file` (created, with its folder) while the block runs; `what` names the thing
    being built in the waiting and take-over lines."""
    lock_file = Path(lock_file)
    key = str(lock_file.resolve())
    if key in _HELD:
        raise RuntimeError(f"{lock_file} is already held by this process (nested build of {what})")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        have = _acquire(fd, lock_file, what)
        if have:
            left = _read(fd)
            if left is not None:
                logger.warning("%s: took over the lock of %s, which ended without releasing it (killed?)",
                               lock_file, describe(left))
            _write(fd, holder_record())
            _HELD.add(key)
        try:
            yield
        finally:
            if have:
                _HELD.discard(key)
                _write(fd, None)
    finally:
        os.close(fd)  # releases the flock
