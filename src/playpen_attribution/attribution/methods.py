"""Which attribution estimator scores the pool: names, each method's options, and how columns become a score.

`attribute.method` (or several, `attribute.methods`) picks one of `METHODS`:

- `gradient_cosine`: the tool's own recipe (`attribution.scoring`): Bergson build + score of the
  per-row gradients, preconditioned by the query's autocorrelation Hessian, cosine scores; its options
  are `attribute:`'s own fields (projection_dim, preconditioning, unit_normalize, ...).
- `trackstar`: Bergson's `Trackstar` pipeline (pool and query autocorrelation Hessians, mixed with an
  automatic coefficient, query index, score); options `TrackstarOptions`.
- `ekfac`: Bergson's `Ekfac` pipeline (`hessian_pipeline`: K-FAC factors fitted on the pool with
  the eigenvalue correction, the inverse applied to each query gradient, score); options `EkfacOptions`.
- `trak`: Bergson's `Trak` pipeline (the log-odds gradients globally projected, whitened by the pool's
  Gram inverse, scores weighted by 1 - p per pool row); options `TrakOptions`.
- `magic`: refused (`MAGIC_REFUSAL`): MAGIC differentiates through Bergson's own training run, which
  cannot replay the LoRA fine-tune TRL ran.

Every method scores each pool row against each query row (one column per query row); `reduce_columns`
turns those columns into one score per row under `attribute.mode`, the same way for every method.
Defaults are Bergson 2.5's own. Pure logic: the Bergson runs are in `attribution.bergson_methods`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from playpen_attribution.core.section import Section

Method = Literal["gradient_cosine", "trackstar", "ekfac", "trak", "magic"]
METHODS = ("gradient_cosine", "trackstar", "ekfac", "trak", "magic")
DEFAULT_METHOD = "gradient_cosine"

MAGIC_REFUSAL = (
    "attribute.method magic is not supported: MAGIC (and Bergson's approximate unrolling) replays the training "
    "it attributes with Bergson's own trainer (its AdamW, data order, schedule and saved checkpoints), which cannot "
    "follow the LoRA fine-tune TRL's SFTTrainer ran for train_base (its sampler, optimizer and loss-flattening "
    "schedule; no intermediate checkpoints); use gradient_cosine, trackstar, ekfac or trak"
)
"""Why `magic` is refused at config validation (one line)."""


class TrackstarOptions(Section):
    """Bergson `trackstar` (Chang et al. 2024): per-module projected gradients, mixed autocorrelation Hessian."""

    projection_dim: int = Field(16, gt=0, description="Per-module random projection size (each module: this squared).")
    mix_hessians: bool = Field(
        True, description="Mix the query and pool Hessians (automatic coefficient); false = the pool Hessian alone.")
    target_downweight_components: int = Field(
        1000, gt=0, description="Gradient components the automatic mixing coefficient downweights (§A.1.3).")
    stats_sample_size: int | None = Field(
        10_000, gt=0, description="Rows each Hessian is fitted on (the first n); null = all.")
    unit_normalize: bool = Field(
        False, description="Unit-normalise the preconditioned gradients (cosine, as in the paper); Bergson's default off.")


class EkfacOptions(Section):
    """Bergson `ekfac`: a Kronecker-factored Hessian fitted on the pool, its inverse applied to each query gradient."""

    hessian: Literal["kfac", "tkfac", "shampoo"] = Field(
        "kfac", description="Factored Hessian approximation (kfac = K-FAC factors).")
    ev_correction: bool = Field(
        True, description="Eigenvalue correction of the factors (EK-FAC); false = plain K-FAC.")
    damping_factor: float = Field(0.1, ge=0, description="Damping of the inverse, relative to the mean eigenvalue.")
    projection_dim: int = Field(
        0, ge=0, description="Random projection of the preconditioned gradients before the dot product; 0 = exact.")


class TrakOptions(Section):
    """Bergson `trak` (Park et al. 2023): globally projected log-odds gradients, Gram-whitened, (1 - p) weighted."""

    projection_dim: int = Field(16, gt=0, description="Size of the one global random projection of each gradient.")
    damping_factor: float = Field(0.0, ge=0, description="Damping of the Gram inverse, relative to its mean eigenvalue.")
    stats_sample_size: int | None = Field(None, gt=0, description="Pool rows the Gram is fitted on; null = all.")


def reduce_columns(matrix: np.ndarray, mode: str, groups: list[str] | None = None) -> np.ndarray:
    """One score per row from `[n_pool, n_query]` per-query scores: mean (mean, individual), max (nearest),
    or the mean within each query group then the max over groups (group_mean_max). NaN propagates."""
    if mode == "nearest":
        return matrix.max(axis=1)
    if mode == "group_mean_max":
        if groups is None or len(groups) != matrix.shape[1]:
            raise ValueError("group_mean_max needs one group per query column")
        names = sorted(set(groups))
        labels = np.array([names.index(g) for g in groups])
        means = np.stack([matrix[:, labels == i].mean(axis=1) for i in range(len(names))], axis=1)
        return means.max(axis=1)
    return matrix.mean(axis=1)
