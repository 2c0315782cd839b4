"""The whole experiment, stage by stage, in the order the data flows.

    data -> model -> eval_base
         -> train_base -> attribute -> baselines (only when an arm ranks by loss or embedding)
         -> sae -> predict (only with `sae` / `predict` sections; feeds the sae_top_k arm) -> eval_base_adapter
         -> for each sweep seed, in seed_<s>/: select -> for each arm: train_<arm> -> eval_<arm>
         -> report

With `sweep.retrain_base` the base-adapter stages move into each seed's folder. Every stage folder is
reused when its config and inputs are unchanged, so an interrupted sweep resumes with the first
(arm, seed) that has no finished folder, and each (arm, seed) could run as its own job
(`playpen-attribution train --arm A --seed S`, then `evaluate --model A --seed S`).
"""

from __future__ import annotations

import time
from pathlib import Path

from playpen_attribution import artifacts, sweep
from playpen_attribution.config import ExperimentConfig, to_yaml
from playpen_attribution.log import logger
from playpen_attribution.stages import attribute, base_model, baselines, data, evaluate, predict, report, sae, select, train


def base_adapter_stages(cfg: ExperimentConfig, run_dir: Path, model_path: str, seed: int | None, overwrite: bool) -> None:
    """Base adapter, attribution, baselines and the base adapter's evaluation: in the run dir, or a seed's."""
    where = run_dir if seed is None else sweep.seed_run_dir(cfg, run_dir, seed)
    train.run(cfg, where, model_path, overwrite=overwrite)            # LoRA on the whole pool
    attribute.run(cfg, where, model_path, overwrite)                  # scores under the base adapter
    if baselines.needed(cfg):                                         # loss / embedding rankings
        baselines.run(cfg, where, model_path, overwrite)
    if cfg.sae is not None:                                           # SAE features: one forward pass
        sae.run(cfg, where, model_path, overwrite)
        if cfg.predict is not None:                                   # attribution forecast -> sae_top_k
            predict.run(cfg, where, overwrite)
    evaluate.run(cfg, run_dir, model_path, "base_adapter", artifacts.TRAIN_BASE, overwrite, seed=seed)


def _unit_done(seed_dir: Path, arm: str) -> bool:
    return all((seed_dir / name / artifacts.MANIFEST_FILE).is_file()
               for name in (artifacts.train_arm_dir(arm), artifacts.eval_dir(arm)))


def _eta(durations: list[float], to_build: int) -> str:
    if not durations:
        return f"{to_build} (arm, seed) trainings to build; estimate after the first"
    mean = sum(durations) / len(durations)
    return f"about {mean * to_build:.0f} s left ({to_build} to build, {mean:.1f} s each on average so far)"


def run_sweep(cfg: ExperimentConfig, run_dir: Path, model_path: str, overwrite: bool = False) -> None:
    """Per seed: the selection, then each arm's training and evaluation, logging progress and time left."""
    seeds, plan = sweep.seeds_of(cfg), cfg.select.plan()
    units = [(seed, arm.name) for seed in seeds for arm in plan]
    durations: list[float] = []
    for index, (seed, arm) in enumerate(units):
        seed_cfg, seed_dir = sweep.seed_config(cfg, seed), sweep.seed_run_dir(cfg, run_dir, seed)
        if arm == plan[0].name:
            if cfg.sweep.retrain_base:
                base_adapter_stages(seed_cfg, run_dir, model_path, seed, overwrite)
            select.run(cfg, run_dir, model_path, overwrite, seed=seed)
        fresh = not _unit_done(seed_dir, arm)
        to_build = sum(not _unit_done(run_dir / artifacts.seed_dir(s), a) for s, a in units[index:])
        logger.info("[sweep] %s, seed %s (%d/%d): %s; %s", arm, seed, index + 1, len(units),
                    "training + evaluation" if fresh else "finished before, reusing", _eta(durations, to_build))
        started = time.perf_counter()
        train.run(seed_cfg, seed_dir, model_path, arm=arm, overwrite=overwrite)
        evaluate.run(seed_cfg, run_dir, model_path, arm, artifacts.train_arm_dir(arm), overwrite, seed=seed)
        if fresh:
            durations.append(time.perf_counter() - started)


def run_experiment(cfg: ExperimentConfig, run_dir: Path, overwrite: bool = False) -> Path:
    """Run (or resume) every stage; returns the report folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "experiment.yaml").write_text(to_yaml(cfg))
    started = time.perf_counter()
    data.run(cfg, run_dir, overwrite)                       # rows and splits, dropped rows counted
    base_model.run(cfg, run_dir, overwrite)                 # tiny model for the offline demo only
    model_path = base_model.model_path(cfg, run_dir)
    evaluate.run(cfg, run_dir, model_path, "base", None, overwrite)
    if not cfg.sweep.retrain_base:                          # one base adapter shared by every seed
        base_adapter_stages(cfg, run_dir, model_path, None, overwrite)
    run_sweep(cfg, run_dir, model_path, overwrite)          # arms x seeds
    report_dir = report.run(run_dir, cfg.name)              # also copied to the run dir, its front page
    logger.info("experiment finished in %.1f s; report: %s", time.perf_counter() - started, run_dir / artifacts.REPORT_MD)
    return report_dir
