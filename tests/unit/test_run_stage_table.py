"""`run.stage_table`: one row per kind of stage folder; the CLI, the pipeline and every stage's command line
read it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from helpers import small_demo_dict, stage_row

from playpen_attribution.run import stage_table
from playpen_attribution.run.stage_table import BASE, RUN, SEED, STAGES, command_line, find, per_seed

STAGES_DIR = Path(stage_table.__file__).resolve().parents[1] / "stages"


def test_every_stage_module_builds_a_row_and_every_row_names_a_module():
    modules = {p.stem for p in STAGES_DIR.glob("*.py") if p.stem != "__init__"}
    assert {stage.module for stage in STAGES} == modules
    assert len({stage.name for stage in STAGES}) == len(STAGES)


def test_every_row_reads_rows_before_it_so_the_table_has_no_cycle():
    seen: set[str] = set()
    for stage in STAGES:
        assert stage.where in (RUN, SEED, BASE)
        assert set(stage.reads) <= {s.name for s in STAGES}, stage.name
        assert set(stage.reads) <= seen, f"{stage.name} reads a row after it: {set(stage.reads) - seen}"
        seen.add(stage.name)


def test_a_command_with_its_arm_finds_its_row():
    assert find("train").name == "train_base" and find("train", "top_k").name == "train_<arm>"
    assert [find("evaluate", arm).name for arm in ("base", "base_adapter", "top_k")] == [
        "eval_base", "eval_base_adapter", "eval_<arm>"]
    with pytest.raises(KeyError):
        find("attribute", "top_k")


@pytest.mark.parametrize("retrain, in_seed", [
    (False, {"select", "train_<arm>", "eval_<arm>"}),
    (True, {"select", "train_<arm>", "eval_<arm>", "train_base", "attribute", "baselines", "sae", "predict",
            "eval_base_adapter", "rank_<name>"}),
])
def test_base_adapter_stages_move_into_the_seed_folders_with_retrain_base(retrain, in_seed):
    assert {stage.name for stage in STAGES if per_seed(stage, retrain)} == in_seed


class _Sweep:
    def __init__(self, retrain_base: bool):
        self.retrain_base = retrain_base


class _Cfg:
    """What command_line reads of a per-seed config: sweep.retrain_base and run_seed."""

    def __init__(self, retrain_base: bool, seed: int = 2):
        self.sweep, self.run_seed = _Sweep(retrain_base), seed


@pytest.mark.parametrize("stage, retrain, folder, options, expected", [
    (stage_table.DATA, False, "run", {}, "data --config <config.yaml> --run-dir run"),
    (stage_table.TRAIN_BASE, False, "run", {"arm": None}, "train --config <config.yaml> --run-dir run"),
    (stage_table.TRAIN_BASE, True, "run/seed_2", {"arm": None}, "train --config <config.yaml> --run-dir run --seed 2"),
    (stage_table.TRAIN_ARM, False, "run/seed_2", {"arm": "top_k"},
     "train --config <config.yaml> --run-dir run --arm top_k --seed 2"),
    (stage_table.EVAL_BASE, True, "run", {"arm": "base"}, "evaluate --config <config.yaml> --run-dir run --arm base"),
    (stage_table.EVAL_BASE_ADAPTER, False, "run", {"arm": "base_adapter"},
     "evaluate --config <config.yaml> --run-dir run --arm base_adapter"),
    (stage_table.RANK, False, "run", {"rows": "new.jsonl", "name": "new"},
     "rank --config <config.yaml> --run-dir run --rows new.jsonl --name new"),
    (stage_table.RANK, True, "run/seed_2", {"rows": "new.jsonl", "name": "new"},
     "rank --config <config.yaml> --run-dir run --rows new.jsonl --name new --seed 2"),
    (stage_table.SELECT, False, "run/seed_2", {}, "select --config <config.yaml> --run-dir run --seed 2"),
    (stage_table.REPORT, False, "run", {}, "report --run-dir run"),
])
def test_a_command_line_names_the_run_dir_and_the_seed_where_the_table_says(stage, retrain, folder, options, expected):
    assert command_line(stage, _Cfg(retrain), Path(folder), **options) == "playpen-attribution " + expected


def test_report_without_a_config_has_a_command_line():
    assert command_line(stage_table.REPORT, None, Path("runs/demo")) == "playpen-attribution report --run-dir runs/demo"


def test_the_cli_stage_commands_their_help_and_seed_flags_come_from_the_table():
    from playpen_attribution import cli

    assert cli.STAGES == stage_table.COMMANDS == tuple(stage_table.HELP)
    assert cli.STAGES == ("data", "model", "train", "attribute", "baselines", "sae", "predict", "select", "evaluate",
                          "rank", "report")
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in stage_table.COMMANDS:
        parser = sub.choices[command]
        assert parser.description == stage_table.HELP[command]
        takes_seed = any(stage.where != RUN for stage in STAGES if stage.command == command)
        assert ("--seed" in parser._option_string_actions) == takes_seed, command
    assert not stage_table.takes_seed("data") and stage_table.takes_seed("evaluate")


@pytest.mark.integration  # imports every stage (seconds)
@pytest.mark.parametrize("retrain", [False, True])
def test_the_pipeline_runs_every_row_where_and_in_an_order_the_table_says(tmp_path, retrain):
    from playpen_attribution.config import parse_config
    from playpen_attribution.pipeline import plan_experiment

    cfg = parse_config(small_demo_dict(sweep={"seeds": [1, 2], "retrain_base": retrain}))
    planned = [d.folder.relative_to(tmp_path).as_posix() for d in plan_experiment(cfg, tmp_path)]
    rows = [stage_row(relative) for relative in planned]
    for index, (relative, stage) in enumerate(zip(planned, rows, strict=True)):
        assert relative.startswith("seed_") == per_seed(stage, retrain), relative
        seed = relative.split("/")[0] + "/" if relative.startswith("seed_") else ""
        for upstream in stage.reads:  # the folders it reads (its own seed's, or shared) are all planned before it
            read = [j for j, (other, row) in enumerate(zip(planned, rows, strict=True)) if row.name == upstream
                    and (not per_seed(row, retrain) or other.startswith(seed) or stage.name == "report")]
            if upstream == "train_<arm>" and stage.name == "eval_<arm>":  # an arm's evaluation reads its own training
                read = [planned.index(relative.replace("/eval_", "/train_"))]
            assert all(j < index for j in read), f"{relative} is planned before what it reads: {upstream}"
    assert {row.name for row in rows} == {"data", "base_model", "train_base", "attribute", "baselines", "select",
                                          "train_<arm>", "eval_base", "eval_base_adapter", "eval_<arm>", "report"}
