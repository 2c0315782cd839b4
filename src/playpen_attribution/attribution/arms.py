"""The arm plan of a run: which arms are built, at which sizes, and what each is tested against.

`SelectConfig` is the `select:` config section; `plan_arms` resolves it into `PlannedArm`s, every
default filled in (standard arms at every k, custom arms with their sizes, each arm's `versus`).
Pure logic: the select stage builds the arms of this plan from rankings (`selection.build_arms`) and
the report reads the plan back from the selection file.

Comparisons: `top_k` is tested against `matched_random_k`, random rows with the top-k's outcome x
length composition drawn from the whole pool (overlap allowed): the rows a user would otherwise have
picked, the counterfactual. With `matched_random_rest_k` in the arms (the seed's control: the same
matching, drawn from the rows the top-k left behind), top_k is tested against it too, as a secondary
comparison. `random_k` (uniform random rows) is tested against `matched_random_k`, which shows what
the matching itself buys. Every other ranked standard arm (`longest_k`, `highest_loss_k`,
`embedding_knn_k`, `metadata_k`, `sae_top_k`, `probe_top_k`) brings its own control,
`matched_random_<arm>`, matched to *its* composition, so no baseline is judged against a control drawn
for another arm. An arm's `versus` lists what it is tested against, its first entry the main one.

Several attribution methods (`attribute.methods`, `plan_arms(select, methods)`): each standard arm ranked by
attribution (`top_k`, `matched_random_k`, `matched_random_rest_k`, `label_k`) is built once per method, named
`<arm>@<method>` and ranked by `attribution@<method>`, so `top_k@trak` is tested against `matched_random_k@trak`
drawn to *its* composition. Arms that only refer to the control (`random_k`, custom arms without `versus`,
`random_2x_k`'s top_k) refer to the first method's.

Named probes (`sae.probe_layers`): `probe_top_k@<L>` is the same suffix on a ranked baseline: the top k by the
residual probe of block L (ranking `probe@<L>`, the predict stage's cross-fitted `probe@<L>` column), tested
against its own control `matched_random_probe_top_k@<L>`; with extra_k, `probe_top_300@<L>`. `probe_top_k` alone
is the probe of the SAE's layer.

`select.stratify_by` (e.g. category): every top-n selection (a `top` arm, and the top n a matched control, a
label arm or the length arm is matched to) takes its rows within each value of that column, in proportion to
the value's share of the rows drawn from (the pool, or the candidates), the best-ranked first in each; the
matched controls then match on that column too (`selection.stratified_top`).

`longest_label_k`, the authors' length arm: the longest rows passing the label filter, taken until their
completion tokens reach top_k's (`selection.longest_to_tokens`). It asks whether top_k's gain is only "long,
well-rated rows": at the same token budget, with the label filter a user would apply, length alone picks it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    Field,
    PositiveInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from playpen_attribution.core.section import Section

STANDARD_ARMS: dict[str, tuple[str, str | None]] = {
    "top_k": ("top", "attribution"),
    "matched_random_k": ("matched_random", "attribution"),
    "matched_random_rest_k": ("matched_random_rest", "attribution"),
    "longest_k": ("top", "length"),
    "highest_loss_k": ("top", "loss"),
    "embedding_knn_k": ("top", "embedding"),
    "metadata_k": ("top", "metadata"),
    "sae_top_k": ("top", "sae"),
    "probe_top_k": ("top", "probe"),
    "random_k": ("random", None),
    "random_2x_k": ("random", None),
    "random_4x_k": ("random", None),
    "label_k": ("label", "attribution"),
    "longest_label_k": ("longest_label", "attribution"),
    "full_pool": ("full_pool", None),
}
"""Standard arm name -> (kind, ranking). Each `_k` arm is built at every k; `metadata` means
`metadata:<select.metadata_column>`. A new ranking's arm is one more line here (e.g. `sae_top_k`).
`random_2x_k` / `random_4x_k` draw 2k / 4k random rows and are tested against `top_k` (the data-efficiency
curve: does top_k at k match random at m x k?); `label_k` draws k rows passing the label filter
(`select.label_column` in `label_values`), token-matched to top_k, tested against matched_random_k;
`longest_label_k` takes the longest rows passing that filter until top_k's completion tokens (a varying row count),
tested against matched_random_k too. `probe_top_k@<L>` (L in sae.probe_layers) is `probe_top_k` on block L."""

SIZE_MULTIPLIER = {"random_2x_k": 2, "random_4x_k": 4}
"""Standard arms drawn at a multiple of k."""

CONTROL_PREFIX = "matched_random_"
"""A ranked baseline arm X gets the control `matched_random_X` (matched to X's own composition)."""

if TYPE_CHECKING:  # a Literal built at run time is opaque to a type checker: to it, a standard arm is a str
    StandardArm = str
else:
    StandardArm = Literal[tuple(STANDARD_ARMS)]

LAYER_ARM = re.compile(r"^probe_top_k@(\d+)$")
"""`probe_top_k@<L>`: the probe arm of block L (a named probe; L must be in sae.probe_layers)."""
LayerArm = Annotated[str, StringConstraints(pattern=LAYER_ARM.pattern)]
LAYER_PROBE = re.compile(r"^probe@(\d+)$")
"""`probe@<L>`: the ranking of the residual probe on block L."""

RANKINGS = ("attribution", "length", "loss", "embedding", "sae", "probe")
"""Named rankings (example_id -> score, higher first); `metadata:<column>` names a pool column too, and
`attribution@<method>` one method's scores when the run scores with several."""

METHOD_SEPARATOR = "@"
"""`top_k@trak`: the arm `top_k` of method trak; `attribution@trak`: that method's ranking."""


class ArmSpec(Section):
    """A custom arm: one kind of selection from one ranking (e.g. a rank window of the attribution ranking)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Arm name; names its train_/eval_ folders.")
    kind: Literal["top", "matched_random", "matched_random_rest", "random", "window", "random_beyond", "full_pool",
                  "label", "longest_label"] = Field(
        description="top: the n best rows; matched_random: n random rows of the whole pool matched on outcome x "
        "length bin to the top n (overlap allowed: what a user would otherwise pick); matched_random_rest: the same "
        "from the rows outside the top n (the seed's control); random: n uniformly random rows; window: ranks a..b; "
        "random_beyond: n random "
        "rows ranked below `beyond`; full_pool: every pool row; label: n random rows passing the label filter, "
        "token-matched to the top n; longest_label: the longest rows passing the label filter until the top n's "
        "completion tokens."
    )
    ranking: str = Field("attribution", description="attribution, length, loss, embedding, sae, probe, probe@<L> or "
                         "metadata:<column>.")
    n: int | None = Field(None, gt=0, description="Rows (top, matched_random, random, random_beyond); null = select.k.")
    ranks: tuple[int, int] | None = Field(None, description="window only: first and last rank, 1-based, both included.")
    beyond: int | None = Field(None, gt=0, description="random_beyond only: draw from ranks beyond this one.")
    versus: str | list[str] | None = Field(
        None, description="Arm(s) this one is tested against in the report, the first the main comparison; null = "
        "matched_random_k (at select.k) when it runs.",
    )

    @model_validator(mode="after")
    def _check_kind_fields(self) -> ArmSpec:
        if (self.ranking not in RANKINGS and not (self.ranking.startswith("metadata:") and len(self.ranking) > 9)
                and not LAYER_PROBE.match(self.ranking)):
            raise ValueError(f"ranking = {self.ranking!r}: expected one of {', '.join(RANKINGS)}, probe@<L> or "
                             "metadata:<column>")
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
    versus: tuple[str, ...] = ()
    family: str | None = None
    k: int | None = None


class SelectConfig(Section):
    """The arms, all of one size k per standard arm: named rankings x arm kinds."""

    k: int = Field(500, gt=0, description="Rows per standard arm (attribution's top-k summary uses it too).")
    extra_k: list[PositiveInt] = Field(
        default_factory=list,
        description="More sizes: each standard `_k` arm is also built at each (named top_300, ...); "
        "the report plots accuracy vs k.",
    )
    arms: list[StandardArm | LayerArm | ArmSpec] = Field(
        # mypy reads the lambda's list as list[str], not list[StandardArm | LayerArm | ArmSpec]
        default_factory=lambda: ["top_k", "matched_random_k", "random_k"],  # type: ignore[arg-type]
        description="Arms to build, train and evaluate: standard names (" + ", ".join(STANDARD_ARMS)
        + "), probe_top_k@<L> (the probe of block L in sae.probe_layers) or custom arms {name, kind, ranking, n, "
        "ranks, beyond, versus}.",
    )
    metadata_column: str | None = Field(
        None, description="Numeric pool column that metadata_k ranks by, highest first (e.g. reward_model_score)."
    )
    length_bins: int = Field(5, gt=0, description="Length quantile bins used for matching (5 = quintiles).")
    match_column: str = Field(
        "outcome", description="Row column the matching strata use beside the length bin (outcome; category for SmolTalk)."
    )
    match_tokens: bool = Field(
        False, description="Matched random and label arms also match their target's total completion tokens "
        "(within token_tolerance), by swaps inside strata.",
    )
    token_tolerance: float = Field(0.02, gt=0, lt=1, description="Relative tolerance of token matching (0.02 = 2%).")
    label_column: str | None = Field(None, description="Row column label_k and longest_label_k filter on (e.g. quality).")
    label_values: list[str] = Field(
        default_factory=lambda: ["good", "excellent"], description="Values of label_column a label_k row may have."
    )
    stratify_by: str | None = Field(
        None, description="Row column (e.g. category): every top-n selection takes the best rows within each of its "
        "values, in proportion to the value's share of the rows drawn from; matched controls match on it too.",
    )
    predictor_split: Literal["auto", "train_base", "candidates"] = Field(
        "auto", description="Rows the predictor arms (ranked by sae or probe, and their matched controls) are drawn "
        "from: candidates (new rows never scored by gradients, data.candidates), train_base (the scored pool, "
        "cross-fitted predictions); auto = candidates when data has that split, else the pool.",
    )

    @field_validator("arms", mode="before")
    @classmethod
    def _known_names(cls, arms):
        """Unknown standard names in one line; a custom arm's `ranks` list as the tuple it is (after this
        validator pydantic's strict mode reads the arms as Python values, where a list is not a tuple)."""
        for arm in arms if isinstance(arms, list) else []:
            if isinstance(arm, str) and arm not in STANDARD_ARMS and not LAYER_ARM.match(arm):
                raise ValueError(f"unknown arm {arm!r}: expected one of {', '.join(STANDARD_ARMS)}, "
                                 "probe_top_k@<L>, or a custom arm {name, kind, ...}")
        if not isinstance(arms, list):
            return arms
        return [a | {"ranks": tuple(a["ranks"])} if isinstance(a, dict) and isinstance(a.get("ranks"), list) else a
                for a in arms]

    @model_validator(mode="after")
    def _check_arms(self) -> SelectConfig:
        if "metadata_k" in self.arms and not self.metadata_column:
            raise ValueError("arm metadata_k needs select.metadata_column (the pool column it ranks by)")
        for arm in ("label_k", "longest_label_k"):
            if arm in self.arms and not self.label_column:
                raise ValueError(f"arm {arm} needs select.label_column (the row column it filters on, e.g. quality)")
        if self.k in self.extra_k or len(set(self.extra_k)) != len(self.extra_k):
            raise ValueError(f"extra_k = {self.extra_k} repeats a size (k = {self.k})")
        names = [a.name for a in plan_arms(self)]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"arm name(s) {', '.join(repeated)} appear more than once")
        unknown = sorted({v for a in plan_arms(self) for v in a.versus if v not in names})
        if unknown:
            raise ValueError(f"versus names arm(s) {', '.join(unknown)} that are not in select.arms")
        return self


PREDICTOR_RANKINGS = ("sae", "probe")
"""Rankings a predictor computes without gradients: the only ones that can rank the candidates split (with
`probe@<L>`, the probe of block L)."""


def is_predictor_ranking(ranking: str | None) -> bool:
    """sae, probe or probe@<L>."""
    return ranking in PREDICTOR_RANKINGS or probe_layer(ranking) is not None


def probe_layer(ranking: str | None) -> int | None:
    """L of the ranking `probe@<L>`, None for any other ranking."""
    match = LAYER_PROBE.match(ranking or "")
    return int(match.group(1)) if match else None


def arm_split(select: SelectConfig, arm: PlannedArm, has_candidates: bool) -> str:
    """The split an arm's rows are drawn from: `candidates` for a predictor arm (its ranking is sae, probe or
    probe@<L>, a matched control included) when `select.predictor_split` says so (auto: when data has candidates)."""
    if not is_predictor_ranking(arm.ranking) or select.predictor_split == "train_base":
        return "train_base"
    if select.predictor_split == "candidates" or has_candidates:
        return "candidates"
    return "train_base"


def plan_arms(select: SelectConfig, methods: Sequence[str] = ()) -> list[PlannedArm]:
    """Every arm with its name, size and comparison resolved, in config order (standard arms per k; a
    ranked baseline's own matched control right after it). With `methods` (`attribute.methods`), the
    attribution arms once per method (module docstring)."""
    if methods:
        return _per_method(select, list(methods))
    ks = [select.k, *select.extra_k]
    several = len(ks) > 1

    def named(family: str, k: int) -> str:
        """`top_k` -> `top_300` with several sizes; a layer suffix stays last (`probe_top_300@1`)."""
        base, at, layer = family.partition(METHOD_SEPARATOR)
        return (f"{base.removesuffix('_k')}_{k}" if several else base) + at + layer

    reference = named("matched_random_k", select.k) if "matched_random_k" in select.arms else None
    planned = []
    for arm in select.arms:
        if isinstance(arm, ArmSpec):
            n = arm.n if arm.n is not None or arm.kind == "full_pool" else select.k
            if arm.ranks is not None:
                n = arm.ranks[1] - arm.ranks[0] + 1
            against = [arm.versus] if isinstance(arm.versus, str) else arm.versus
            if against is None:
                against = [reference] if reference is not None and arm.name != reference else []
            ranking = arm.ranking if arm.kind != "random" else None
            planned.append(PlannedArm(arm.name, arm.kind, ranking, n, arm.ranks, arm.beyond, tuple(against)))
            continue
        base, _, layer = arm.partition(METHOD_SEPARATOR)  # probe_top_k@<L>: the probe of block L
        kind, ranking = STANDARD_ARMS[base]
        if layer:
            ranking = f"{ranking}{METHOD_SEPARATOR}{layer}"
        if ranking == "metadata":
            ranking = f"metadata:{select.metadata_column}"
        if kind == "full_pool":
            planned.append(PlannedArm(arm, kind, None, None, versus=_some(reference), family=arm))
            continue
        for k in ks:
            same_k_reference = named("matched_random_k", k) if reference else None
            if arm in SIZE_MULTIPLIER:
                main = named("top_k", k) if "top_k" in select.arms else same_k_reference
                planned.append(PlannedArm(named(arm, k), kind, None, k * SIZE_MULTIPLIER[arm], versus=_some(main),
                                          family=arm, k=k))
                continue
            if kind == "top" and arm != "top_k":  # a ranked baseline: tested against its own matched control
                control = CONTROL_PREFIX + arm
                planned.append(PlannedArm(named(arm, k), kind, ranking, k, versus=(named(control, k),), family=arm, k=k))
                planned.append(PlannedArm(named(control, k), "matched_random", ranking, k, family=control, k=k))
                continue
            versus = () if kind.startswith("matched_random") else _some(same_k_reference)
            if arm == "top_k" and "matched_random_rest_k" in select.arms:
                versus += (named("matched_random_rest_k", k),)
            planned.append(PlannedArm(named(arm, k), kind, ranking, k, versus=versus, family=arm, k=k))
    return planned


def _some(name: str | None) -> tuple[str, ...]:
    return (name,) if name is not None else ()


def _per_method(select: SelectConfig, methods: list[str]) -> list[PlannedArm]:
    """The plan of one method, repeated per method for the attribution arms: `<name>@<method>`, ranked by
    `attribution@<method>`, tested against its own method's arms; the other arms once, referring to the first
    method's."""
    single = plan_arms(select)
    attributed = {a.name for a in single if a.family in PER_METHOD_ARMS}

    def at(name: str, method: str) -> str:
        return f"{name}{METHOD_SEPARATOR}{method}" if name in attributed else name

    planned = []
    for arm in single:
        if arm.name not in attributed:
            planned.append(replace(arm, versus=tuple(at(v, methods[0]) for v in arm.versus)))
            continue
        for method in methods:
            planned.append(replace(arm, name=at(arm.name, method), ranking=f"attribution{METHOD_SEPARATOR}{method}",
                                   versus=tuple(at(v, method) for v in arm.versus),
                                   family=f"{arm.family}{METHOD_SEPARATOR}{method}"))
    return planned


PER_METHOD_ARMS = ("top_k", "matched_random_k", "matched_random_rest_k", "label_k", "longest_label_k")
"""Standard arms built once per method when the run scores with several (they rank or match by attribution)."""


def size_problems(plan: list[PlannedArm], pool_rows: int, pool: str = "the pool") -> list[str]:
    """Arms that cannot be drawn from `pool_rows` rows (`pool` names them; checked by the data stage, as
    soon as the size is known, not after training and attribution): n or a window beyond them, or no
    n rows ranked beyond `beyond`."""
    out = []
    for arm in plan:
        if arm.ranks is not None and arm.ranks[1] > pool_rows:
            out.append(f"arm {arm.name!r}: ranks {arm.ranks[0]}..{arm.ranks[1]} reach beyond {pool} ({pool_rows} rows)")
        elif arm.beyond is not None and pool_rows - arm.beyond < (arm.n or 0):
            out.append(f"arm {arm.name!r}: only {max(pool_rows - arm.beyond, 0)} rows rank beyond {arm.beyond}, "
                       f"fewer than n = {arm.n}")
        elif arm.n is not None and arm.n > pool_rows:
            what = f"select.k = {arm.k}" if arm.k is not None and arm.n == arm.k else f"n = {arm.n}"
            out.append(f"arm {arm.name!r}: {what} is larger than {pool} ({pool_rows} rows)")
    return out
