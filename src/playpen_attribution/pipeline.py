"""The whole experiment, stage by stage, in the order the data flows.

data -> model -> train_base -> attribute -> select -> train_<arm> -> eval_<model> -> report.
Finished stages with the same config and inputs are reused, so an interrupted run resumes.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from playpen_attribution import artifacts
from playpen_attribution.config import ExperimentConfig, to_yaml
from playpen_attribution.log import logger
from playpen_attribution.stages import attribute, base_model, data, evaluate, report, select, train

ARMS = select.ARMS


def run_experiment(cfg: ExperimentConfig, run_dir: Path, overwrite: bool = False) -> Path:
    """Run (or resume) every stage; returns the report folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "experiment.yaml").write_text(to_yaml(cfg))
    started = time.perf_counter()
    data.run(cfg, run_dir, overwrite)                       # rows and splits, dropped rows counted
    base_model.run(cfg, run_dir, overwrite)                 # tiny model for the offline demo only
    model_path = base_model.model_path(cfg, run_dir)
    train.run(cfg, run_dir, model_path, overwrite=overwrite)  # base adapter on the whole pool
    attribute.run(cfg, run_dir, model_path, overwrite)      # scores under the base adapter
    select.run(cfg, run_dir, model_path, overwrite)         # top_k and matched_random_k
    for arm in ARMS:                                        # continue the base adapter on each arm
        train.run(cfg, run_dir, model_path, arm=arm, overwrite=overwrite)
    evaluate.run(cfg, run_dir, model_path, "base", None, overwrite)
    evaluate.run(cfg, run_dir, model_path, "base_adapter", artifacts.TRAIN_BASE, overwrite)
    for arm in ARMS:
        evaluate.run(cfg, run_dir, model_path, arm, artifacts.train_arm_dir(arm), overwrite)
    report_dir = report.run(run_dir, cfg.name, seed=cfg.arm_train.seed)
    for name in (artifacts.REPORT_MD, artifacts.REPORT_JSON, artifacts.ACCURACY_PLOT):
        shutil.copy2(report_dir / name, run_dir / name)   # the run's front page
    logger.info("experiment finished in %.1f s; report: %s", time.perf_counter() - started, run_dir / artifacts.REPORT_MD)
    return report_dir
