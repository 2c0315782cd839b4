"""`playpen-attribution`: run the whole experiment, or one stage of it.

    playpen-attribution run [CONFIG] [--run-dir D] [--overwrite]
    playpen-attribution {data,model,train,attribute,select,evaluate,report} --config C --run-dir D
    playpen-attribution synth --output-dir D --describer-model M --guesser-models A B ...

With no CONFIG, `run` runs the offline demo (`configs/demo.yaml`) into `runs/demo`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from playpen_attribution import artifacts
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger, setup_logging

DEMO_CONFIG = Path("configs") / "demo.yaml"
STAGES = ("data", "model", "train", "attribute", "select", "evaluate", "report", "sae", "predict")


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
    for stage in STAGES:
        p = sub.add_parser(stage, help=f"run the {stage} stage alone")
        p.add_argument("--config", type=Path, required=stage != "report", help="experiment YAML")
        p.add_argument("--run-dir", type=Path, required=True, help="the run's folder")
        p.add_argument("--overwrite", action="store_true", help="replace the stage folder if its config changed")
        if stage == "train":
            p.add_argument("--arm", help="continue the base adapter on this arm (default: train the base adapter)")
        if stage == "evaluate":
            p.add_argument("--model", default="base_adapter",
                           help="base, base_adapter or an arm name (default: base_adapter)")
        if stage in ("train", "evaluate"):
            p.add_argument("--seed", type=int,
                           help="sweep seed whose folder seed_<S>/ holds the arm (default: the config's only seed)")
        if stage == "predict":
            p.add_argument("--rows", type=Path, help="rank this JSONL file's rows with the saved predictor instead")
            p.add_argument("--name", help="name of the ranking folder rank_<name> (default: the rows file's stem)")
    add_synth_arguments(sub.add_parser("synth", help="generate synthetic Taboo games with LLM APIs"))
    return parser


def _stage(args: argparse.Namespace) -> Path | None:
    from playpen_attribution.config import load_config
    from playpen_attribution import sweep
    from playpen_attribution.stages import attribute, base_model, data, evaluate, report, select, train

    if args.command == "report":
        name = load_config(args.config).name if args.config else args.run_dir.name
        return report.run(args.run_dir, name)
    cfg = load_config(args.config)
    model_path = base_model.model_path(cfg, args.run_dir)
    if args.command == "data":
        return data.run(cfg, args.run_dir, args.overwrite)
    if args.command == "model":
        return base_model.run(cfg, args.run_dir, args.overwrite)
    if args.command == "train":
        if args.arm is None and not cfg.sweep.retrain_base:
            return train.run(cfg, args.run_dir, model_path, overwrite=args.overwrite)
        seed = _sweep_seed(cfg, args.seed)
        return train.run(sweep.seed_config(cfg, seed), sweep.seed_run_dir(cfg, args.run_dir, seed), model_path,
                         arm=args.arm, overwrite=args.overwrite)
    if args.command == "attribute":
        return attribute.run(cfg, args.run_dir, model_path, args.overwrite)
    if args.command == "select":
        return select.run(cfg, args.run_dir, model_path, args.overwrite)
    if args.command == "sae":
        from playpen_attribution.stages import sae

        return sae.run(cfg, args.run_dir, model_path, args.overwrite)
    if args.command == "predict":
        from playpen_attribution.stages import predict

        if args.rows is not None:
            return predict.run_rank(cfg, args.run_dir, model_path, args.rows, args.name, args.overwrite)
        return predict.run(cfg, args.run_dir, args.overwrite)
    stage = {"base": None, "base_adapter": artifacts.TRAIN_BASE}.get(args.model, artifacts.train_arm_dir(args.model))
    shared = args.model == "base" or (args.model == "base_adapter" and not cfg.sweep.retrain_base)
    seed = None if shared else _sweep_seed(cfg, args.seed)
    return evaluate.run(sweep.seed_config(cfg, seed) if seed is not None else cfg, args.run_dir, model_path,
                        args.model, stage, args.overwrite, seed=seed)


def _sweep_seed(cfg, given: int | None) -> int:
    """The seed a per-seed command works on: --seed, or the config's only seed."""
    from playpen_attribution import sweep

    seeds = sweep.seeds_of(cfg)
    if given is None and len(seeds) > 1:
        raise UserError(f"--seed is required: the config sweeps seeds {', '.join(map(str, seeds))}")
    if given is not None and given not in seeds:
        raise UserError(f"--seed {given} is not one of the config's seeds ({', '.join(map(str, seeds))})")
    return seeds[0] if given is None else given


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        if args.command == "synth":
            from playpen_attribution.synth.command import run_synth_command

            return run_synth_command(args)
        if args.command == "run":
            from playpen_attribution.config import load_config
            from playpen_attribution.pipeline import run_experiment

            config_path = args.config or demo_config_path()
            cfg = load_config(config_path)
            run_dir = args.run_dir or Path("runs") / (cfg.name if args.config else "demo")
            run_experiment(cfg, run_dir, args.overwrite)
            return 0
        _stage(args)
        return 0
    except UserError as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
