"""The experiment config: validated data, one line of doc per field, no disk or network on build. The
sections live in config/sections.py and config/training.py (and beside the packages that own them).

`load_config(path, overrides)` reads YAML (following `extends:`), applies `--set a.b=value` overrides
and turns every validation problem into one `UserError` naming the file, each field, its value and what
was expected. `arm_train` inherits every key it does not set from `train` (`parse_config`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from playpen_attribution.attribution.arms import SelectConfig, is_predictor_ranking, plan_arms, probe_layer
from playpen_attribution.attribution.config import AttributeConfig
from playpen_attribution.config.sections import (
    CandidatesConfig,
    DataConfig,
    EvaluateConfig,
    ModelConfig,
    Outcome,
    Source,
    SweepConfig,
)
from playpen_attribution.config.training import ArmTrainConfig, LoraSettings, TrainConfig
from playpen_attribution.core import yaml_config
from playpen_attribution.core.section import Section
from playpen_attribution.core.tokenization import TokenizeConfig
from playpen_attribution.errors import UserError
from playpen_attribution.report.config import ReportConfig
from playpen_attribution.run.launcher import LauncherConfig
from playpen_attribution.run.tracking import TrackingConfig
from playpen_attribution.sae.config import PREDICTOR_VARIANT, PredictConfig, SaeConfig

__all__ = [
    "ArmTrainConfig", "AttributeConfig", "CandidatesConfig", "DataConfig", "EvaluateConfig", "ExperimentConfig",
    "LoraSettings", "ModelConfig", "Outcome", "Source", "SweepConfig", "TrainConfig", "load_config", "parse_config",
]


class ExperimentConfig(Section):
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
        plan = plan_arms(self.select, self.attribute.methods)
        if any(is_predictor_ranking(arm.ranking) for arm in plan) and (self.sae is None or self.predict is None):
            raise ValueError("select.arms names an arm ranked by the SAE predictor or the residual probe (sae_top_k, "
                             "probe_top_k); it needs the `sae` and `predict` sections")
        for arm in plan:  # a named probe reads a block the sae stage collects (sae.probe_layers)
            block = probe_layer(arm.ranking)
            if block is not None and (self.sae is None or block not in self.sae.probe_layers):
                collected = self.sae.probe_layers if self.sae is not None else "no sae section"
                raise ValueError(f"select.arms: {arm.name} ranks by the probe of block {block}, which is not in "
                                 f"sae.probe_layers ({collected}); add {block} there")
        variant = PREDICTOR_VARIANT.match(self.predict.model) if self.predict is not None else None
        layer = variant.group(2) if variant else None
        named_later = self.sae is not None and bool(self.sae.extra_sae_ids)  # their blocks come from their hooks
        if (variant and layer is not None and not named_later
                and (self.sae is None or int(layer) not in self.sae.extra_layers)):
            extra = self.sae.extra_layers if self.sae is not None else "no sae section"
            raise ValueError(f"predict.model = {variant.group(0)!r} names layer {layer}, which is not in "
                             f"sae.extra_layers ({extra})")
        return self

    @model_validator(mode="after")
    def _check_primary(self) -> ExperimentConfig:
        primary = self.report.primary
        if primary is None:
            return self
        plan = {arm.name: arm for arm in plan_arms(self.select, self.attribute.methods)}
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
