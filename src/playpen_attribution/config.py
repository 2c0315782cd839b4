"""The experiment config: validated data, one line of doc per field, no disk or network on build.

`load_config(path)` reads YAML and turns any validation problem into one `UserError` naming the
file, the field, the value and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from playpen_attribution.errors import UserError
from playpen_attribution.sae_config import PredictConfig, SaeConfig
from playpen_attribution.sources.clembench import ClembenchSource
from playpen_attribution.sources.generic import GenericSource
from playpen_attribution.sources.playpen_data import PlaypenDataSource
from playpen_attribution.sources.smoltalk import SmolTalkSource
from playpen_attribution.sources.synthetic import SyntheticAppend


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TinyModelConfig(_Section):
    """A tiny randomly initialised Llama built in code, with a word-level tokenizer trained on the pool."""

    hidden_size: int = Field(128, gt=0, description="Width of the residual stream.")
    num_layers: int = Field(2, gt=0, description="Number of transformer blocks.")
    num_heads: int = Field(4, gt=0, description="Attention heads (num_key_value_heads = heads // 2).")
    intermediate_size: int = Field(256, gt=0, description="MLP width.")
    max_position_embeddings: int = Field(256, gt=0, description="Longest sequence the model accepts.")
    seed: int = Field(0, description="Seed of the random initialisation.")


class ModelConfig(_Section):
    """Which base model every stage loads."""

    base: str = Field(
        "tiny",
        description="Hugging Face id or local folder of the base model, or 'tiny' to build one from `tiny`.",
    )
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig, description="Shape of the tiny model.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Weights dtype: auto = bfloat16 on a CUDA GPU, float32 on CPU."
    )


class TokenizeConfig(_Section):
    """The one tokenization rule shared by training, attribution, evaluation and SAE extraction."""

    format: Literal["raw", "chat_template"] = Field(
        "raw", description="raw: prompt text as is; chat_template: the prompt as a user turn of the tokenizer's template."
    )
    max_length: int = Field(
        256, gt=1, description="Longest row in tokens; longer rows lose prompt tokens from the left."
    )


class DemoSource(_Section):
    """The offline Taboo-WordGuesser-like demo task generated from the project's own lexicon."""

    kind: Literal["demo"] = "demo"
    n_train: int = Field(1500, gt=0, description="Rows in the training pool (train_base), aborted rows included.")
    n_query: int = Field(100, gt=0, description="Successful games in the attribution query set.")
    n_eval: int = Field(200, gt=0, description="Successful games in the eval set (seen targets, new clue sets).")
    failure_fraction: float = Field(0.33, ge=0, lt=1, description="Share of pool rows that carry a wrong guess.")
    aborted_fraction: float = Field(0.03, ge=0, lt=1, description="Share of pool rows from aborted games.")
    n_targets: int = Field(120, ge=10, description="How many lexicon words are used as targets.")


Source = DemoSource | PlaypenDataSource | ClembenchSource | SmolTalkSource | GenericSource


class DataConfig(_Section):
    """Where rows come from and how the data stage splits them."""

    source: Source = Field(
        default_factory=DemoSource, discriminator="kind",
        description="The data source (kind: demo, playpen_data, clembench, smoltalk, generic) and its options.",
    )
    synthetic: SyntheticAppend | None = Field(
        None, description="Synthetic rows (the synth command's output) appended to the training pool."
    )
    seed: int = Field(42, description="Seed for generation, sampling and splitting.")


class LoraSettings(_Section):
    """The LoRA adapter (PEFT)."""

    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names that get LoRA matrices.",
    )
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="Modules trained in full next to LoRA (the tiny demo trains embed_tokens and lm_head).",
    )


class TrainConfig(_Section):
    """LoRA supervised fine-tuning through TRL's SFTTrainer, completion-only loss."""

    lora: LoraSettings = Field(default_factory=LoraSettings, description="The adapter's shape.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate.")
    epochs: float = Field(3, gt=0, description="Passes over the data (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Optimizer steps; -1 = use epochs.")
    batch_size: int = Field(1, gt=0, description="Rows per device batch.")
    auto_batch: bool = Field(
        True,
        description="On a GPU: raise batch_size to the largest power of two dividing batch_size*grad_accum whose "
        "forward+backward on the longest rows fits in memory, and lower grad_accum to keep rows per optimizer "
        "step (so the same rows per step, fewer, larger batches); no effect on CPU or when grad_accum is 1.",
    )
    batching: Literal["padded", "length_grouped", "padding_free"] = Field(
        "length_grouped",
        description="padded: random batches padded to the longest row; length_grouped: batches of similar "
        "length (less padding, same loss); padding_free: rows concatenated with position_ids (fastest with "
        "flash attention).",
    )
    dataloader_workers: int = Field(2, ge=0, description="Worker processes feeding the GPU (0 on CPU).")
    grad_accum: int = Field(16, gt=0, description="Gradient accumulation steps.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps spent warming up.")
    scheduler: str = Field("cosine", description="transformers lr scheduler name (cosine, linear, constant...).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    seed: int = Field(42, description="Training seed (data order, dropout, LoRA init).")
    merge: bool = Field(False, description="Also write the adapter merged into a full model.")


class AttributeConfig(_Section):
    """Gradient attribution of every pool row against the query set, through Bergson."""

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
        "sum", description="A row's loss for its gradient: sum or mean over its completion tokens."
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


STANDARD_ARMS: dict[str, tuple[str, str | None]] = {
    "top_k": ("top", "attribution"),
    "matched_random_k": ("matched_random", "attribution"),
    "longest_k": ("top", "length"),
    "highest_loss_k": ("top", "loss"),
    "embedding_knn_k": ("top", "embedding"),
    "metadata_k": ("top", "metadata"),
    "sae_top_k": ("top", "sae"),
    "full_pool": ("full_pool", None),
}
"""Standard arm name -> (kind, ranking). Each `_k` arm is built at every k; `metadata` means
`metadata:<select.metadata_column>`. A new ranking's arm is one more line here (e.g. `sae_top_k`)."""

StandardArm = Literal[tuple(STANDARD_ARMS)]  # type: ignore[valid-type]

RANKINGS = ("attribution", "length", "loss", "embedding", "sae")
"""Named rankings (example_id -> score, higher first); `metadata:<column>` names a pool column too."""


class ArmSpec(_Section):
    """A custom arm: one kind of selection from one ranking (e.g. a rank window of the attribution ranking)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Arm name; names its train_/eval_ folders.")
    kind: Literal["top", "matched_random", "window", "random_beyond", "full_pool"] = Field(
        description="top: the n best rows; matched_random: n random rows matched on outcome x length bin to the "
        "top n (excluding them); window: ranks a..b; random_beyond: n random rows ranked below `beyond`; "
        "full_pool: every pool row."
    )
    ranking: str = Field("attribution", description="attribution, length, loss, embedding or metadata:<column>.")
    n: int | None = Field(None, gt=0, description="Rows (top, matched_random, random_beyond); null = select.k.")
    ranks: tuple[int, int] | None = Field(None, description="window only: first and last rank, 1-based, both included.")
    beyond: int | None = Field(None, gt=0, description="random_beyond only: draw from ranks beyond this one.")
    versus: str | None = Field(
        None, description="Arm this one is tested against in the report; null = matched_random_k (at select.k) when it runs."
    )

    @model_validator(mode="after")
    def _check_kind_fields(self) -> ArmSpec:
        if self.ranking not in RANKINGS and not (self.ranking.startswith("metadata:") and len(self.ranking) > 9):
            raise ValueError(f"ranking = {self.ranking!r}: expected one of {', '.join(RANKINGS)} or metadata:<column>")
        if (self.kind == "window") != (self.ranks is not None):
            raise ValueError(f"arm {self.name!r}: `ranks` is required for kind window and only for it")
        if self.ranks is not None and not 1 <= self.ranks[0] <= self.ranks[1]:
            raise ValueError(f"arm {self.name!r}: ranks = {list(self.ranks)}, expected 1 <= first <= last")
        if (self.kind == "random_beyond") != (self.beyond is not None):
            raise ValueError(f"arm {self.name!r}: `beyond` is required for kind random_beyond and only for it")
        if self.n is not None and self.kind in ("window", "full_pool"):
            raise ValueError(f"arm {self.name!r}: `n` does not apply to kind {self.kind} (its size is fixed)")
        return self


@dataclass(frozen=True)
class PlannedArm:
    """One arm as the select stage builds it: every default resolved."""

    name: str
    kind: str
    ranking: str | None
    n: int | None
    ranks: tuple[int, int] | None = None
    beyond: int | None = None
    versus: str | None = None
    family: str | None = None
    k: int | None = None


class SelectConfig(_Section):
    """The arms, all of one size k per standard arm: named rankings x arm kinds."""

    k: int = Field(500, gt=0, description="Rows per standard arm (attribution's top-k summary uses it too).")
    extra_k: list[PositiveInt] = Field(
        default_factory=list,
        description="More sizes: each standard `_k` arm is also built at each (named top_300, ...); "
        "the report plots accuracy vs k.",
    )
    arms: list[StandardArm | ArmSpec] = Field(
        default_factory=lambda: ["top_k", "matched_random_k"],
        description="Arms to build, train and evaluate: standard names (" + ", ".join(STANDARD_ARMS)
        + ") or custom arms {name, kind, ranking, n, ranks, beyond, versus}.",
    )
    metadata_column: str | None = Field(
        None, description="Numeric pool column that metadata_k ranks by, highest first (e.g. reward_model_score)."
    )
    length_bins: int = Field(5, gt=0, description="Length quantile bins used for matching (5 = quintiles).")
    allow_overlap: bool = Field(False, description="Let a matched random arm reuse the rows it is matched to.")
    seed: int | None = Field(
        None, description="Kept for older configs: random arms are drawn with each sweep seed, so if set it must "
        "equal the run's only seed (sweep.seeds or arm_train.seed).",
    )

    def plan(self) -> list[PlannedArm]:
        """Every arm with its name, size and comparison resolved, in config order (standard arms per k)."""
        ks = [self.k, *self.extra_k]
        several = len(ks) > 1

        def named(family: str, k: int) -> str:
            return f"{family.removesuffix('_k')}_{k}" if several else family

        reference = named("matched_random_k", self.k) if "matched_random_k" in self.arms else None
        planned = []
        for arm in self.arms:
            if isinstance(arm, ArmSpec):
                n = arm.n if arm.n is not None or arm.kind == "full_pool" else self.k
                if arm.ranks is not None:
                    n = arm.ranks[1] - arm.ranks[0] + 1
                versus = arm.versus if arm.versus is not None else (reference if arm.name != reference else None)
                planned.append(PlannedArm(arm.name, arm.kind, arm.ranking, n, arm.ranks, arm.beyond, versus))
                continue
            kind, ranking = STANDARD_ARMS[arm]
            if ranking == "metadata":
                ranking = f"metadata:{self.metadata_column}"
            if kind == "full_pool":
                planned.append(PlannedArm(arm, kind, None, None, versus=reference, family=arm))
                continue
            for k in ks:
                same_k_reference = named("matched_random_k", k) if reference else None
                versus = None if kind == "matched_random" else same_k_reference
                planned.append(PlannedArm(named(arm, k), kind, ranking, k, versus=versus, family=arm, k=k))
        return planned

    @field_validator("arms", mode="before")
    @classmethod
    def _known_names(cls, arms):
        for arm in arms if isinstance(arms, list) else []:
            if isinstance(arm, str) and arm not in STANDARD_ARMS:
                raise ValueError(f"unknown arm {arm!r}: expected one of {', '.join(STANDARD_ARMS)}, "
                                 "or a custom arm {name, kind, ...}")
        return arms

    @model_validator(mode="after")
    def _check_arms(self) -> SelectConfig:
        if "metadata_k" in self.arms and not self.metadata_column:
            raise ValueError("arm metadata_k needs select.metadata_column (the pool column it ranks by)")
        if self.k in self.extra_k or len(set(self.extra_k)) != len(self.extra_k):
            raise ValueError(f"extra_k = {self.extra_k} repeats a size (k = {self.k})")
        names = [a.name for a in self.plan()]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"arm name(s) {', '.join(repeated)} appear more than once")
        unknown = sorted({a.versus for a in self.plan() if a.versus is not None and a.versus not in names})
        if unknown:
            raise ValueError(f"versus names arm(s) {', '.join(unknown)} that are not in select.arms")
        return self


class EvaluateConfig(_Section):
    """Completion loss on the eval split for every model; greedy generation and word accuracy when `generate`."""

    generate: bool = Field(
        True, description="Generate, extract GUESS: and score word accuracy; false = eval loss only (e.g. SmolTalk)."
    )
    max_new_tokens: int = Field(16, gt=0, description="Tokens generated per row.")
    batch_size: int = Field(8, gt=0, description="Rows per batch, for generation (left padded) and loss/embedding passes.")
    backend: Literal["hf", "vllm"] = Field(
        "hf", description="hf: transformers generate, batched by length with the KV cache; vllm: vLLM's offline LLM "
        "engine (pip extra `vllm`, CUDA), same greedy settings.",
    )


class SweepConfig(_Section):
    """Seeds of the sweep: each seed redraws the random arms and trains every arm with that seed."""

    seeds: list[int] = Field(
        default_factory=list,
        description="Seeds; each replaces arm_train.seed (which they override) and seeds the random arms. "
        "Empty = one seed, arm_train.seed.",
    )
    retrain_base: bool = Field(
        False, description="Also retrain the base adapter per seed (the seed overrides train.seed), so attribution, "
        "baselines and selection are per seed too.",
    )


class ExperimentConfig(_Section):
    """One whole experiment: data -> base adapter -> attribution -> arms -> evaluation -> report."""

    name: str = Field("experiment", description="A name for the run, shown in the report.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The base model.")
    tokenize: TokenizeConfig = Field(default_factory=TokenizeConfig, description="The one tokenization rule.")
    data: DataConfig = Field(default_factory=DataConfig, description="Rows and splits.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training of the base adapter.")
    arm_train: TrainConfig = Field(
        default_factory=TrainConfig, description="Continued training of each arm from the base adapter."
    )
    attribute: AttributeConfig = Field(default_factory=AttributeConfig, description="Attribution settings.")
    select: SelectConfig = Field(default_factory=SelectConfig, description="Arm selection.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Evaluation settings.")
    sweep: SweepConfig = Field(default_factory=SweepConfig, description="Seeds of the arm trainings (and optionally of the base adapter).")
    sae: SaeConfig | None = Field(
        None, description="SAE feature extraction (stage `sae`); null = the run has no SAE stage."
    )
    predict: PredictConfig | None = Field(
        None, description="Regressor from SAE features to attribution (stage `predict`); null = no predictor."
    )

    @model_validator(mode="after")
    def _check_sweep(self) -> ExperimentConfig:
        seeds = self.sweep.seeds
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"sweep.seeds = {seeds} repeats a seed")
        run_seeds = seeds or [self.arm_train.seed]
        if self.select.seed is not None and run_seeds != [self.select.seed]:
            raise ValueError(f"select.seed = {self.select.seed} but the run's seeds are {run_seeds}: random arms are "
                             "drawn with each sweep seed; remove select.seed")
        return self

    @model_validator(mode="after")
    def _check_sae_arm(self) -> ExperimentConfig:
        if any(arm.ranking == "sae" for arm in self.select.plan()) and (self.sae is None or self.predict is None):
            raise ValueError("select.arms names an arm ranked by the SAE predictor (sae_top_k); "
                             "it needs the `sae` and `predict` sections")
        return self

    @model_validator(mode="after")
    def _check_token_batch(self) -> ExperimentConfig:
        token_batch = self.attribute.token_batch_size
        if self.model.base == "tiny" and token_batch != "auto" and token_batch > self.model.tiny.max_position_embeddings:
            raise ValueError(
                f"attribute.token_batch_size={self.attribute.token_batch_size} exceeds "
                f"model.tiny.max_position_embeddings={self.model.tiny.max_position_embeddings}"
            )
        return self


def _describe(error: dict) -> str:
    field = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"unknown field '{field}'"
    value = error.get("input")
    return f"field '{field}' = {value!r}: {error['msg']}"


def parse_config(data: dict, source: str = "<config>") -> ExperimentConfig:
    """Validate a config dict; one UserError naming the source, field, value and expectation."""
    try:
        return ExperimentConfig.model_validate(data or {})
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise UserError(f"{source}: {problems}") from None


def load_config(path: Path | str) -> ExperimentConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    return parse_config(data, str(path))


def to_yaml(section: BaseModel | dict) -> str:
    """A replayable YAML rendering of a config or config section."""
    data = section.model_dump(mode="json") if isinstance(section, BaseModel) else section
    return yaml.safe_dump(data, sort_keys=False)
