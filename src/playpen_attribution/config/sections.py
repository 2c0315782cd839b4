"""The experiment config's plain sections: model, data (and candidates), evaluate, sweep.

Validated data only; building one never touches disk or network. `ExperimentConfig` (config/__init__.py)
holds them with the sections other packages own (attribute, select, tokenize, sae, predict, report, tracking).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from playpen_attribution.core.section import Section
from playpen_attribution.core.tiny_model import TinyModelConfig
from playpen_attribution.sources.clembench import ClembenchSource
from playpen_attribution.sources.generic import GenericSource
from playpen_attribution.sources.instruct_demo import InstructDemoSource
from playpen_attribution.sources.playpen_data import PlaypenDataSource
from playpen_attribution.sources.smoltalk import SmolTalkSource
from playpen_attribution.sources.synthetic import SyntheticAppend
from playpen_attribution.taboo.demo import DemoSource


class ModelConfig(Section):
    """Which base model every stage loads."""

    base: str = Field(
        "tiny",
        description="Hugging Face id or local folder of the base model, or 'tiny' to build one from `tiny`.",
    )
    tokenizer: str | None = Field(
        None,
        description="Hugging Face id or local folder of the tokenizer, when not the model's own (e.g. the instruct "
        "model's, for base weights, as the published runs do); null = the model's.",
    )
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig, description="Shape of the tiny model.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Weights dtype: auto = bfloat16 on a CUDA GPU, float32 on CPU."
    )


Outcome = Literal["success", "failure", "aborted"]

Source = DemoSource | InstructDemoSource | PlaypenDataSource | ClembenchSource | SmolTalkSource | GenericSource


class CandidatesConfig(Section):
    """New rows never scored by gradients (the `candidates` split): the predictor ranks them, and the
    predictor arms (sae_top_k, probe_top_k) and their controls are drawn from them."""

    source: Source | None = Field(
        None, discriminator="kind",
        description="Any data source (kind: demo, instruct_demo, playpen_data, clembench, smoltalk, generic); the rows "
        "of its `split` become candidates. null = only the synthetic rows.",
    )
    split: Literal["train_base", "attr_query", "eval"] = Field(
        "train_base", description="Which split of that source the candidates are taken from."
    )
    seed: int = Field(
        7, description="Seed the candidates' source runs with (a generator or sampler gives new rows with a seed "
        "other than data.seed; rows equal to a pool, query or eval row are removed and counted anyway).",
    )
    synthetic: SyntheticAppend | None = Field(
        None, description="The synth command's rows (new synthetic games) as candidates, filtered as data.synthetic is."
    )
    max_rows: int | None = Field(
        None, gt=0, description="Keep at most this many candidates (a seeded random sample; the rest counted); null = all."
    )

    @model_validator(mode="after")
    def _some_rows(self) -> CandidatesConfig:
        if self.source is None and self.synthetic is None:
            raise ValueError("data.candidates needs a `source`, a `synthetic` file or both")
        return self


class DataConfig(Section):
    """Where rows come from and how the data stage splits them."""

    source: Source = Field(
        default_factory=DemoSource, discriminator="kind",
        description="The data source (kind: demo, instruct_demo, playpen_data, clembench, smoltalk, generic) and its "
        "options.",
    )
    synthetic: SyntheticAppend | None = Field(
        None, description="Synthetic rows (the synth command's output) appended to the training pool."
    )
    pool_fraction: float = Field(
        1.0, gt=0, le=1, description="Keep this seeded share of the source's pool, before synthetic rows are added "
        "(0.5: the seed's half-train + synthetic mix); the rest is counted as dropped.",
    )
    seed: int = Field(42, description="Seed for generation, sampling and splitting.")
    validation_fraction: float = Field(
        0.0, ge=0, lt=1, description="Share of the eval split's groups moved to a `validation` split (no row or "
        "group shared with the reported eval), the split `train.keep_best: validation` selects a checkpoint on; 0 = none.",
    )
    pool_outcomes: list[Outcome] = Field(
        default_factory=lambda: ["success", "failure"],  # type: ignore[arg-type]  # read as list[str]
        description="Outcomes kept in the training pool; other rows (aborted games) are dropped and counted.",
    )
    query_outcomes: list[Outcome] = Field(
        default_factory=lambda: ["success"],  # type: ignore[arg-type]  # read as list[str]
        description="Outcomes kept in the attribution query set (the behaviour attribution looks for).",
    )
    eval_outcomes: list[Outcome] = Field(
        default_factory=lambda: ["success", "failure"],  # type: ignore[arg-type]  # read as list[str]
        description="Outcomes kept in the eval set; failed games stay by default, as in the published eval "
        "(word accuracy is then read against the target word).",
    )
    candidates: CandidatesConfig | None = Field(
        None, description="A fourth split of new rows never scored by gradients, ranked by the predictor "
        "(stage predict) and the pool the predictor arms are drawn from; null = none.",
    )


class EvaluateConfig(Section):
    """Completion loss on the eval split for every model; greedy generation and word accuracy when `generate`."""

    generate: bool = Field(
        True, description="Generate, extract GUESS: and score word accuracy; false = eval loss only (e.g. SmolTalk)."
    )
    choices: Annotated[int, Field(ge=2)] | Literal["all"] | None = Field(
        "all", description="The format-robust metric: rank each eval row's target word among the eval's target words "
        "(all) or among itself and n - 1 of them drawn per row (an int), by the log-likelihood of the row's completion "
        "with that word as the guess; null = off. Rows without a target word or a `GUESS:` are skipped and counted.",
    )
    max_new_tokens: int = Field(16, gt=0, description="Tokens generated per row.")
    batch_size: int = Field(8, gt=0, description="Rows per batch, for generation (left padded) and loss/embedding passes.")
    backend: Literal["hf", "vllm"] = Field(
        "hf", description="hf: transformers generate, batched by length with the KV cache; vllm: vLLM's offline LLM "
        "engine (pip extra `vllm`, CUDA), same greedy settings.",
    )
    benchmarks: list[str] = Field(
        default_factory=list, description="lm-eval task ids run on every evaluated model (base, base adapter, arms); "
        "empty = none.",
    )
    benchmark_include_path: str | None = Field(
        None, description="Folder of local lm-eval YAML tasks (searched before the harness's own library).",
    )
    allow_code_execution: bool = Field(
        False, description="Let code-execution benchmarks (humaneval, mbpp) run generated code (HF_ALLOW_CODE_EVAL).",
    )
    benchmark_batch_size: int | Literal["auto"] = Field("auto", description="lm-eval batch size; auto = the largest that fits.")
    benchmark_limit: int | None = Field(None, gt=0, description="Items per benchmark task (null = all).")


class SweepConfig(Section):
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
