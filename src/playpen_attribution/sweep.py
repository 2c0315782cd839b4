"""Sweep seeds and the folder of each seed.

Every seed gets `<run_dir>/seed_<s>/`, which looks like a run directory of its own: the stages that
do not depend on the seed (`data/`, `base_model/` and, unless `sweep.retrain_base`, `train_base/`,
`attribute/`, `baselines/`) appear there as relative links to the run's shared folders, and the seed's
own stages (`select/`, `train_<arm>/`, `eval_<arm>/`; with `retrain_base` also `train_base/`,
`attribute/`, `baselines/`, `eval_base_adapter/`) are ordinary stage folders. So the training stage,
which reads `train_base/` and `select/` of the folder it is given, runs unchanged per seed, every
(arm, seed) training is its own stage folder, and adding a seed later touches no other seed.
"""

from __future__ import annotations

import os
from pathlib import Path

from playpen_attribution import artifacts
from playpen_attribution.config import ExperimentConfig
from playpen_attribution.errors import UserError

BASE_DEPENDENT = (artifacts.TRAIN_BASE, artifacts.ATTRIBUTE, artifacts.BASELINES, artifacts.SAE, artifacts.PREDICT)
"""Stages that depend on the base adapter: shared across seeds, or per seed with `retrain_base`."""


def seeds_of(cfg: ExperimentConfig) -> list[int]:
    """The sweep's seeds: `sweep.seeds`, or the one seed `arm_train.seed` when none are listed."""
    return list(cfg.sweep.seeds) or [cfg.arm_train.seed]


def seed_config(cfg: ExperimentConfig, seed: int) -> ExperimentConfig:
    """The config one seed runs with: `arm_train.seed` (and with retrain_base `train.seed`) = seed."""
    update = {"arm_train": cfg.arm_train.model_copy(update={"seed": seed})}
    if cfg.sweep.retrain_base:
        update["train"] = cfg.train.model_copy(update={"seed": seed})
    return cfg.model_copy(update=update)


def shared_stages(cfg: ExperimentConfig) -> tuple[str, ...]:
    """Top-level stage folders every seed folder links to."""
    return (artifacts.DATA, artifacts.BASE_MODEL) + (() if cfg.sweep.retrain_base else BASE_DEPENDENT)


def seed_run_dir(cfg: ExperimentConfig, run_dir: Path, seed: int) -> Path:
    """`<run_dir>/seed_<seed>/`, created, with links to the shared stage folders that exist now."""
    run_dir = Path(run_dir)
    folder = run_dir / artifacts.seed_dir(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in BASE_DEPENDENT:  # a link left by a run without retrain_base must not stand in for a seed's own
        if cfg.sweep.retrain_base and (folder / name).is_symlink():
            (folder / name).unlink()
    for name in shared_stages(cfg):
        link, target = folder / name, run_dir / name
        if not target.is_dir():
            continue
        if link.is_symlink():
            if link.resolve() == target.resolve():
                continue
            link.unlink()
        elif link.exists():
            raise UserError(f"{link} is a stage folder of its own, but this config shares {name}/ across seeds "
                            f"(sweep.retrain_base is off); remove it or use another --run-dir")
        os.symlink(os.path.join("..", name), link, target_is_directory=True)
    return folder


def seed_folders(run_dir: Path) -> dict[int, Path]:
    """seed -> its folder, for every `seed_<int>/` in a run directory."""
    out = {}
    for path in Path(run_dir).glob("seed_*"):
        suffix = path.name.removeprefix("seed_")
        if path.is_dir() and suffix.lstrip("-").isdigit():
            out[int(suffix)] = path
    return dict(sorted(out.items()))
