"""The experiment config: validated data, one line of doc per field, no disk or network on build.

`load_config(path, overrides)` reads YAML (following `extends:`), applies `--set a.b=value` overrides
and turns every validation problem into one `UserError` naming the file, each field, its value and what
was expected. `arm_train` inherits every key it does not set from `train` (`parse_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from playpen_attribution.attribution.arms import SelectConfig, plan_arms
from playpen_attribution.core import yaml_config
from playpen_attribution.core.tiny_model import TinyModelConfig
from playpen_attribution.core.tokenization import TokenizeConfig
from playpen_attribution.errors import UserError
from playpen_attribution.report.config import ReportConfig
from playpen_attribution.run.launcher import LauncherConfig
from playpen_attribution.run.tracking import TrackingConfig
from playpen_attribution.sae.config import PREDICTOR_VARIANT, PredictConfig, SaeConfig
from playpen_attribution.sources.clembench import ClembenchSource
from playpen_attribution.sources.generic import GenericSource
from playpen_attribution.sources.instruct_demo import InstructDemoSource
from playpen_attribution.sources.playpen_data import PlaypenDataSource
from playpen_attribution.sources.smoltalk import SmolTalkSource
from playpen_attribution.sources.synthetic import SyntheticAppend
from playpen_attribution.taboo.demo import DemoSource


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelConfig(_Section):
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


class CandidatesConfig(_Section):
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


class DataConfig(_Section):
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
        default_factory=lambda: ["success", "failure"],
        description="Outcomes kept in the training pool; other rows (aborted games) are dropped and counted.",
    )
    query_outcomes: list[Outcome] = Field(
        default_factory=lambda: ["success"],
        description="Outcomes kept in the attribution query set (the behaviour attribution looks for).",
    )
    eval_outcomes: list[Outcome] = Field(
        default_factory=lambda: ["success", "failure"],
        description="Outcomes kept in the eval set; failed games stay by default, as in the published eval "
        "(word accuracy is then read against the target word).",
    )
    candidates: CandidatesConfig | None = Field(
        None, description="A fourth split of new rows never scored by gradients, ranked by the predictor "
        "(stage predict) and the pool the predictor arms are drawn from; null = none.",
    )

    @model_serializer(mode="wrap")
    def _without_no_candidates(self, handler):
        """`candidates: null`, `pool_fraction: 1` and `validation_fraction: 0` (the defaults) stay out of dumps, so data folders from
        before them still match."""
        data = handler(self)
        if isinstance(data, dict) and data.get("candidates") is None:
            data.pop("candidates", None)
        for key, default in (("pool_fraction", 1), ("validation_fraction", 0)):
            if isinstance(data, dict) and data.get(key) == default:
                data.pop(key, None)
        return data


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
        description="Modules trained in full next to LoRA (e.g. embed_tokens, lm_head). Bergson tracks only LoRA "
        "modules, so the attribute stage refuses such an adapter unless attribute.allow_untracked_modules.",
    )


class TrainConfig(_Section):
    """LoRA supervised fine-tuning through TRL's SFTTrainer, completion-only loss."""

    lora: LoraSettings = Field(default_factory=LoraSettings, description="The adapter's shape.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate.")
    epochs: float = Field(3, gt=0, description="Passes over the data (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Optimizer steps; -1 = use epochs.")
    save_steps: int = Field(
        0, ge=0, description="Checkpoint every N optimizer steps inside the stage's .part folder, so a killed "
        "training resumes from the last one; 0 = no checkpoints (a killed training restarts from step 0, which "
        "reproduces the uninterrupted run exactly; a resumed one is close but not yet bit-identical in sweeps).",
    )
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
    scheduler: str = Field(
        "cosine", description="transformers lr scheduler name (cosine, linear, constant, constant_with_warmup, "
        "cosine_with_min_lr: cosine down to a floor, min_lr_ratio...).",
    )
    min_lr_ratio: float = Field(
        0.0, ge=0, lt=1, description="cosine_with_min_lr only: the floor the rate decays to, as a share of the peak "
        "(a schedule with a floor keeps a training that learns late from ending with a rate near zero).",
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    seed: int = Field(42, description="Training seed (data order, dropout, LoRA init).")
    merge: bool = Field(False, description="Also write the adapter merged into a full model.")
    keep_best: Literal["validation", "eval"] | None = Field(
        None, description="Keep the epoch checkpoint with the lowest loss on this split: validation (held out of the "
        "reported eval, data.validation_fraction) or eval (upstream's choice: selection then leaks into the reported "
        "number); null = the last step's weights.",
    )

    @model_serializer(mode="wrap")
    def _without_no_keep_best(self, handler):
        """`keep_best: null` (the default) stays out of dumps, so training folders from before it still match."""
        data = handler(self)
        if isinstance(data, dict) and data.get("keep_best") is None:
            data.pop("keep_best", None)
        return data

    @model_validator(mode="after")
    def _floor_needs_its_scheduler(self) -> TrainConfig:
        if self.min_lr_ratio > 0 and self.scheduler != "cosine_with_min_lr":
            raise ValueError(f"min_lr_ratio = {self.min_lr_ratio} applies to scheduler cosine_with_min_lr only "
                             f"(scheduler is {self.scheduler!r})")
        return self


class ArmTrainConfig(TrainConfig):
    """Training of each arm: the training recipe plus where its adapter starts. A key it does not set is
    `train`'s (`parse_config`)."""

    init: Literal["base", "base_adapter"] = Field(
        "base",
        description="base: a fresh LoRA (this section's `lora`) on the base model, as the published runs train "
        "each arm; base_adapter: continue the base adapter trained on the whole pool (its LoRA shape is kept).",
    )


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


class EvaluateConfig(_Section):
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
    arm_train: ArmTrainConfig = Field(
        default_factory=ArmTrainConfig, description="Training of each arm: a fresh LoRA on the base model by default; "
        "every key it does not set is train's.",
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
    launcher: LauncherConfig = Field(
        default_factory=LauncherConfig, description="Where the arm x seed jobs run: inline, local processes or SLURM."
    )
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="Experiment tracking of every training (TensorBoard, wandb, trackio); "
        "in no stage's fingerprint.",
    )
    report: ReportConfig = Field(default_factory=ReportConfig, description="The primary comparison and a control's answer.")

    @model_serializer(mode="wrap")
    def _without_no_tracking(self, handler):
        """`tracking` at its default stays out of dumps, so experiment.yaml files from before it still match."""
        data = handler(self)
        if isinstance(data, dict) and data.get("tracking") == TrackingConfig().model_dump():
            data.pop("tracking", None)
        return data

    @model_validator(mode="after")
    def _check_sweep(self) -> ExperimentConfig:
        seeds = self.sweep.seeds
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"sweep.seeds = {seeds} repeats a seed")
        return self

    @model_validator(mode="after")
    def _check_keep_best(self) -> ExperimentConfig:
        for section in ("train", "arm_train"):
            if getattr(self, section).keep_best == "validation" and self.data.validation_fraction == 0:
                raise ValueError(f"{section}.keep_best = 'validation' needs data.validation_fraction > 0 (the "
                                 "held-out slice it selects on)")
        return self

    @model_validator(mode="after")
    def _check_sae_arm(self) -> ExperimentConfig:
        if any(arm.ranking in ("sae", "probe") for arm in plan_arms(self.select)) and (self.sae is None or self.predict is None):
            raise ValueError("select.arms names an arm ranked by the SAE predictor or the residual probe (sae_top_k, "
                             "probe_top_k); it needs the `sae` and `predict` sections")
        layer = PREDICTOR_VARIANT.match(self.predict.model).group(2) if self.predict is not None else None
        named_later = self.sae is not None and bool(self.sae.extra_sae_ids)  # their blocks come from their hooks
        if layer is not None and not named_later and (self.sae is None or int(layer) not in self.sae.extra_layers):
            extra = self.sae.extra_layers if self.sae is not None else "no sae section"
            raise ValueError(f"predict.model = {self.predict.model!r} names layer {layer}, which is not in "
                             f"sae.extra_layers ({extra})")
        return self

    @model_validator(mode="after")
    def _check_primary(self) -> ExperimentConfig:
        primary = self.report.primary
        if primary is None:
            return self
        plan = {arm.name: arm for arm in plan_arms(self.select)}
        if primary.arm not in plan or primary.versus not in plan[primary.arm].versus:
            tested = [f"{a.name} vs {v}" for a in plan.values() for v in a.versus]
            raise ValueError(f"report.primary = {primary.arm} vs {primary.versus} is not a comparison the arms make "
                             f"(they make: {', '.join(tested) or 'none'})")
        if primary.metric == "accuracy" and not self.evaluate.generate:
            raise ValueError("report.primary.metric = 'accuracy' needs evaluate.generate: true")
        if primary.metric == "choice_accuracy" and self.evaluate.choices is None:
            raise ValueError("report.primary.metric = 'choice_accuracy' needs evaluate.choices (all or a number)")
        return self

    @property
    def seeds(self) -> list[int]:
        """The sweep's seeds: `sweep.seeds`, or the one seed `arm_train.seed` when none are listed."""
        return list(self.sweep.seeds) or [self.arm_train.seed]

    def for_seed(self, seed: int) -> ExperimentConfig:
        """The config one sweep seed runs with: that seed alone, as `arm_train.seed` (and, with
        `sweep.retrain_base`, as `train.seed`). Every per-seed stage reads its seed from here."""
        update = {"arm_train": self.arm_train.model_copy(update={"seed": seed}),
                  "sweep": self.sweep.model_copy(update={"seeds": [seed]})}
        if self.sweep.retrain_base:
            update["train"] = self.train.model_copy(update={"seed": seed})
        return self.model_copy(update=update)

    @property
    def run_seed(self) -> int:
        """The seed of a per-seed config (`for_seed`); an error for a config that sweeps several."""
        if len(self.seeds) != 1:
            raise ValueError(f"this config sweeps seeds {self.seeds}; a per-seed stage needs for_seed(seed)")
        return self.seeds[0]


def _inherited(parent: dict, child: dict, prefix: str) -> tuple[str, ...]:
    """Dotted names of the keys `child` takes from `parent` in `deep_merge(parent, child)`."""
    out = []
    for key, value in parent.items():
        if key not in child:
            out.append(prefix + str(key))
        elif isinstance(value, dict) and isinstance(child[key], dict):
            out += _inherited(value, child[key], f"{prefix}{key}.")
    return tuple(out)


def parse_config(data: dict, source: str = "<config>") -> ExperimentConfig:
    """Validate a config dict; one UserError naming the source and every bad field, its value and
    expectation. `arm_train` is `train` with `arm_train`'s own keys on top (a mistake in an inherited
    value is named once, under train). A config that names a real model (anything but `tiny`) must say
    where its rows come from (`data.source`): the default source is the offline demo, which a real run
    never means."""
    data = dict(data or {})
    model, rows = data.get("model"), data.get("data")
    base = model.get("base", "tiny") if isinstance(model, dict) else "tiny"
    if base != "tiny" and not (isinstance(rows, dict) and rows.get("source")):
        raise UserError(f"{source}: model.base = {base!r} is a real model and needs a `data.source` section "
                        f"(the default source is the offline demo pool)")
    train, arm = data.get("train"), data.get("arm_train", {})
    hidden: tuple[str, ...] = ()
    if isinstance(train, dict) and isinstance(arm, dict):
        data["arm_train"] = yaml_config.deep_merge(train, arm)
        hidden = _inherited(train, arm, "arm_train.")
    return yaml_config.validate(ExperimentConfig, data, source, hidden)


def load_config(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML config file (and the files it `extends`), apply `--set` overrides and validate it; an
    empty file is an error (the demo runs only when no config is given at all)."""
    data = yaml_config.read_composed(path)
    if data is None and not overrides:
        raise UserError(f"{path}: the config file is empty (give no CONFIG to run the demo)")
    source = f"{path} with --set {' '.join(overrides)}" if overrides else str(path)
    return parse_config(yaml_config.apply_overrides(data or {}, overrides), source)
