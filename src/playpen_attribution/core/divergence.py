"""Stop a training that diverges, in one line, instead of finishing it with NaN weights.

`DivergenceStop` is a transformers `TrainerCallback`. After every optimizer step it checks that the
trainable weights (the LoRA matrices: cheap) are finite, and at every logging step that the logged loss
and gradient norm are finite, the loss has not exploded (above `EXPLODED` times the first logged loss)
and the gradient has not vanished while the loss is not zero (far too high a learning rate can saturate
a small model into a constant output: finite, but dead). Otherwise it raises `Diverged`, a UserError naming the stage being built, the seed and the step,
so the training stage ends without a finished folder (the CLI exits 2). The trainer's own NaN filter
(`logging_nan_inf_filter`) hides a NaN loss from the log (it logs the previous mean, or 0.0), which is
why the weights are checked too.
"""

from __future__ import annotations

import math

from transformers import TrainerCallback

from playpen_attribution.core.interruption import where
from playpen_attribution.errors import UserError

EXPLODED = 10.0
"""A logged loss above this many times the first logged loss has exploded (cross-entropy that high means
the model is confidently wrong about almost every token)."""


class Diverged(UserError):
    """The training diverged; the message names the stage, seed and step."""


class DivergenceStop(TrainerCallback):
    """Raise `Diverged` at the first optimizer step with a non-finite weight, or the first logging step with
    a non-finite or exploded loss or a non-finite gradient norm. `seed` is the training's seed (named in the
    message)."""

    def __init__(self, seed: int):
        self.seed = seed
        self.first_loss: float | None = None

    def _stop(self, step: int, why: str) -> None:
        stage = where() or "training"
        raise Diverged(f"training diverged in {stage} (seed {self.seed}) at step {step}: {why}; the stage is not "
                       "finished (lower the learning rate, train.learning_rate or arm_train.learning_rate)")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        import torch

        params = [p for p in model.parameters() if p.requires_grad] if model is not None else []
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            self._stop(state.global_step, "a trainable weight is not finite after the optimizer step")

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        loss, grad_norm = logs.get("loss"), logs.get("grad_norm")
        if grad_norm is not None and not math.isfinite(grad_norm):
            self._stop(state.global_step, f"gradient norm {grad_norm} (loss {loss})")
        if grad_norm == 0 and loss:
            self._stop(state.global_step, f"gradient norm 0 at loss {loss:.4g}: the weights no longer change the "
                       "output (the model collapsed)")
        if loss is None:
            return
        if not math.isfinite(loss):
            self._stop(state.global_step, f"loss {loss}")
        if self.first_loss is None:
            self.first_loss = loss
        elif self.first_loss > 0 and loss > EXPLODED * self.first_loss:
            self._stop(state.global_step, f"loss {loss:.4g}, more than {EXPLODED:g} times the first logged "
                       f"loss {self.first_loss:.4g}")
