"""The stage-folder contract when luck is bad: two processes on one stage folder (real processes), a stop
signal during a build, damaged metadata, and a copied run folder. No timing is asserted: processes meet
through files, and the deadlines only keep a broken lock from hanging the suite."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from playpen_attribution.core.interruption import Interrupted, deferred, stop_on_signals, working_on
from playpen_attribution.errors import UserError
from playpen_attribution.run import artifacts
from playpen_attribution.run.stage_folder import changed_files, run_stage, stale_stages

BUILD = """
import os, pathlib, sys, time
from playpen_attribution.core.interruption import Interrupted, stop_on_signals
from playpen_attribution.log import setup_logging
from playpen_attribution.run.stage_folder import run_stage
setup_logging()
run_dir, name = pathlib.Path(sys.argv[1]), sys.argv[2]

def build(out):
    with (run_dir / "builds.txt").open("a") as f:
        f.write(f"{os.getpid()}\\n")
    (out / "checkpoints").mkdir()
    (out / "mine.txt").write_text("the first build's file")
    (run_dir / "in_build").write_text("")
    while not (run_dir / "release").exists():
        time.sleep(0.02)
    assert (out / "mine.txt").read_text() == "the first build's file", "someone emptied this build's .part"
    return {"rows": 1}

stop_on_signals()
try:
    run_stage(run_dir, name, {"x": 1}, {}, build, command="test", resumable=("checkpoints",))
except Interrupted as exc:
    print(f"interrupted in {exc.where}", file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def _start(run_dir: Path, log: Path) -> subprocess.Popen:
    with log.open("w") as err:
        return subprocess.Popen([sys.executable, "-c", BUILD, str(run_dir), "stage"], stderr=err)


def _until(condition, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert proc.poll() is None, f"process ended before {what}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.02)


@pytest.mark.integration  # starts child processes (seconds each)
def test_two_processes_on_one_stage_folder_build_it_once(tmp_path):
    a = _start(tmp_path, tmp_path / "a.log")
    b = None
    try:
        _until((tmp_path / "in_build").exists, a, "a building")
        b = _start(tmp_path, tmp_path / "b.log")
        _until(lambda: "waiting for stage" in (tmp_path / "b.log").read_text(), b, "b waiting")
        assert f"pid {a.pid} on host" in (tmp_path / "b.log").read_text()
        assert (tmp_path / "stage.part" / "mine.txt").is_file()  # b left a's .part alone
        (tmp_path / "release").write_text("")
        assert a.wait(timeout=120) == 0, (tmp_path / "a.log").read_text()
        assert b.wait(timeout=120) == 0, (tmp_path / "b.log").read_text()
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert "[stage] reused" in (tmp_path / "b.log").read_text()
    assert (tmp_path / "builds.txt").read_text() == f"{a.pid}\n"  # built once, by a
    assert changed_files(tmp_path / "stage") == [] and not (tmp_path / "stage.part").exists()


@pytest.mark.integration  # starts child processes (seconds each)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_stop_signal_leaves_a_resumable_part_that_is_never_taken_for_whole(tmp_path, signum):
    proc = _start(tmp_path, tmp_path / "a.log")
    try:
        _until((tmp_path / "in_build").exists, proc, "the build")
        proc.send_signal(signum)
        assert proc.wait(timeout=120) == 128 + signum
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "a.log").read_text()
    assert f"interrupted in stage {tmp_path / 'stage'}" in log and "Traceback" not in log
    assert not (tmp_path / "stage").exists() and not artifacts.is_stage_folder(tmp_path / "stage")
    part = tmp_path / "stage.part"
    assert (part / "checkpoints").is_dir() and (part / artifacts.BUILDING_MARK).is_file()  # kept for the rerun
    seen = []
    run_stage(tmp_path, "stage", {"x": 1}, {}, lambda out: seen.append((out / "checkpoints").is_dir()) or {},
              command="test", resumable=("checkpoints",))  # same fingerprint: the rerun gets the checkpoints
    assert seen == [True] and changed_files(tmp_path / "stage") == []


def test_a_stop_signal_inside_deferred_waits_for_the_block_to_end():
    reached = []
    restore = stop_on_signals()
    try:
        with pytest.raises(Interrupted) as caught, working_on("stage demo"), deferred():
            os.kill(os.getpid(), signal.SIGUSR1)
            reached.append("after the signal")  # held back until the block ends
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGUSR1)  # outside deferred: at once
            time.sleep(5)  # (never reached)
    finally:
        restore()
    assert reached == ["after the signal"]
    assert caught.value.where == "stage demo" and caught.value.exit_code == 128 + signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the handlers before are back


def _writer(out):
    (out / "rows.txt").write_text("a\n")
    return {"rows": 1}


def test_a_damaged_manifest_is_refused_in_one_line_and_rebuilt_with_overwrite(tmp_path):
    run_stage(tmp_path, "up", {"v": 1}, {}, _writer, command="test")
    run_stage(tmp_path, "down", {}, {"up": tmp_path / "up"}, _writer, command="test")
    manifest = tmp_path / "up" / artifacts.MANIFEST_FILE
    manifest.write_text(manifest.read_text()[:60])  # cut short
    for again in (lambda: run_stage(tmp_path, "up", {"v": 1}, {}, _writer, command="test"),
                  lambda: run_stage(tmp_path, "down", {}, {"up": tmp_path / "up"}, _writer, command="test"),
                  lambda: stale_stages({"up": tmp_path / "up"})):
        with pytest.raises(UserError, match=r"up/manifest.json: damaged stage manifest \(not valid JSON") as caught:
            again()
        assert "\n" not in str(caught.value)
    with pytest.raises(UserError, match="--overwrite"):
        run_stage(tmp_path, "up", {"v": 1}, {}, _writer, command="test")
    run_stage(tmp_path, "up", {"v": 1}, {}, _writer, command="test", overwrite=True)
    assert changed_files(tmp_path / "up") == []
    run_stage(tmp_path, "down", {}, {"up": tmp_path / "up"}, _writer, command="test")  # the same content: reused


def test_a_damaged_stage_config_is_refused_and_rebuilt_with_overwrite(tmp_path):
    run_stage(tmp_path, "s", {"v": 1}, {}, _writer, command="test")
    (tmp_path / "s" / artifacts.CONFIG_FILE).write_text("v: [1,\n")
    with pytest.raises(UserError, match=r"config.yaml \(changed\).*--overwrite"):
        run_stage(tmp_path, "s", {"v": 1}, {}, _writer, command="test")
    with pytest.raises(UserError, match=r"s/config.yaml: damaged stage config \(not valid YAML"):
        artifacts.load_stage_config(tmp_path / "s")
    run_stage(tmp_path, "s", {"v": 1}, {}, _writer, command="test", overwrite=True)
    assert artifacts.load_stage_config(tmp_path / "s") == {"v": 1}


def test_a_folder_whose_manifest_does_not_list_its_config_is_not_whole(tmp_path):
    run_stage(tmp_path, "s", {"v": 1}, {}, _writer, command="test")
    manifest = tmp_path / "s" / artifacts.MANIFEST_FILE
    raw = json.loads(manifest.read_text())
    del raw["produced"][artifacts.CONFIG_FILE]
    manifest.write_text(json.dumps(raw))
    (tmp_path / "s" / artifacts.CONFIG_FILE).unlink()  # what a build whose .part was emptied under it recorded
    assert changed_files(tmp_path / "s") == ["config.yaml (not listed in the manifest)"]
    with pytest.raises(UserError, match=r"no longer matches its manifest: config.yaml \(not listed"):
        run_stage(tmp_path, "s", {"v": 1}, {}, _writer, command="test")


def test_inputs_are_recorded_relative_so_a_copied_run_folder_is_judged_the_same(tmp_path):
    run_dir = tmp_path / "run"
    run_stage(run_dir, "up", {"v": 1}, {}, _writer, command="test")
    run_stage(run_dir, "down", {}, {"up": run_dir / "up"}, _writer, command="test")
    assert artifacts.load_manifest(run_dir / "down").consumed["up"]["path"] == "up"
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(run_dir)
    assert stale_stages({"up": copy / "up", "down": copy / "down"}) == {}
    calls = []
    run_stage(copy, "down", {}, {"up": copy / "up"}, lambda out: calls.append(out) or {}, command="test")
    assert calls == []  # reused where it now is


@pytest.mark.integration  # imports the Transformers trainer (seconds)
def test_a_checkpoint_with_a_damaged_trainer_state_is_not_resumed_from(tmp_path):
    from playpen_attribution.stages.train import last_checkpoint

    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    assert last_checkpoint(tmp_path).name == "checkpoint-4"
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text('{"global_st')  # cut short
    assert last_checkpoint(tmp_path).name == "checkpoint-2"
