"""The per-folder lock with real processes: a second one waits and names the holder, the lock of a killed
process is taken over, and a lock never nests within one process. Processes meet through files; nothing
here measures time (the deadlines only keep a broken lock from hanging the suite)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from playpen_attribution.core.locking import lock_path, locked

HOLD = """
import pathlib, sys, time
from playpen_attribution.core.locking import locked
from playpen_attribution.log import setup_logging
setup_logging()
lock, ready, release = map(pathlib.Path, sys.argv[1:4])
with locked(lock, "the test folder"):
    ready.write_text("held")
    while not release.exists():
        time.sleep(0.02)
"""


def _start(tmp_path: Path, name: str, lock: Path) -> tuple[subprocess.Popen, Path, Path, Path]:
    ready, release, log = tmp_path / f"{name}.ready", tmp_path / f"{name}.release", tmp_path / f"{name}.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(ready), str(release)], stderr=err)
    return proc, ready, release, log


def _until(condition, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert proc.poll() is None or condition(), f"process ended before {what}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.02)


@pytest.mark.integration  # starts child processes (seconds each)
def test_a_second_process_waits_naming_the_holder_then_gets_the_lock(tmp_path):
    lock = lock_path(tmp_path / "stage")
    a, a_ready, a_release, _ = _start(tmp_path, "a", lock)
    b = None
    try:
        _until(a_ready.exists, a, "a holding the lock")
        assert json.loads(lock.read_text())["pid"] == a.pid  # the holder's record: pid, host, since, command
        b, b_ready, b_release, b_log = _start(tmp_path, "b", lock)
        _until(lambda: "waiting for the test folder" in b_log.read_text(), b, "b waiting")
        assert not b_ready.exists()  # b does not hold it while a does
        assert f"pid {a.pid} on host {socket.gethostname()} since " in b_log.read_text()
        a_release.write_text("")
        assert a.wait(timeout=120) == 0
        _until(b_ready.exists, b, "b holding the lock")
        b_release.write_text("")
        assert b.wait(timeout=120) == 0
        assert "took over" not in b_log.read_text()  # a released it cleanly
        assert lock.read_text() == ""  # nobody holds it now
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.kill()


@pytest.mark.integration  # starts child processes (seconds each)
def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    lock = lock_path(tmp_path / "stage")
    a, a_ready, _, _ = _start(tmp_path, "a", lock)
    _until(a_ready.exists, a, "a holding the lock")
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    (tmp_path / "b.release").write_text("")  # b leaves as soon as it holds the lock
    b, b_ready, _, b_log = _start(tmp_path, "b", lock)
    assert b.wait(timeout=120) == 0 and b_ready.exists()
    assert f"took over the lock of pid {a.pid} on host {socket.gethostname()}" in b_log.read_text()


def test_a_lock_does_not_nest_within_one_process(tmp_path):
    held, again = locked(tmp_path / "x.lock", "x"), locked(tmp_path / "x.lock", "x")
    with held, pytest.raises(RuntimeError, match="already held by this process"), again:
        pass
    with locked(tmp_path / "x.lock", "x"):  # released: taken again
        pass


def test_a_file_system_without_locks_warns_once_and_builds_unlocked(tmp_path, monkeypatch, caplog):
    import errno

    from playpen_attribution.core import locking

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locking.fcntl, "flock", no_locks)
    monkeypatch.setattr(locking, "_warned_unlocked", False)
    built = []
    with caplog.at_level("WARNING", logger="playpen_attribution"):
        for name in ("a", "b"):
            with locked(tmp_path / f"{name}.lock", name):
                built.append(name)
    assert built == ["a", "b"]
    warnings = [r.getMessage() for r in caplog.records if "does not support locks" in r.getMessage()]
    assert len(warnings) == 1 and "a.lock" in warnings[0]
    assert (tmp_path / "a.lock").read_text() == ""  # no holder record written for a lock it does not hold


def test_any_other_failure_to_lock_is_not_hidden(tmp_path, monkeypatch):
    import errno

    from playpen_attribution.core import locking

    def broken(fd, operation):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(locking.fcntl, "flock", broken)
    with pytest.raises(OSError, match="Input/output error"), locked(tmp_path / "x.lock", "x"):
        pass
