"""The launcher: arm x seed jobs as separate processes through submitit's local executor.

Jobs run in fresh processes, so each costs a Python + torch start-up: the sweep tests rebuild only four
(arm, seed) units of a copy of the session's finished demo run, and compare the report with the inline one.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import REPO, SWEEP_PLAN, SWEEP_SEEDS, TESTS, record_job, small_demo_dict

from playpen_attribution.errors import UserError
from playpen_attribution.log import logger
from playpen_attribution.run import artifacts
from playpen_attribution.run.launcher import Job, JobFailed, LauncherConfig, cpu_threads, run_jobs

REBUILT = [("top_k", 3), ("matched_random_k", 3), ("longest_k", 3), ("matched_random_longest_k", 3)]
"""The units each sweep test removes from its copy and rebuilds as jobs."""


@pytest.fixture
def job_env(monkeypatch):
    """Job processes import `helpers` (tests/) like the test does."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))


def test_local_jobs_run_in_their_own_processes_with_their_share_of_threads(tmp_path, job_env):
    outs = [tmp_path / f"job{i}.json" for i in range(3)]
    run_jobs(LauncherConfig(kind="local", workers=2), [Job(p.stem, record_job, (p,)) for p in outs], tmp_path / "jobs")
    seen = [json.loads(p.read_text()) for p in outs]
    assert len({s["pid"] for s in seen} | {os.getpid()}) == 4  # three processes, none of them this one
    assert all(s["threads"] == cpu_threads(2) and s["cuda_visible_devices"] == "" for s in seen)  # CPU box: no GPU


def test_a_failed_job_fails_the_run_with_its_log(tmp_path, job_env):
    jobs = [Job("good", record_job, (tmp_path / "good.json",)), Job("bad", record_job, (tmp_path / "bad.json", True))]
    with pytest.raises(JobFailed) as failure:
        run_jobs(LauncherConfig(kind="local", workers=2), jobs, tmp_path / "jobs")
    message = str(failure.value)
    assert isinstance(failure.value, UserError) and "\n" not in message
    assert message.startswith("job 'bad' failed: RuntimeError: planned failure of bad.json; its log: ")
    log = Path(message.split("its log: ")[1])
    assert log.is_file() and "planned failure of bad.json" in log.read_text()
    assert (tmp_path / "good.json").is_file()  # the other job still finished


def _copy_without(run_dir: Path, dest: Path, units) -> Path:
    shutil.copytree(run_dir, dest, symlinks=True)
    for arm, seed in units:
        for name in (artifacts.train_arm_dir(arm), artifacts.eval_dir(arm)):
            shutil.rmtree(dest / artifacts.seed_dir(seed) / name)
    shutil.rmtree(dest / artifacts.REPORT)
    (dest / artifacts.REPORT_JSON).unlink()  # the run folder's copy
    return dest


def _numbers(run_dir: Path) -> dict:
    """report.json's accuracies and p-values: what must not depend on how the jobs ran."""
    report = json.loads((run_dir / artifacts.REPORT / artifacts.REPORT_JSON).read_text())
    return {"arms": [(a["name"], a["seed"], a["correct"], a["accuracy"], a["choice_accuracy"]) for a in report["arms"]],
            "comparisons": [(c["arm"], c["seed"], c["metrics"]) for c in report["comparisons"]],
            "aggregate": [(a["arm"], a["metrics"]) for a in report["aggregate"]], "primary": report["primary"]}


def _finished(run_dir: Path) -> dict[str, str]:
    out = {}
    for seed in SWEEP_SEEDS:
        for arm in SWEEP_PLAN:
            for name in (artifacts.train_arm_dir(arm), artifacts.eval_dir(arm)):
                folder = run_dir / artifacts.seed_dir(seed) / name
                if artifacts.is_stage_folder(folder):
                    out[f"seed_{seed}/{name}"] = artifacts.load_manifest(folder).fields["finished"]
    return out


def test_submitit_local_executor_gives_the_inline_report(demo_run, tmp_path):
    from playpen_attribution.pipeline import run_experiment

    cfg, run_dir = demo_run
    copy = _copy_without(run_dir, tmp_path / "run", REBUILT)
    before = _finished(copy)
    local = cfg.model_copy(update={"launcher": LauncherConfig(kind="local", workers=2)})
    run_experiment(local, copy)
    after = _finished(copy)
    assert {k: v for k, v in after.items() if k in before} == before  # every other unit reused
    assert len(after) == len(before) + 2 * len(REBUILT)
    assert len(list((copy / artifacts.JOBS).glob("*_log.err"))) == len(REBUILT)  # one job (and log) per unit
    assert _numbers(copy) == _numbers(run_dir)


def test_killed_workers_run_resumes_only_the_missing_jobs(demo_run, tmp_path, caplog):
    from playpen_attribution.cli import main

    _, run_dir = demo_run
    copy = _copy_without(run_dir, tmp_path / "run", REBUILT)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(small_demo_dict()))
    command = [sys.executable, "-m", "playpen_attribution", "run", str(config), "--run-dir", str(copy), "--workers", "2"]
    evals = [copy / artifacts.seed_dir(seed) / artifacts.eval_dir(arm) for arm, seed in REBUILT]
    with open(tmp_path / "first.log", "w") as first_log:
        proc = subprocess.Popen(command, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=first_log)
    try:
        deadline = time.monotonic() + 1800
        while not any(artifacts.is_stage_folder(e) for e in evals):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "no job finished"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and every job process it started
        proc.wait()
    done_at_kill = _finished(copy)
    missing = sum(not artifacts.is_stage_folder(e) for e in evals)
    assert 1 <= missing < len(REBUILT), "kill the run while jobs are running"

    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("INFO", logger="playpen_attribution"):
            assert main(["run", str(config), "--run-dir", str(copy), "--workers", "2"]) == 0
    finally:
        logger.removeHandler(caplog.handler)
    assert f"[sweep] {missing} of {len(SWEEP_PLAN) * len(SWEEP_SEEDS)} (arm, seed) units to build" in caplog.text
    after = _finished(copy)
    assert {k: v for k, v in after.items() if k in done_at_kill} == done_at_kill  # finished before: untouched
    assert all(artifacts.is_stage_folder(e) for e in evals) and not list(copy.glob("seed_*/*.part"))
    assert _numbers(copy) == _numbers(run_dir)
