"""Interruption as a normal event: a signal ends the run with one line, never a traceback.

The CLI calls `stop_on_signals()` around every command: SIGINT (Ctrl-C), SIGTERM (kill, a scheduler's stop) and SIGUSR1 /
SIGUSR2 (what SLURM sends before it pre-empts or times out a job, with `--signal`) then raise
`Interrupted` in the main thread, which unwinds like Ctrl-C: the stage being built removes its `.part`
folder or keeps its resumable checkpoints (`run.stage_folder`), locks are released, and the CLI says
where it stopped and exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM). `working_on`
names what is being built, for that line. Inside `deferred()` (a finished folder being renamed into
place) a signal waits until the block ends, so a rename is never cut in half.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")
"""The signals that stop a run cleanly (those this platform has)."""

_working_on: list[str] = []
_deferring = 0
_pending: list[int] = []


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; `where` names what was being built then (None between stages)."""

    def __init__(self, signum: int, where: str | None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.where = signum, where

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum, frame) -> None:
    if _deferring:
        _pending.append(signum)
        return
    raise Interrupted(signum, where())


def stop_on_signals() -> Callable[[], None]:
    """From now on the stop signals raise `Interrupted` (main thread only; elsewhere a no-op); returns the
    function that puts the previous handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    numbers = [getattr(signal, name) for name in SIGNALS if hasattr(signal, name)]
    before = {signum: signal.signal(signum, _raise) for signum in numbers}

    def restore() -> None:
        for signum, handler in before.items():
            signal.signal(signum, handler)

    return restore


def where() -> str | None:
    """What is being built now (the innermost `working_on`), or None."""
    return _working_on[-1] if _working_on else None


@contextmanager
def working_on(what: str) -> Iterator[None]:
    """Name what the block builds, for the line an interruption ends with."""
    _working_on.append(what)
    try:
        yield
    finally:
        _working_on.pop()


@contextmanager
def deferred() -> Iterator[None]:
    """Hold stop signals back while the block runs; one that arrived is raised when it ends."""
    global _deferring
    _deferring += 1
    signum = None
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending:  # (a block that failed ends the run anyway: its signal is dropped)
            signum = _pending[-1]
            _pending.clear()
    if signum is not None:
        raise Interrupted(signum, where())
