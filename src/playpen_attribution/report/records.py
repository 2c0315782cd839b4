"""The report's typed records: what `report.results` gathers, `report.markdown` formats, and `to_json` writes as
`report.json`.

Frozen dataclasses, one per thing the report states: a model's entry (`ArmEntry`), a comparison per seed
(`SeedComparison`) and across seeds (`Aggregate`), the primary comparison and the multiple-testing plan,
a control's outcome, a warning, the data-efficiency answer, the setup and the data, and the whole
`Report`. A statistical test (one metric of one comparison) stays the mapping `report.stats` returns,
annotated by `comparisons.decide` with its `p_holm` and `verdict`; sections copied from a stage's own
file (the attribution summary, the predictor's metrics, the lm-eval benchmarks, a selection's summary)
stay as that file has them.

`to_json(record)` is report.json's form: each field in declaration order, except a field declared with
`OMIT` that is None (the key is then absent); a record with irregular keys says so in its own `to_json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass

from playpen_attribution.report.training import TrainingSummary
from playpen_attribution.run.artifacts import ArmSelection

OMIT = {"omit_if_none": True}
"""Field metadata: leave the key out of report.json when the value is None."""


def to_json(value):
    """A record (or a list or mapping of them) as report.json holds it."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if is_dataclass(value):
        out = {}
        for f in fields(value):
            item = getattr(value, f.name)
            if item is None and f.metadata.get("omit_if_none"):
                continue
            out[f.name] = to_json(item)
        return out
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


@dataclass(frozen=True)
class ArmSpec:
    """What an evaluated arm is: its selection's spec, copied into its entry (`results.SPEC_FIELDS`)."""

    kind: str
    ranking: str | None
    n: int | None
    family: str | None
    k: int | None
    versus: list[str]
    rows: int
    tokens: int


@dataclass(frozen=True)
class ArmEntry:
    """One evaluated model of one seed (None: a shared model): word accuracy on `metric` (target_correct or
    correct) with its Wilson interval, the evaluation's other metrics, its training summary and its spec."""

    name: str
    seed: int | None
    metric: str
    correct: int | None
    total: int | None
    accuracy: float | None
    ci_low: float | None = field(default=None, metadata=OMIT)
    ci_high: float | None = field(default=None, metadata=OMIT)
    transcript_correct: int | None = field(default=None, metadata=OMIT)
    transcript_accuracy: float | None = field(default=None, metadata=OMIT)
    target_correct: int | None = field(default=None, metadata=OMIT)
    target_total: int | None = field(default=None, metadata=OMIT)
    target_accuracy: float | None = field(default=None, metadata=OMIT)
    no_guess: int | None = field(default=None, metadata=OMIT)
    eval_loss: float | None = field(default=None, metadata=OMIT)
    loss_non_finite: int | None = field(default=None, metadata=OMIT)
    choice_correct: int | None = field(default=None, metadata=OMIT)
    choice_total: int | None = field(default=None, metadata=OMIT)
    choice_accuracy: float | None = field(default=None, metadata=OMIT)
    choice_mrr: float | None = field(default=None, metadata=OMIT)
    choice_skipped: int | None = field(default=None, metadata=OMIT)
    training: TrainingSummary | None = field(default=None, metadata=OMIT)
    spec: ArmSpec | None = None
    """Its selection's spec; None for a shared model (the base, the base adapter)."""

    @property
    def versus(self) -> list[str]:
        return (self.spec.versus or []) if self.spec is not None else []

    def to_json(self) -> dict:
        """The entry's fields with the spec's beside them (flat, as report.json has always had them)."""
        out = {f.name: to_json(getattr(self, f.name)) for f in fields(self)
               if f.name != "spec" and not (getattr(self, f.name) is None and f.metadata.get("omit_if_none"))}
        return out | (to_json(self.spec) if self.spec is not None else {})


@dataclass(frozen=True)
class SeedComparison:
    """One seed, `arm` against `versus` on the same eval rows: metric -> its descriptive test (a mapping: the
    difference, McNemar's table or the bootstrap interval, p_value, test, and `p_holm` from `decide`)."""

    arm: str
    versus: str
    seed: int | None
    metrics: dict[str, dict]


@dataclass(frozen=True)
class Aggregate:
    """`arm` against `versus` across `seeds`: metric -> its across-seed test (`stats.across_seed_test`'s mapping
    plus the arms' means, per-seed differences, seeds favouring each side, and `p_holm` / `verdict`)."""

    arm: str
    versus: str
    seeds: list[int]
    metrics: dict[str, dict]


@dataclass(frozen=True)
class Primary:
    """The primary comparison: declared in the config or the default; its verdict and test once decided."""

    arm: str
    versus: str
    metric: str
    declared: bool
    verdict: str | None = field(default=None, metadata=OMIT)
    test: dict | None = field(default=None, metadata=OMIT)


@dataclass(frozen=True)
class MultipleTesting:
    """How the verdicts were adjusted: the fixed sequence, its level, whether the primary held, the test counts."""

    procedure: str = ""
    alpha: float = 0.05
    primary_holds: bool = False
    secondary_tests: int = 0
    per_seed_tests: int = 0


@dataclass(frozen=True)
class Control:
    """A control's outcome: the answer it expected, the primary verdict found, and whether every seed agrees
    (None when the expectation is no difference; absent without a primary test)."""

    expect: str
    found: str | None
    passed: bool
    seeds_agree: bool | None = None
    tested: bool = False
    """Whether a primary test existed to ask the seeds (report.json then holds `seeds_agree`)."""

    def to_json(self) -> dict:
        out = {"expect": self.expect, "found": self.found, "passed": self.passed}
        return out | ({"seeds_agree": self.seeds_agree} if self.tested else {})


@dataclass(frozen=True)
class ReportWarning:
    """What makes a comparison read the schedule rather than the rows: `not_converged` (with the loss's
    late drop and final value) or `no_guess` (with the share of generations without a guess)."""

    kind: str
    model: str
    seed: int | None
    late_drop: float | None = field(default=None, metadata=OMIT)
    final_loss: float | None = field(default=None, metadata=OMIT)
    share: float | None = field(default=None, metadata=OMIT)


@dataclass(frozen=True)
class EfficiencyArm:
    """An arm's line in the data-efficiency answer: its rows and tokens (first seed), mean over seeds."""

    arm: str
    rows: int | None
    tokens: int | None
    mean: float | None
    seeds: int


@dataclass(frozen=True)
class RandomMultiple:
    """A random arm at `multiple` times k, and (when tested against top_k) the difference, p_holm and verdict."""

    arm: EfficiencyArm
    multiple: float
    tested: bool = False
    difference: dict | None = None
    p_holm: float | None = None
    verdict: str | None = None

    def to_json(self) -> dict:
        out = to_json(self.arm) | {"multiple": self.multiple}
        return out | ({"difference": self.difference, "p_holm": self.p_holm, "verdict": self.verdict}
                      if self.tested else {})


@dataclass(frozen=True)
class DataEfficiency:
    """How many random rows top_k's k rows are worth (`results.data_efficiency`)."""

    metric: str
    top_k: EfficiencyArm
    random: list[RandomMultiple]
    worth_at_least: float | None
    beats_up_to: float | None


@dataclass(frozen=True)
class TrainSettings:
    """The training settings report.md names, read from a stage config's `train` section."""

    lora_r: int | None
    learning_rate: float | None
    epochs: float | None
    init: str | None

    @classmethod
    def of(cls, section: dict | None) -> TrainSettings:
        section = section or {}
        return cls((section.get("lora") or {}).get("r"), section.get("learning_rate"), section.get("epochs"),
                   section.get("init"))


@dataclass(frozen=True)
class Setup:
    """The run's settings, from its stage configs: the sections as the stages recorded them."""

    model: str | None = None
    train: dict | None = None
    arm_train: dict | None = None
    tokenize: dict | None = None
    attribute: dict | None = None
    select: dict | None = None
    evaluate: dict | None = None
    seeds: list[int] = field(default_factory=list)
    retrain_base: bool = False

    @property
    def base_training(self) -> TrainSettings:
        return TrainSettings.of(self.train)

    @property
    def arm_training(self) -> TrainSettings:
        return TrainSettings.of(self.arm_train)

    @property
    def ks(self) -> list[int | None]:
        """The arm sizes: select.k, then select.extra_k."""
        select = self.select or {}
        return [select.get("k"), *select.get("extra_k", [])]


@dataclass(frozen=True)
class DataSummary:
    """The data stage's counts: rows per split, outcomes, what was dropped, the source (its planted rows
    counted), and the candidates split's own, when there is one."""

    rows: dict[str, int]
    outcomes: dict[str, dict[str, int]] | None
    dropped: dict[str, int] | None
    source: dict
    candidates: dict | None = field(default=None, metadata=OMIT)


@dataclass(frozen=True)
class ArmContents:
    """What an arm's rows hold: distinct groups and target words, the eval target words covered, and (with
    planted rows) how many of each kind it holds and its clean share."""

    groups: int
    target_words: int
    eval_target_coverage: float | None = field(default=None, metadata=OMIT)
    planted: dict[str, int] | None = field(default=None, metadata=OMIT)
    clean_fraction: float | None = field(default=None, metadata=OMIT)


@dataclass(frozen=True)
class SelectedArm:
    """An arm of a seed's selection: its spec and counts (`ArmSelection.summary` in report.json) and contents."""

    selection: ArmSelection
    contents: ArmContents | None = None

    def to_json(self) -> dict:
        return self.selection.summary() | (to_json(self.contents) if self.contents is not None else {})


@dataclass(frozen=True)
class Sweep:
    """How many arm trainings ran across the seeds, and their mean wall time."""

    trainings: int = 0
    mean_training_seconds: float | None = None


@dataclass(frozen=True)
class Report:
    """Everything the report states, in report.json's order."""

    run_dir: str = ""
    setup: Setup = field(default_factory=Setup)
    arms: list[ArmEntry] = field(default_factory=list)
    comparisons: list[SeedComparison] = field(default_factory=list)
    aggregate: list[Aggregate] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    real_model: dict[str, str] = field(default_factory=dict)
    """Stage -> its throughput in words."""
    stage_peak_rss_mb: dict[str, float] = field(default_factory=dict)
    sweep: Sweep = field(default_factory=Sweep)
    attribution: dict | None = field(default=None, metadata=OMIT)
    """The attribute stage's summary (`attribution.diagnostics`), as it wrote it."""
    methods: dict | None = field(default=None, metadata=OMIT)
    """Several attribution methods side by side (`report.methods.method_table`); None with one method."""
    predictor: dict | None = field(default=None, metadata=OMIT)
    """The predict stage's metrics.json, with `candidates_ranked` when it ranked candidates."""
    benchmarks: dict | None = field(default=None, metadata=OMIT)
    """`report.benchmarks.collect_benchmarks`'s section."""
    untracked_modules: list[str] | None = field(default=None, metadata=OMIT)
    data: DataSummary | None = field(default=None, metadata=OMIT)
    selection: dict[int, dict[str, SelectedArm]] | None = field(default=None, metadata=OMIT)
    primary: Primary | None = None
    multiple_testing: MultipleTesting = field(default_factory=MultipleTesting)
    control: Control | None = field(default=None, metadata=OMIT)
    warnings: list[ReportWarning] = field(default_factory=list)
    data_efficiency: DataEfficiency | None = field(default=None, metadata=OMIT)
    plots: list[str] = field(default_factory=list)
    """The plots drawn, in reading order (file names in the report folder)."""
    probe_study: dict | None = field(default=None, metadata=OMIT)
    """The predict stage's probe_study.json (layers x poolings, raw and length-residualised), as it wrote it."""
    stale: dict[str, str] | None = field(default=None, metadata=OMIT)
    """--allow-stale: stage folder -> why it is stale."""
    missing_units: list[dict] | None = field(default=None, metadata=OMIT)
    """--allow-incomplete: the planned {arm, seed} units without an evaluation."""

    @property
    def accuracy_metric(self) -> str | None:
        """The prediction field word accuracy counts (target_correct or correct); None without generations."""
        return next((a.metric for a in self.arms if a.accuracy is not None), None)
