"""The per-seed folders of a sweep.

Every seed gets `<run_dir>/seed_<s>/`, which looks like a run directory of its own: the stages that
do not depend on the seed (`data/`, `base_model/` and, unless the base adapter is retrained per
seed, `train_base/`, `attribute/`, `baselines/`, `sae/`, `predict/`) appear there as relative links
to the run's shared folders, and the seed's own stages (`select/`, `train_<arm>/`, `eval_<arm>/`;
with a per-seed base adapter also `train_base/`, `attribute/`, ...) are ordinary stage folders. So a
stage handed a seed folder reads its inputs exactly as in a run directory, every (arm, seed) is its
own stage folder, and adding a seed later touches no other seed. The pipeline and the CLI make these
folders (`seed_folder`; two processes of one run may make them at once), and hand each stage the folder
`stage_where` gives it from the stage table (`run.stage_table`); stages only work in the folder they
are given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from playpen_attribution.errors import UserError
from playpen_attribution.run import artifacts
from playpen_attribution.run.stage_table import Stage, per_seed

if TYPE_CHECKING:
    from playpen_attribution.config import ExperimentConfig

BASE_DEPENDENT = (artifacts.TRAIN_BASE, artifacts.ATTRIBUTE, artifacts.BASELINES, artifacts.SAE, artifacts.PREDICT)
"""Stages that depend on the base adapter: shared across seeds, or per seed with a per-seed base adapter."""


def shared_stages(retrain_base: bool) -> tuple[str, ...]:
    """Top-level stage folders every seed folder links to."""
    return (artifacts.DATA, artifacts.BASE_MODEL) + (() if retrain_base else BASE_DEPENDENT)


def seed_folder(run_dir: Path, seed: int, retrain_base: bool) -> Path:
    """`<run_dir>/seed_<seed>/`, created, with links to the shared stage folders that exist now."""
    run_dir = Path(run_dir)
    folder = run_dir / artifacts.seed_dir(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in BASE_DEPENDENT:  # a link left by a run without retrain_base must not stand in for a seed's own
        if retrain_base and (folder / name).is_symlink():
            (folder / name).unlink(missing_ok=True)
    for name in shared_stages(retrain_base):
        link, target = folder / name, run_dir / name
        if not target.is_dir():
            continue
        if link.is_symlink():
            if link.resolve() == target.resolve():
                continue
            link.unlink(missing_ok=True)
        elif link.exists():
            raise UserError(f"{link} is a stage folder of its own, but this config shares {name}/ across seeds "
                            f"(sweep.retrain_base is off); remove it or use another --run-dir")
        try:
            os.symlink(os.path.join("..", name), link, target_is_directory=True)
        except FileExistsError:  # another process of this run made it just now
            if not (link.is_symlink() and link.resolve() == target.resolve()):
                raise
    return folder


def stage_where(cfg: ExperimentConfig, run_dir: Path, stage: Stage, seed: int | None) -> tuple[ExperimentConfig, Path]:
    """(config, folder) `stage` works with: `cfg` and the run directory, or for a stage that lives in a seed's
    folder (`stage_table.per_seed`) that seed's config (`for_seed`) and folder (made)."""
    if not per_seed(stage, cfg.sweep.retrain_base):
        return cfg, Path(run_dir)
    if seed is None:
        raise ValueError(f"{stage.name} works in a seed's folder; a seed is needed")
    return cfg.for_seed(seed), seed_folder(run_dir, seed, cfg.sweep.retrain_base)


def seed_folders(run_dir: Path) -> dict[int, Path]:
    """seed -> its folder, for every `seed_<int>/` in a run directory."""
    out = {}
    for path in Path(run_dir).glob("seed_*"):
        suffix = path.name.removeprefix("seed_")
        if path.is_dir() and suffix.lstrip("-").isdigit():
            out[int(suffix)] = path
    return dict(sorted(out.items()))


