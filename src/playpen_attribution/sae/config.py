"""Config sections of the SAE-fingerprint stages: `sae` (feature extraction) and `predict` (regressor).

Validated data only; building a config never touches disk, network or the SAE itself. What can only
be checked against the model or the SAE (width, layer range) is checked when the stage runs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SaeConfig(BaseModel):
    """Run the model up to block `layer`, encode the residual stream with an SAE, pool per row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    release: str = Field(
        "random",
        description="SAELens release (e.g. gemma-scope-2-1b-it-res), a folder saved by SAELens `save_model`, "
        "or 'random' for a randomly initialised JumpReLU SAE (tests, demo).",
    )
    sae_id: str | None = Field(
        None, description="SAE id inside the release (e.g. layer_17_width_16k_l0_small); null for random or a folder."
    )
    layer: int | None = Field(
        None, ge=0,
        description="Block L whose output (blocks.L.hook_resid_post) is encoded; required for random, "
        "otherwise read from the SAE's hook name (and must agree when given).",
    )
    d_sae: int = Field(256, gt=0, description="Width of the random SAE (release: random only).")
    seed: int = Field(0, description="Seed of the random SAE's initialisation (release: random only).")
    model: Literal["base", "base_adapter"] = Field(
        "base", description="base: the model the SAE was trained on; base_adapter: base + train_base/adapter."
    )
    split: str = Field("train_base", description="Split of data/ whose rows get features (the pool by default).")
    max_tokens: int | None = Field(
        None, gt=1,
        description="Token cap per row: only the first max_tokens tokens are run (null = tokenize.max_length).",
    )
    pool: Literal["all", "prompt", "completion"] = Field(
        "all", description="Which token positions are pooled: all, prompt (labels -100) or completion (labels set)."
    )
    batch_size: int = Field(16, gt=0, description="Rows per forward batch (right padded, sorted by length).")
    batch_tokens: int | None = Field(
        None, gt=0,
        description="Padded tokens per forward batch: rows sorted by length fill a batch up to this many tokens "
        "(and at most batch_size rows); a longer row runs alone. null = batch_size rows per batch.",
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Model weights dtype for the forward pass: auto = bfloat16 on a CUDA GPU, float32 on "
        "CPU (the SAE always runs in float32)."
    )

    @model_validator(mode="after")
    def _check_release(self) -> SaeConfig:
        if self.release == "random" and self.layer is None:
            raise ValueError("release 'random' needs a layer (the block whose output is encoded)")
        if self.release == "random" and self.sae_id is not None:
            raise ValueError(f"sae_id = {self.sae_id!r} given with release 'random'; expected null")
        return self


class PredictConfig(BaseModel):
    """A ridge regressor from SAE features to the attribution target, cross-fitted over groups."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: Literal["rank", "score"] = Field(
        "rank", description="rank: attribution percentile in (0, 1], 1 = top row; score: the raw attribution score."
    )
    group_key: str = Field(
        "group_id", description="Row column whose values never straddle two folds (GroupKFold): each row's "
        "prediction comes from a model that saw no row of its group.",
    )
    folds: int = Field(5, ge=2, description="Grouped folds of the cross-fitting: each fold is predicted by a "
                       "model fitted on the others.")
    cv_folds: int = Field(5, ge=2, description="Grouped folds (inside each fit) RidgeCV uses to choose the regularisation.")
    alphas: list[float] = Field(
        default_factory=lambda: [10.0**e for e in range(-3, 6)],
        min_length=1, description="Candidate ridge regularisation strengths.",
    )
    projection_dim: int | None = Field(
        None, gt=0,
        description="Sparse random projection of the per-feature means to this width (null = use all d_sae columns).",
    )
    top_fraction: float = Field(
        0.2, gt=0, lt=1, description="k of the top-k overlap and AUROC, as a share of the scored rows."
    )
    seed: int = Field(0, description="Seed of the random projection.")

    @model_validator(mode="after")
    def _check_alphas(self) -> PredictConfig:
        bad = [a for a in self.alphas if a <= 0]
        if bad:
            raise ValueError(f"alphas must be > 0, got {bad}")
        return self
