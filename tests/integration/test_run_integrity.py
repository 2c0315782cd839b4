"""A run folder a researcher can rely on: tampered folders are not reused, a report refuses stale stages,
and a refused run leaves the run's config alone. Works on copies of the session's small demo run."""

import shutil

import pytest
from helpers import SWEEP_SEEDS

from playpen_attribution.cli import main
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger
from playpen_attribution.run import artifacts


@pytest.fixture
def cli_log(caplog):
    """The CLI's log lines (its logger does not propagate to pytest's root handler)."""
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.fixture
def run_copy(demo_run, tmp_path):
    cfg, run_dir = demo_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, symlinks=True)
    return cfg, copy


def test_a_tampered_split_is_refused_not_reused(run_copy):
    from playpen_attribution.stages import data

    cfg, run_dir = run_copy
    split = artifacts.split_path(run_dir / "data", "train_base")
    split.write_text("".join(split.read_text().splitlines(keepends=True)[:5]))
    with pytest.raises(UserError, match=r"splits/train_base.jsonl \(changed\).*--overwrite"):
        data.run(cfg, run_dir)
    data.run(cfg, run_dir, overwrite=True)  # rebuilt: the same rows as before
    assert len(artifacts.load_split(run_dir / "data", "train_base")) > 5


def test_report_refuses_a_run_with_a_replaced_upstream_stage(run_copy, cli_log):
    from playpen_attribution.stages import data

    cfg, run_dir = run_copy
    changed = cfg.model_copy(update={"data": cfg.data.model_copy(update={"seed": cfg.data.seed + 1})})
    data.run(changed, run_dir, overwrite=True)
    assert main(["report", "--run-dir", str(run_dir)]) == 2
    assert "stale, built from an upstream folder that changed: data (data/ content" in cli_log.text
    assert "--allow-stale" in cli_log.text
    assert main(["report", "--run-dir", str(run_dir), "--allow-stale"]) == 0
    md = (run_dir / artifacts.REPORT_MD).read_text()
    assert md.startswith("> **Stale results") and "`train_base/`" in md
    assert "base_model" in artifacts.load_report(run_dir / "report")["stale"]


def test_failed_overwrite_keeps_the_finished_selection(run_copy):
    from playpen_attribution.stages import select

    cfg, run_dir = run_copy
    seed_dir = run_dir / f"seed_{SWEEP_SEEDS[0]}"
    before = (seed_dir / "select" / artifacts.SELECTIONS_FILE).read_text()
    huge = cfg.model_copy(update={"select": cfg.select.model_copy(update={"k": 10_000})})
    with pytest.raises(UserError):
        select.run(huge.for_seed(SWEEP_SEEDS[0]), seed_dir, overwrite=True)
    assert (seed_dir / "select" / artifacts.SELECTIONS_FILE).read_text() == before
    assert not (seed_dir / "select.part").exists()


def test_refused_run_leaves_experiment_yaml_unchanged(run_copy):
    from playpen_attribution.pipeline import run_experiment

    cfg, run_dir = run_copy
    before = (run_dir / artifacts.EXPERIMENT_FILE).read_text()
    changed = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": cfg.train.epochs + 1})})
    with pytest.raises(UserError, match=r"train_base exists with .*changed config fields: train.epochs"):
        run_experiment(changed, run_dir)
    assert (run_dir / artifacts.EXPERIMENT_FILE).read_text() == before


def test_report_on_a_missing_folder_or_a_file(tmp_path, cli_log):
    assert main(["report", "--run-dir", str(tmp_path / "nope")]) == 2
    (tmp_path / "file").write_text("x")
    assert main(["report", "--run-dir", str(tmp_path / "file")]) == 2
    assert "no such folder" in cli_log.text and "is a file, expected a run folder" in cli_log.text


def test_logs_are_a_line_or_two_per_stage(run_copy, tmp_path, caplog):
    """A built stage logs two INFO lines (start with its command, done), a reused one a single line; the
    resolved config goes to DEBUG and config.yaml."""
    from playpen_attribution.pipeline import run_experiment
    from playpen_attribution.stages import data

    cfg, run_dir = run_copy
    with caplog.at_level("INFO", logger="playpen_attribution"):
        data.run(cfg, tmp_path / "fresh")
    assert [r.getMessage().split(" ")[1] for r in caplog.records] == ["start:", "done"]
    caplog.clear()
    with caplog.at_level("INFO", logger="playpen_attribution"):
        run_experiment(cfg, run_dir)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= 20]
    stages = len(list(run_dir.glob("*/manifest.json"))) + len(list(run_dir.glob("seed_*/*/manifest.json")))
    assert len(lines) < 150 and len(lines) <= stages + 30
    assert not any("resolved config" in line for line in lines)
