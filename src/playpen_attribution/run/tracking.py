"""Experiment tracking: the `tracking` config section and what it hands the trainer.

`tracking.backend` sends every training's logged metrics (loss, learning rate, gradient norm per
logging step; they also go to `train_log.json` whatever the backend) through the trainer's own
integrations (`report_to`): TensorBoard event files in `<run_dir>/tracking/<stage>` (`seed_<s>/<stage>`
for an arm; `tensorboard --logdir <run_dir>/tracking`), Weights & Biases in offline mode unless
`WANDB_MODE` says otherwise (runs under `<run_dir>/tracking/wandb`, `wandb sync` uploads them),
trackio's local store. Each training is one tracked run named `<run_name>/<stage>`. With wandb, lm-eval's
own logger also sends each evaluation's benchmark results (`benchmark_logging`; lm-eval has no logger for
the other two). Tracking is not part of any stage's fingerprint: turning it on or off retrains nothing.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from playpen_attribution.core.section import Section
from playpen_attribution.errors import UserError

PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "trackio": ("trackio",)}
"""Backend -> the packages (any one of them) the trainer's integration needs."""


class TrackingConfig(Section):
    """Where training curves go besides `train_log.json`."""

    backend: Literal["none", "tensorboard", "wandb", "trackio"] = Field(
        "none", description="none; tensorboard (event files in <run_dir>/tracking); wandb (offline unless WANDB_MODE "
        "is set); trackio (its local store).",
    )
    project: str | None = Field(None, description="wandb / trackio project; null = the config's name.")
    run_name: str | None = Field(None, description="Prefix of each training's run name (<run_name>/<stage>); "
                                 "null = the config's name.")


def trainer_reporting(tracking: TrackingConfig, tracking_dir: Path, stage: str, name: str) -> dict:
    """SFTConfig keywords that report one training (`stage`: `train_base`, `seed_1/train_top_k`, ...) to
    the backend; `{"report_to": "none"}` without one. `tracking_dir` is the run's `tracking/` folder."""
    backend = tracking.backend
    if backend == "none":
        return {"report_to": "none"}
    if not any(importlib.util.find_spec(p) for p in PACKAGES[backend]):
        raise UserError(f"tracking.backend = {backend!r} needs the {PACKAGES[backend][0]} package "
                        f"(uv sync --extra tracking, or pip install {PACKAGES[backend][0]})")
    run_name = f"{tracking.run_name or name}/{stage}"
    project = tracking.project or name
    if backend == "tensorboard":
        # transformers 5 takes the event folder from the environment when the trainer is created
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(tracking_dir / stage)
        return {"report_to": "tensorboard", "run_name": run_name}
    if backend == "wandb":
        _fresh_wandb(tracking_dir, project)
        return {"report_to": "wandb", "run_name": run_name}
    return {"report_to": "trackio", "run_name": run_name, "project": project}


def benchmark_logging(tracking: TrackingConfig, tracking_dir: Path, stage: str, name: str) -> dict | None:
    """`wandb.init` arguments for lm-eval's own logger of benchmark results (`WandbLogger`: wandb is the one
    tracker lm-eval logs to) with `tracking.backend: wandb`; None otherwise."""
    if tracking.backend != "wandb":
        return None
    project = tracking.project or name
    _fresh_wandb(tracking_dir, project)
    return {"project": project, "name": f"{tracking.run_name or name}/{stage}", "dir": str(tracking_dir),
            "job_type": "eval"}


def _fresh_wandb(tracking_dir: Path, project: str) -> None:
    """Offline by default, under `tracking_dir`, with no run left open (the trainer and lm-eval's logger
    would log into the previous one)."""
    import wandb

    if wandb.run is not None:
        wandb.finish()
    tracking_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ["WANDB_DIR"] = str(tracking_dir)
    os.environ["WANDB_PROJECT"] = project
