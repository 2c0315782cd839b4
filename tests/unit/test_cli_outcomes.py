"""How the CLI ends a command it could not finish: a stop signal and a path the machine refuses each end in
one line and an exit status, never a traceback; any other error stays a traceback (a bug)."""

from __future__ import annotations

import errno
import signal

import pytest

from playpen_attribution import cli
from playpen_attribution.core.interruption import Interrupted
from playpen_attribution.log import logger


@pytest.fixture
def cli_log(caplog):
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def _errors(cli_log) -> list[str]:
    return list(dict.fromkeys(r.getMessage() for r in cli_log.records if r.levelname == "ERROR"))


def _failing_stage(monkeypatch, exc: BaseException) -> None:
    def stage(*args):
        raise exc

    monkeypatch.setattr(cli, "_stage", stage)


@pytest.mark.parametrize(("exc", "status", "line"), [
    (Interrupted(signal.SIGTERM, "stage /r/seed_1/train_top_k"), 143,
     "interrupted by SIGTERM in stage /r/seed_1/train_top_k; rerun the same command to resume"),
    (Interrupted(signal.SIGUSR1, None), 128 + signal.SIGUSR1, "interrupted by SIGUSR1 during `report`; rerun"),
    (KeyboardInterrupt(), 130, "interrupted by SIGINT during `report`; rerun"),  # raised before our handler
])
def test_a_stop_ends_the_command_in_one_line_with_128_plus_the_signal(monkeypatch, tmp_path, cli_log, exc, status,
                                                                       line):
    _failing_stage(monkeypatch, exc)
    assert cli.main(["report", "--run-dir", str(tmp_path)]) == status
    [error] = _errors(cli_log)
    assert error.startswith(line) and "\n" not in error
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers before the command are back


def test_a_path_the_machine_refuses_is_one_line_naming_it(monkeypatch, tmp_path, cli_log):
    _failing_stage(monkeypatch, OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run/data.part"))
    assert cli.main(["report", "--run-dir", str(tmp_path)]) == 2
    line = "/mnt/ro/run/data.part: Read-only file system (check the path, its permissions and free space)"
    assert _errors(cli_log) == [line]


def test_any_other_os_error_stays_a_traceback(monkeypatch, tmp_path):
    _failing_stage(monkeypatch, OSError(errno.EBADF, "Bad file descriptor"))
    with pytest.raises(OSError, match="Bad file descriptor"):
        cli.main(["report", "--run-dir", str(tmp_path)])
