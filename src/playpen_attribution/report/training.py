"""Did a training finish learning? A summary of one `train_log.json`. Pure functions, no files.

`training_summary(log)` reads the trainer's logged steps (loss and TRL's `mean_token_accuracy` per
logging step) and says where the training ended: `final_loss` and `token_accuracy` (means over the
last quarter of the logged steps, so one noisy batch does not decide them) and `converged`, whether the
loss had stopped falling: the last quarter's mean is below the third quarter's by at most
`PLATEAU_SHARE` of the whole drop from the first logged loss. An arm that learns the answer format
only as the schedule runs out (its loss still falling steeply at the end) is flagged, because then a
comparison reads how far the schedule got, not what the rows teach.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

PLATEAU_SHARE = 0.05
"""The last quarter may still lower the loss by at most this share of the whole drop."""
MIN_LOGGED_STEPS = 8
"""Fewer logged steps than this give no convergence verdict (None)."""


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class TrainingSummary:
    """Where one training ended: its last step, how many losses it logged, the last quarter's mean loss and
    token accuracy, and whether the loss had stopped falling (None with too few logged steps)."""

    steps: int
    logged: int
    final_loss: float | None
    token_accuracy: float | None
    late_drop: float | None = None
    converged: bool | None = None


def training_summary(log: list[dict]) -> TrainingSummary:
    """The summary of one training's logged steps."""
    losses = [float(e["loss"]) for e in log if e.get("loss") is not None and math.isfinite(float(e["loss"]))]
    accuracy = [float(e["mean_token_accuracy"]) for e in log if e.get("mean_token_accuracy") is not None]
    quarter = max(1, len(losses) // 4)
    out = TrainingSummary(steps=max((int(e.get("step", 0)) for e in log), default=0), logged=len(losses),
                          final_loss=_mean(losses[-quarter:]),
                          token_accuracy=_mean(accuracy[-quarter:]) if accuracy else None)
    if len(losses) < MIN_LOGGED_STEPS:
        return out
    third, last = _mean(losses[-2 * quarter:-quarter]), out.final_loss
    assert third is not None and last is not None, "both means are over at least MIN_LOGGED_STEPS // 4 losses"
    drop = losses[0] - last
    late_drop = (third - last) / drop if drop > 0 else 0.0
    return replace(out, late_drop=late_drop, converged=late_drop <= PLATEAU_SHARE)
