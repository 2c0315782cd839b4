"""The experiment config: validated data, one line of doc per field, no disk or network on build.

`load_config(path)` reads YAML and turns any validation problem into one `UserError` naming the
file, the field, the value and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from playpen_attribution.errors import UserError
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
    grad_accum: int = Field(16, gt=0, description="Gradient accumulation steps.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps spent warming up.")
    scheduler: str = Field("cosine", description="transformers lr scheduler name (cosine, linear, constant...).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    seed: int = Field(42, description="Training seed (data order, dropout, LoRA init).")
    merge: bool = Field(False, description="Also write the adapter merged into a full model.")


class AttributeConfig(_Section):
    """Gradient attribution of every pool row against the query set, through Bergson."""

    mode: Literal["mean"] = Field("mean", description="mean: dot with the mean query gradient.")
    preconditioning: Literal["none", "query"] = Field(
        "query", description="none, or precondition with the query gradients' second moments."
    )
    projection_dim: int = Field(32, gt=0, description="Random projection width of each gradient.")
    unit_normalize: bool = Field(True, description="Unit-normalise gradients before scoring (cosine).")
    token_batch_size: int = Field(
        256, gt=0, description="Tokens per Bergson batch; at most the model's max_position_embeddings."
    )


class SelectConfig(_Section):
    """The arms: top-k by attribution and a random subset matched on outcome x length quintile."""

    k: int = Field(500, gt=0, description="Rows per arm.")
    length_bins: int = Field(5, gt=0, description="Length quantile bins used for matching (5 = quintiles).")
    allow_overlap: bool = Field(False, description="Let the random arm reuse top-k rows.")
    seed: int = Field(42, description="Seed of the random arm.")


class EvaluateConfig(_Section):
    """Greedy generation on the eval split, GUESS: extraction, word accuracy."""

    max_new_tokens: int = Field(16, gt=0, description="Tokens generated per row.")
    batch_size: int = Field(8, gt=0, description="Rows per generation batch (left padded).")


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

    @model_validator(mode="after")
    def _check_token_batch(self) -> ExperimentConfig:
        if self.model.base == "tiny" and self.attribute.token_batch_size > self.model.tiny.max_position_embeddings:
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
