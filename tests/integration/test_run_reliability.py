"""A run folder that defends itself, end to end on the tiny model: two `run`s on one folder build each stage
once; a signal during training ends the run in one line and the rerun resumes from the checkpoint (SLURM's
pre-emption signal too); a diverging training stops naming its stage, seed and step; damaged metadata and
incomplete sweeps are refused in one line; a moved run folder is reported, resumed and ranked; every JSON
file is strict. Real processes where processes are involved; nothing measures time (deadlines only keep a
broken run from hanging the suite)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import REPO, SWEEP_PLAN, SWEEP_SEEDS, small_demo_dict

from playpen_attribution.cli import main
from playpen_attribution.core.adapters import read_adapter, resolved_base
from playpen_attribution.core.jsonl import write_jsonl
from playpen_attribution.core.yaml_config import dump
from playpen_attribution.log import logger
from playpen_attribution.report.results import stage_folders
from playpen_attribution.run import artifacts
from playpen_attribution.run.stage_folder import stale_stages
from playpen_attribution.sae.config import PredictConfig, SaeConfig


@pytest.fixture
def cli_log(caplog):
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def _errors(cli_log) -> list[str]:
    return list(dict.fromkeys(r.getMessage() for r in cli_log.records if r.levelname == "ERROR"))


def _config(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(small_demo_dict(**overrides)))
    return path


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as err:
        return subprocess.Popen([sys.executable, "-m", "playpen_attribution", *argv], cwd=REPO, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=err)


def _until(condition, proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + 1200
    while not condition():
        assert proc.poll() is None, f"ended before {what}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_signal_ends_the_run_in_one_line_and_the_rerun_resumes_from_the_checkpoint(tmp_path):
    """Ctrl-C, then SLURM's pre-emption signal (SIGUSR1 with `--signal`), then SIGTERM, each during the base
    adapter's training with checkpoints: exit 128 + signal, one line naming the stage, no traceback, no
    finished folder; each rerun resumes from the last checkpoint."""
    config = _config(tmp_path, train={"max_steps": 100000, "save_steps": 2}, sweep={"seeds": [1]})
    run_dir = tmp_path / "run"
    part = run_dir / (artifacts.TRAIN_BASE + ".part")
    for round, signum in enumerate([signal.SIGINT, signal.SIGUSR1, signal.SIGTERM]):
        log = tmp_path / f"round_{round}.log"
        proc = _start(["run", str(config), "--run-dir", str(run_dir)], log)
        try:
            if round == 0:
                _until(lambda: any(part.glob("_trainer/checkpoint-*/trainer_state.json")), proc, "a checkpoint", log)
            else:
                _until(lambda log=log: "[train] resuming from checkpoint-" in log.read_text(), proc, "the resumed training",
                       log)
            proc.send_signal(signum)
            assert proc.wait(timeout=600) == 128 + signum
        finally:
            _stop(proc)
        text = log.read_text()
        assert (f"ERROR interrupted by {signum.name} in stage {run_dir / artifacts.TRAIN_BASE}; rerun the same "
                "command to resume") in text
        assert "Traceback" not in text
        if round:
            assert "resuming the unfinished build" in text and "(kept _trainer)" in text
        assert not artifacts.is_stage_folder(run_dir / artifacts.TRAIN_BASE)
        assert any(part.glob("_trainer/checkpoint-*/trainer_state.json"))  # left for the next rerun
        assert not artifacts.lock_file(run_dir / artifacts.TRAIN_BASE).read_text()  # released


def test_two_runs_on_one_run_folder_build_every_stage_once(tmp_path):
    config = _config(tmp_path, sweep={"seeds": [1]}, select={"arms": ["top_k", "matched_random_k"]})
    run_dir = tmp_path / "run"
    argv = ["run", str(config), "--run-dir", str(run_dir)]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    first = _start(argv, logs[0])
    second = None
    try:
        _until(lambda: (run_dir / (artifacts.TRAIN_BASE + ".part")).exists(), first, "the first run training", logs[0])
        second = _start(argv, logs[1])  # a second terminal, a resubmitted job
        assert first.wait(timeout=1800) == 0, logs[0].read_text()[-3000:]
        assert second.wait(timeout=1800) == 0, logs[1].read_text()[-3000:]
    finally:
        for proc in (first, second):
            if proc is not None:
                _stop(proc)
    text = "".join(log.read_text() for log in logs)
    assert "Traceback" not in text
    folders = stage_folders(run_dir)
    for label in folders:
        built = len(re.findall(rf"\[{re.escape(Path(label).name)}\] done in", text))
        assert built == 1, f"{label} built {built} times"  # the other run waited, then reused it
    assert stale_stages(folders) == {}
    assert not list(run_dir.glob("**/*.part"))


def _linked(demo_run_dir: Path, dest: Path, names=(artifacts.DATA, artifacts.BASE_MODEL)) -> Path:
    dest.mkdir(parents=True)
    for name in names:
        (dest / name).symlink_to(demo_run_dir / name, target_is_directory=True)
    return dest


def test_a_diverging_training_stops_in_one_line_naming_stage_seed_and_step(demo_run, tmp_path, cli_log):
    _, src = demo_run
    run_dir = _linked(src, tmp_path / "run")
    config = _config(tmp_path, train={"learning_rate": 1e30, "epochs": 1})
    assert main(["train", "--config", str(config), "--run-dir", str(run_dir)]) == 2
    [error] = _errors(cli_log)
    assert re.match(rf"training diverged in stage {re.escape(str(run_dir / 'train_base'))} \(seed 42\) at step \d+: "
                    r".*; the stage is not finished", error)
    assert not (run_dir / artifacts.TRAIN_BASE).exists()  # nothing finished, no checkpoint to resume NaN from
    assert not list((run_dir / "train_base.part").glob("_trainer/checkpoint-*"))


@pytest.fixture
def run_copy(demo_run, tmp_path):
    _, run_dir = demo_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, symlinks=True)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(small_demo_dict()))
    return copy, config


def test_damaged_metadata_of_a_finished_stage_is_refused_in_one_line(demo_run, run_copy, cli_log):
    _, src = demo_run
    run_dir, config = run_copy
    manifest = run_dir / "seed_1" / "train_top_k" / artifacts.MANIFEST_FILE
    manifest.write_text(manifest.read_text()[:100])  # cut short (a full disk, a killed copy)
    for argv in (["run", str(config), "--run-dir", str(run_dir)], ["report", "--run-dir", str(run_dir)]):
        cli_log.clear()
        assert main(argv) == 2
        [error] = _errors(cli_log)
        assert error.startswith(f"{manifest}: damaged stage manifest (not valid JSON")
        assert error.endswith("; rebuild the stage with --overwrite")
    shutil.copy2(src / "seed_1" / "train_top_k" / artifacts.MANIFEST_FILE, manifest)
    stage_config = run_dir / "seed_1" / "select" / artifacts.CONFIG_FILE
    stage_config.write_text(stage_config.read_text()[:30] + "\n  - [")
    cli_log.clear()
    assert main(["run", str(config), "--run-dir", str(run_dir)]) == 2
    [error] = _errors(cli_log)
    assert "seed_1/select: the finished folder no longer matches its manifest: config.yaml (changed)" in error
    cli_log.clear()
    assert main(["report", "--run-dir", str(run_dir), "--allow-stale"]) == 2  # read anyway: still one line
    [error] = _errors(cli_log)
    assert error.startswith(f"{stage_config}: damaged stage config (not valid YAML")


def test_a_report_over_an_incomplete_sweep_is_refused_or_names_the_missing_units(run_copy, cli_log):
    run_dir, _ = run_copy
    shutil.rmtree(run_dir / "seed_2" / artifacts.eval_dir("top_k"))
    shutil.rmtree(run_dir / "seed_3" / artifacts.eval_dir("longest_k"))
    assert main(["report", "--run-dir", str(run_dir)]) == 2
    [error] = _errors(cli_log)
    assert "the sweep is incomplete, 2 planned (arm, seed) unit(s) have no evaluation: top_k (seed 2), " \
           "longest_k (seed 3)" in error and "--allow-incomplete" in error
    (run_dir / artifacts.EXPERIMENT_FILE).unlink()  # no plan on record: the seeds' selections say what was planned
    cli_log.clear()
    assert main(["report", "--run-dir", str(run_dir)]) == 2
    assert "top_k (seed 2), longest_k (seed 3)" in _errors(cli_log)[0]
    assert main(["report", "--run-dir", str(run_dir), "--allow-incomplete"]) == 0
    report = artifacts.load_report(run_dir / artifacts.REPORT)
    assert report["missing_units"] == [{"arm": "top_k", "seed": 2}, {"arm": "longest_k", "seed": 3}]
    answer = (run_dir / artifacts.REPORT_MD).read_text().split("## Answer", 1)[1]
    assert "**Incomplete sweep:** no evaluation for top_k (seed 2), longest_k (seed 3)" in answer


def test_a_moved_run_folder_is_reported_resumed_and_ranked(demo_run, tmp_path, cli_log):
    cfg, src = demo_run
    first = tmp_path / "first_place" / "run"
    shutil.copytree(src, first, symlinks=True)  # adapters trained at the original place, which still exists
    cfg = cfg.model_copy(update={"sae": SaeConfig(layer=0, d_sae=32, model="base_adapter", batch_size=32),
                                 "predict": PredictConfig(group_key="target_word", folds=3, cv_folds=3)})
    config = tmp_path / "c.yaml"
    config.write_text(dump(cfg))
    assert main(["sae", "--config", str(config), "--run-dir", str(first)]) == 0  # loads an adapter trained at src
    assert main(["predict", "--config", str(config), "--run-dir", str(first)]) == 0
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(first, moved)

    model = (moved / artifacts.BASE_MODEL / artifacts.MODEL_DIR).resolve()
    for adapter in (moved / "train_base" / "adapter", moved / "seed_2" / "train_top_k" / "adapter"):
        info = read_adapter(adapter)  # the base inside the run folder, relative to the adapter
        assert not Path(info.base_model).is_absolute() and resolved_base(info) == str(model)
    for folder in stage_folders(moved).values():
        assert all(not Path(seen["path"]).is_absolute() for seen in artifacts.load_manifest(folder).consumed.values())

    assert main(["report", "--run-dir", str(moved)]) == 0
    for name in (artifacts.train_arm_dir("top_k"), artifacts.eval_dir("top_k")):
        shutil.rmtree(moved / "seed_2" / name)
    assert main(["run", str(config), "--run-dir", str(moved)]) == 0  # resumed: that unit rebuilt, the rest reused
    assert (artifacts.load_metrics(moved / "seed_2" / "eval_top_k").accuracy
            == artifacts.load_metrics(src / "seed_2" / "eval_top_k").accuracy)
    rows = tmp_path / "new_rows.jsonl"
    write_jsonl(rows, [r | {"example_id": "new_" + r["example_id"]}
                       for r in artifacts.load_split(moved / artifacts.DATA, "eval")[:10]])
    assert main(["rank", "--config", str(config), "--run-dir", str(moved), "--rows", str(rows)]) == 0
    assert len((moved / "rank_new_rows" / artifacts.RANKED_FILE).read_text().splitlines()) == 10
    from playpen_attribution.stages import attribute

    rescored = _linked(moved, tmp_path / "rescored", (artifacts.DATA, artifacts.BASE_MODEL, artifacts.TRAIN_BASE))
    attribute.run(cfg, rescored)  # Bergson loads the base the moved adapter names
    assert artifacts.load_attribution_summary(rescored / artifacts.ATTRIBUTE)["non_finite"] == 0


def test_every_json_file_of_a_run_is_strict_json(demo_run):
    _, run_dir = demo_run

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    files = [p for p in run_dir.rglob("*.json") if p.is_file()]
    assert len(files) > 3 * len(SWEEP_PLAN) * len(SWEEP_SEEDS)
    for path in files:
        json.loads(path.read_text(), parse_constant=refuse)
    for path in run_dir.rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            json.loads(line, parse_constant=refuse)
