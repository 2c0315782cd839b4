"""Config sections of the SAE-fingerprint stages: `sae` (feature extraction) and `predict` (the predictors).

Validated data only; building a config never touches disk, network or the SAE itself. What can only
be checked against the model or the SAE (width, layer range) is checked when the stage runs.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from playpen_attribution.core.section import Section

PREDICTOR_VARIANT = re.compile(r"^(sae|sae_topk|sae_logistic|sae@(\d+))$")
"""The SAE predictor variants `predict.model` may name (sae@<L>: the sae design on an extra layer L)."""


class SaeConfig(Section):
    """Run the model up to block `layer`, encode the residual stream with an SAE, pool per row."""

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
    top_k_features: int = Field(
        256, gt=0, description="K of the top-K feature pooling: per row the K features of largest mean activation "
        "(ids and values; capped at d_sae), the design of the sae_topk predictor.",
    )
    extra_layers: list[int] = Field(
        default_factory=list,
        description="More blocks encoded in the same forward pass (release: random only; each by the random SAE "
        "`layer: L` would build), written to sae/layer_<L>/ and evaluated as predictor sae@<L>.",
    )

    extra_sae_ids: list[str] = Field(
        default_factory=list,
        description="More SAEs encoded in the same forward pass, for a SAELens release or folder (extra_layers is "
        "the random SAEs' form): with sae_id set, more ids of the same release (e.g. GemmaScope's "
        "layer_12_width_16k_l0_small beside layer_17_...); with a folder release, more SAELens folders. Each SAE's "
        "block L comes from its hook; it is written to sae/layer_<L>/ and evaluated as predictor sae@<L>.",
    )

    probe_layers: list[int] = Field(
        default_factory=list,
        description="Blocks whose raw residual the probe study reads (last token, mean, first response token), "
        "hooked in the same forward pass; the predict stage fits raw and length-residualised probes on them. "
        "Empty = no study.",
    )

    def extra_saes(self) -> list[SaeConfig]:
        """One sae section per extra SAE (extra_layers or extra_sae_ids), each naming just that SAE."""
        plain: dict[str, list] = {"extra_layers": [], "extra_sae_ids": []}
        if self.release == "random":
            return [self.model_copy(update=plain | {"layer": layer}) for layer in self.extra_layers]
        if self.sae_id is not None:
            return [self.model_copy(update=plain | {"sae_id": sae_id, "layer": None}) for sae_id in self.extra_sae_ids]
        return [self.model_copy(update=plain | {"release": folder, "layer": None}) for folder in self.extra_sae_ids]

    @model_validator(mode="after")
    def _check_release(self) -> SaeConfig:
        if self.release == "random" and self.layer is None:
            raise ValueError("release 'random' needs a layer (the block whose output is encoded)")
        if self.release == "random" and self.sae_id is not None:
            raise ValueError(f"sae_id = {self.sae_id!r} given with release 'random'; expected null")
        if self.extra_layers and self.release != "random":
            raise ValueError(f"extra_layers = {self.extra_layers} needs release 'random': a SAELens release has one "
                             "SAE per sae_id, so name the other layers' SAEs in extra_sae_ids")
        if self.extra_sae_ids and self.release == "random":
            raise ValueError(f"extra_sae_ids = {self.extra_sae_ids} with release 'random': random SAEs of other "
                             "blocks are named by extra_layers")
        known = [self.sae_id if self.sae_id is not None else self.release, *self.extra_sae_ids]
        if len(set(known)) != len(known):
            raise ValueError(f"extra_sae_ids = {self.extra_sae_ids}: expected distinct SAEs other than the main one")
        bad = [layer for layer in self.extra_layers if layer < 0]
        if bad or len(set(self.extra_layers)) != len(self.extra_layers) or self.layer in self.extra_layers:
            raise ValueError(f"extra_layers = {self.extra_layers}: expected distinct blocks >= 0 other than "
                             f"layer = {self.layer}")
        if any(layer < 0 for layer in self.probe_layers) or len(set(self.probe_layers)) != len(self.probe_layers):
            raise ValueError(f"probe_layers = {self.probe_layers}: expected distinct blocks >= 0")
        return self


class PredictConfig(Section):
    """Predictors of attribution from SAE features (and baselines), cross-fitted over groups."""

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
    model: str = Field(
        "sae", description="The variant whose cross-fitted predictions are `predicted` (the sae_top_k ranking), "
        "the saved predictor and the candidates' `predicted`: sae, sae_topk, sae_logistic or sae@<L> "
        "(L in sae.extra_layers, or the block of an SAE in sae.extra_sae_ids).",
    )
    probe_pooling: Literal["mean", "last_token"] = Field(
        "mean", description="The residual probe's input: mean = the residual averaged over the pooled tokens; "
        "last_token = the residual at each row's last pooled token.",
    )
    cs: list[float] = Field(
        default_factory=lambda: [10.0**e for e in range(-4, 3)], min_length=1,
        description="Candidate inverse regularisation strengths C of the top-decile logistic classifier (sae_logistic).",
    )

    @model_validator(mode="after")
    def _check_alphas(self) -> PredictConfig:
        bad = [a for a in self.alphas if a <= 0] + [c for c in self.cs if c <= 0]
        if bad:
            raise ValueError(f"alphas and cs must be > 0, got {bad}")
        if not PREDICTOR_VARIANT.match(self.model):
            raise ValueError(f"model = {self.model!r}: expected sae, sae_topk, sae_logistic or sae@<L>")
        return self
