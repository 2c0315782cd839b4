"""The whole experiment, stage by stage, in the order the data flows.

    data -> model -> eval_base
         -> train_base -> attribute -> baselines (only when an arm ranks by loss or embedding)
         -> sae -> predict (only with `sae` / `predict` sections; feeds the sae_top_k arm) -> eval_base_adapter
         -> for each sweep seed, in seed_<s>/: select -> for each arm: train_<arm> -> eval_<arm>
         -> report

Which folder each stage works in (the run directory, or a seed's) is the stage table's word
(`run.stage_table`): with `sweep.retrain_base` the base-adapter stages move into each seed's folder.
Every stage folder is reused when its config and inputs are unchanged, so an interrupted sweep resumes
with the first (arm, seed) that has no finished folder, and each (arm, seed) could run as its own job
(`playpen-attribution train --arm A --seed S`, then `evaluate --arm A --seed S`). Stages work in
the folder they are handed: the pipeline makes the seed folders (`run.seeds.stage_where`).
Before any stage, `preflight` checks what would fail late (benchmark tasks and their imports, SAE ids,
dataset config names) and refuses with one line.
`experiment.yaml` is written once every stage has accepted the config (reused or built it): a run
refused by a stage leaves the previous one in place; beside it `overrides.yaml` records the config file,
its `--set` overrides and the command line given. `plan_experiment` walks the same stages and says what a
run would build, reuse or find stale, running nothing (`run.plan`).

`launcher.kind` (`run.launcher`) says where those (arm, seed) units run: `inline`, one after another
in this process; `local` / `slurm`, each as its own job (`run_unit`) through submitit, after every
shared stage and each seed's selection ran here, and before the report. A unit whose folders are
finished is checked here (reused, or refused when its config changed), so only missing units become jobs.
"""

from __future__ import annotations

import time
from pathlib import Path

from playpen_attribution.attribution.arms import plan_arms
from playpen_attribution.config import ExperimentConfig
from playpen_attribution.core.yaml_config import dump
from playpen_attribution.log import logger
from playpen_attribution.preflight import preflight
from playpen_attribution.run import artifacts, stage_table
from playpen_attribution.run.launcher import Job, run_jobs
from playpen_attribution.run.plan import Decision, planning
from playpen_attribution.run.seeds import stage_where
from playpen_attribution.stages import (
    attribute,
    base_model,
    baselines,
    data,
    evaluate,
    predict,
    report,
    sae,
    select,
    train,
)


def base_adapter_stages(cfg: ExperimentConfig, where: Path, overwrite: bool) -> None:
    """Base adapter, attribution, baselines, SAE predictor and the base adapter's evaluation (the stage
    table's BASE rows), in `where`: the run directory, or a seed's folder with `sweep.retrain_base`."""
    train.run(cfg, where, overwrite=overwrite)                        # LoRA on the whole pool
    attribute.run(cfg, where, overwrite=overwrite)                    # scores under the base adapter
    if baselines.needed(cfg):                                         # loss / embedding rankings
        baselines.run(cfg, where, overwrite=overwrite)
    if cfg.sae is not None:                                           # SAE features: one forward pass
        sae.run(cfg, where, overwrite=overwrite)
        if cfg.predict is not None:                                   # attribution forecast -> sae_top_k
            predict.run(cfg, where, overwrite=overwrite)
    evaluate.run(cfg, where, model="base_adapter", overwrite=overwrite)


def _base_per_seed(cfg: ExperimentConfig) -> bool:
    """Whether the base-adapter stages run in each seed's folder (else once, in the run directory)."""
    return stage_table.per_seed(stage_table.TRAIN_BASE, cfg.sweep.retrain_base)


def _unit_done(seed_dir: Path, arm: str) -> bool:
    return all(artifacts.is_stage_folder(seed_dir / name)
               for name in (artifacts.train_arm_dir(arm), artifacts.eval_dir(arm)))


def _eta(durations: list[float], to_build: int) -> str:
    if not durations:
        return f"{to_build} (arm, seed) trainings to build; estimate after the first"
    mean = sum(durations) / len(durations)
    return f"about {mean * to_build:.0f} s left ({to_build} to build, {mean:.1f} s each on average so far)"


def run_unit(cfg: ExperimentConfig, run_dir: Path, seed: int, arm: str, overwrite: bool = False) -> None:
    """One (arm, seed): the arm's training and evaluation in the seed's folder (what a launcher job runs)."""
    seed_cfg, seed_dir = stage_where(cfg, run_dir, stage_table.TRAIN_ARM, seed)
    train.run(seed_cfg, seed_dir, arm=arm, overwrite=overwrite)
    evaluate.run(seed_cfg, seed_dir, model=arm, overwrite=overwrite)


def launch_sweep(cfg: ExperimentConfig, run_dir: Path, overwrite: bool = False) -> None:
    """Per seed the shared stages here, then every missing (arm, seed) as a job of `cfg.launcher`."""
    jobs = []
    for seed in cfg.seeds:
        seed_cfg, seed_dir = stage_where(cfg, run_dir, stage_table.SELECT, seed)
        if _base_per_seed(cfg):
            base_adapter_stages(seed_cfg, seed_dir, overwrite)
        select.run(seed_cfg, seed_dir, overwrite=overwrite)
        for arm in (planned.name for planned in plan_arms(cfg.select, cfg.attribute.methods)):
            if _unit_done(seed_dir, arm) and not overwrite:
                run_unit(cfg, run_dir, seed, arm)  # reused (or refused, if its config changed) right here
            else:
                jobs.append(Job(f"{arm}, seed {seed}", run_unit, (cfg, Path(run_dir).resolve(), seed, arm, overwrite)))
    logger.info("[sweep] %d of %d (arm, seed) units to build as %s jobs", len(jobs),
                len(cfg.seeds) * len(plan_arms(cfg.select, cfg.attribute.methods)), cfg.launcher.kind)
    run_jobs(cfg.launcher, jobs, run_dir / artifacts.JOBS)


def run_sweep(cfg: ExperimentConfig, run_dir: Path, overwrite: bool = False) -> None:
    """Per seed: the selection, then each arm's training and evaluation, logging progress and time left."""
    if cfg.launcher.kind != "inline":
        return launch_sweep(cfg, run_dir, overwrite)
    plan = plan_arms(cfg.select, cfg.attribute.methods)
    units = [(seed, arm.name) for seed in cfg.seeds for arm in plan]
    durations: list[float] = []
    for index, (seed, arm) in enumerate(units):
        seed_cfg, seed_dir = stage_where(cfg, run_dir, stage_table.SELECT, seed)
        if arm == plan[0].name:
            if _base_per_seed(cfg):
                base_adapter_stages(seed_cfg, seed_dir, overwrite)
            select.run(seed_cfg, seed_dir, overwrite=overwrite)
        fresh = not _unit_done(seed_dir, arm)
        to_build = sum(not _unit_done(run_dir / artifacts.seed_dir(s), a) for s, a in units[index:])
        logger.info("[sweep] %s, seed %s (%d/%d): %s; %s", arm, seed, index + 1, len(units),
                    "training + evaluation" if fresh else "finished before, reusing", _eta(durations, to_build))
        started = time.perf_counter()
        train.run(seed_cfg, seed_dir, arm=arm, overwrite=overwrite)
        evaluate.run(seed_cfg, seed_dir, model=arm, overwrite=overwrite)
        if fresh:
            durations.append(time.perf_counter() - started)


def run_experiment(cfg: ExperimentConfig, run_dir: Path, overwrite: bool = False, origin: dict | None = None) -> Path:
    """Run (or resume) every stage; returns the report folder. `origin` (config file, overrides, command
    line) is recorded beside experiment.yaml."""
    run_dir = Path(run_dir)
    preflight(cfg)                                                    # benchmark tasks, SAE ids, dataset configs
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data.run(cfg, run_dir, overwrite=overwrite)                       # rows and splits, dropped rows counted
    base_model.run(cfg, run_dir, overwrite=overwrite)                 # tiny model for the offline demo only
    evaluate.run(cfg, run_dir, model="base", overwrite=overwrite)
    if not _base_per_seed(cfg):                                       # one base adapter shared by every seed
        base_adapter_stages(cfg, run_dir, overwrite)
    run_sweep(cfg, run_dir, overwrite)                                # arms x seeds
    artifacts.write_experiment_config(run_dir, dump(cfg))            # every stage accepted this config
    if origin is not None:
        artifacts.write_overrides(run_dir, dump(origin))
    report_dir = report.run(cfg, run_dir)                             # also copied to the run dir, its front page
    logger.info("experiment finished in %.1f s; report: %s", time.perf_counter() - started, run_dir / artifacts.REPORT_MD)
    control = artifacts.load_report(report_dir).get("control")
    if control is not None:
        (logger.info if control["passed"] else logger.error)(
            "control %s: expected %s, found %s", "PASSED" if control["passed"] else "FAILED", control["expect"],
            control["found"])
    return report_dir


def plan_experiment(cfg: ExperimentConfig, run_dir: Path) -> list[Decision]:
    """What `run_experiment` would do with every stage folder, in its order, without running anything."""
    run_dir = Path(run_dir)
    with planning() as plan:
        data.run(cfg, run_dir)
        base_model.run(cfg, run_dir)
        evaluate.run(cfg, run_dir, model="base")
        if not _base_per_seed(cfg):
            base_adapter_stages(cfg, run_dir, False)
        for seed in cfg.seeds:  # the seed folders as seed_folder names them, not made
            seed_cfg, seed_dir = cfg.for_seed(seed), run_dir / artifacts.seed_dir(seed)
            if _base_per_seed(cfg):
                base_adapter_stages(seed_cfg, seed_dir, False)
            select.run(seed_cfg, seed_dir)
            for arm in plan_arms(cfg.select, cfg.attribute.methods):
                train.run(seed_cfg, seed_dir, arm=arm.name)
                evaluate.run(seed_cfg, seed_dir, model=arm.name)
    return [*plan.decisions.values(), Decision(run_dir / artifacts.REPORT, "build", "rebuilt on every run")]
