"""The `attribute:` config section: how Bergson scores the pool (validated data, no disk or network).

Every Bergson option the tool exposes is a field here; `attribution.bergson_runs.index_config` is the one
place that maps them onto Bergson's own config (`scoring` maps mode and preconditioning onto its commands).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from playpen_attribution.attribution.methods import (
    MAGIC_REFUSAL,
    EkfacOptions,
    Method,
    TrackstarOptions,
    TrakOptions,
)
from playpen_attribution.core.section import Section


class AttributeConfig(Section):
    """Gradient attribution of every pool row against the query set, through Bergson. `mode`, the loss and batch
    fields apply to every method; projection_dim, preconditioning, mixing_coefficient and unit_normalize are
    gradient_cosine's (the other methods' are in their own sections)."""

    mode: Literal["mean", "nearest", "individual", "group_mean_max"] = Field(
        "mean",
        description="mean: dot with the mean query gradient; nearest: max over query rows; individual: one "
        "score per query row (kept), mean as the score; group_mean_max: mean within query group_id, max over groups.",
    )
    preconditioning: Literal["none", "query", "mixed"] = Field(
        "query", description="none; query: the query gradients' second moments; mixed: query and pool second moments."
    )
    mixing_coefficient: float = Field(
        0.99, ge=0, le=1, description="mixed only: H = c*H_query + (1-c)*H_pool with c = this value."
    )
    projection_dim: int = Field(32, gt=0, description="Random projection width of each gradient.")
    unit_normalize: bool = Field(True, description="Unit-normalise gradients before scoring (cosine).")
    loss_reduction: Literal["sum", "mean"] = Field(
        "mean", description="A row's loss for its gradient: mean (as published) or sum over its completion tokens."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy label smoothing of that loss.")
    token_batch_size: Annotated[int, Field(gt=0)] | Literal["auto"] = Field(
        "auto",
        description="Tokens per Bergson batch (at least the longest row, at most the model's "
        "max_position_embeddings); auto = sized from free GPU memory on a GPU, min(max_position_embeddings, "
        "2048) on CPU, never below the longest tokenized row.",
    )
    cache_dir: str | None = Field(
        None,
        description="Folder of reusable query indexes keyed by content; None = $XDG_CACHE_HOME (or "
        "~/.cache)/playpen-attribution/query_index.",
    )
    nproc_per_node: int = Field(
        1, gt=0, description="Bergson worker processes per node (one per GPU; Gloo on CPU); 1 = in this process. "
        "Scores equal 1 process's to float tolerance; not part of the stage's fingerprint.",
    )
    nnode: int = Field(
        1, gt=0, description="Nodes Bergson spreads over; each node runs the attribute stage, its rank from "
        "SLURM_NODEID / GROUP_RANK / NODE_RANK, the rendezvous at MASTER_ADDR:MASTER_PORT.",
    )
    allow_untracked_modules: bool = Field(
        False,
        description="Score an adapter that trains modules in full (modules_to_save) although Bergson tracks only "
        "its LoRA modules, so the scores see part of what training changes (recorded and shown in the report).",
    )

    method: Method = Field(
        "gradient_cosine", description="The estimator: gradient_cosine (the fields above), trackstar, ekfac or trak "
        "(Bergson's pipelines, options in their sections); magic is refused (docs/attribution_methods.md).",
    )
    methods: list[Method] = Field(
        default_factory=list, description="Several estimators in one run, the first the main `attribution` ranking "
        "(and `method`); select builds top_k@<method> and its own matched_random_k@<method> for each; empty = `method`.",
    )
    trackstar: TrackstarOptions = Field(default_factory=TrackstarOptions, description="Options of method trackstar.")
    ekfac: EkfacOptions = Field(default_factory=EkfacOptions, description="Options of method ekfac.")
    trak: TrakOptions = Field(default_factory=TrakOptions, description="Options of method trak.")

    @model_validator(mode="before")
    @classmethod
    def _method_is_the_first_of_methods(cls, data):
        methods = data.get("methods") if isinstance(data, dict) else None
        if methods and isinstance(methods, list) and "method" not in data and methods[0] != "magic":
            data = {**data, "method": methods[0]}  # (a refused first method is named once, under methods)
        return data

    @field_validator("method")
    @classmethod
    def _no_magic(cls, method: str) -> str:
        if method == "magic":
            raise ValueError(MAGIC_REFUSAL)
        return method

    @field_validator("methods")
    @classmethod
    def _methods_once_no_magic(cls, methods: list[str]) -> list[str]:
        if "magic" in methods:
            raise ValueError(MAGIC_REFUSAL)
        if len(set(methods)) != len(methods):
            raise ValueError(f"methods = {methods} repeats a method")
        return methods

    @model_validator(mode="after")
    def _method_heads_methods(self) -> AttributeConfig:
        if self.methods and self.method != self.methods[0]:
            raise ValueError(f"method = {self.method!r} with methods = {self.methods}: the main method is methods' "
                             "first entry (leave method out)")
        return self
