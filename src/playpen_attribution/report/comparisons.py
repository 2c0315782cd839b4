"""Arm against arm on the same eval rows, per seed and across seeds, for every metric both evaluations hold;
then the verdicts: the pre-declared primary comparison alone, the secondary ones Holm-adjusted behind it.

Metrics (`METRICS`): `accuracy` (word accuracy of greedy generation: reads whether an arm learned the
answer *format* as well as the word), `choice_accuracy` (the target ranked first among the eval's words
by log-likelihood: reads what an arm knows, whatever it writes) and `eval_loss` (lower is better).
Per seed, descriptive: exact McNemar on a binary metric, a paired bootstrap interval and a sign-flip
test on eval loss, Holm-adjusted among themselves. Across seeds, the verdicts' test:
`stats.across_seed_test` (crossed seed x row variance, Satterthwaite degrees of freedom, the smallest
detectable difference at 80% power, intervals cut to the metric's range).

`decide` applies the fixed sequence: the primary test (`report.primary`, or the default: top_k against
its first control on the first metric the run has of choice accuracy, word accuracy, eval loss) at
alpha alone; every other across-seed test (other comparisons, other metrics, benchmarks) is
Holm-adjusted among themselves and may be claimed only when the primary holds. Verdicts: `arm` /
`versus` (that side reliably better), `none` (not significant: see `mde`), `one_seed`,
`no_replication`, `gated` (significant after Holm, but the primary comparison did not hold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from playpen_attribution.errors import UserError
from playpen_attribution.report import stats
from playpen_attribution.report.records import Aggregate, Control, MultipleTesting, Primary, SeedComparison
from playpen_attribution.run.artifacts import Prediction

ALPHA = 0.05
"""Level of every verdict: the primary test's, and the secondary tests' after Holm."""


@dataclass(frozen=True)
class Metric:
    """A per-row metric two evaluations are compared on."""

    name: str
    label: str
    higher_is_better: bool
    binary: bool
    bounds: tuple[float, float] | None
    """The range of a difference of two means of it (None: unbounded)."""


METRICS = {
    "choice_accuracy": Metric("choice_accuracy", "choice accuracy", True, True, (-1.0, 1.0)),
    "accuracy": Metric("accuracy", "word accuracy", True, True, (-1.0, 1.0)),
    "eval_loss": Metric("eval_loss", "eval loss", False, False, None),
}
"""In the order a default primary metric is chosen."""


def row_values(preds: dict[str, Prediction], metric: str, accuracy_field: str) -> dict[str, float]:
    """example_id -> the row's value of `metric` (rows without one left out): correctness for the accuracies,
    the completion loss for eval_loss. `accuracy_field` is target_correct or correct (see results._entry)."""
    if metric == "eval_loss":
        return {e: p.loss for e, p in preds.items() if p.loss is not None and np.isfinite(p.loss)}
    field = "choice_correct" if metric == "choice_accuracy" else accuracy_field
    return {e: float(getattr(p, field)) for e, p in preds.items() if getattr(p, field) is not None}


def _paired(a: dict[str, float], b: dict[str, float], metric: Metric, what: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Both models' values on the same rows; eval loss keeps the rows finite in both (the others counted)."""
    if not metric.binary:
        shared = sorted(set(a) & set(b))
        return np.array([a[i] for i in shared]), np.array([b[i] for i in shared]), len(set(a) | set(b)) - len(shared)
    _, va, vb = stats.paired(a, b, what)
    return np.array(va, dtype=float), np.array(vb, dtype=float), 0


def available(preds: dict, names: Sequence[tuple[str, int | None]], accuracy_field: str) -> list[str]:
    """The metrics every one of these (model, seed) evaluations has values of."""
    return [m for m in METRICS if all(row_values(preds[key], m, accuracy_field) for key in names)]


def per_seed(arm: str, versus: str, seed: int | None, preds: dict, accuracy_field: str) -> SeedComparison:
    """One seed, arm against versus on the same eval rows, every metric both have (descriptive tests)."""
    a, b = preds[(arm, seed)], preds[(versus, seed)]
    out = SeedComparison(arm=arm, versus=versus, seed=seed, metrics={})
    for name in available(preds, [(arm, seed), (versus, seed)], accuracy_field):
        metric = METRICS[name]
        va, vb, excluded = _paired(row_values(a, name, accuracy_field), row_values(b, name, accuracy_field), metric,
                                   f"{arm} vs {versus} (seed {seed}, {metric.label})")
        if not va.size:
            continue
        if metric.binary:
            table = stats.mcnemar_exact(va.astype(bool), vb.astype(bool))
            test = {"difference": float(va.mean() - vb.mean()), "mcnemar": table, "p_value": table["p_value"],
                    "test": "exact McNemar"}
        else:
            diff = va - vb
            test = {"difference": float(diff.mean()), "interval": stats.bootstrap_mean(diff),
                    "p_value": stats.sign_flip_p(diff), "test": "sign-flip permutation", "rows_excluded": excluded}
        out.metrics[name] = test
    return out


def across_seeds(arm: str, versus: str, seeds: list[int], preds: dict, accuracy_field: str) -> Aggregate:
    """Across seeds: per metric the mean paired difference, its across-seed test, and the seeds favouring each side."""
    out = Aggregate(arm=arm, versus=versus, seeds=seeds, metrics={})
    keys = [(name, s) for s in seeds for name in (arm, versus)]
    for name in available(preds, keys, accuracy_field):
        metric = METRICS[name]
        pairs = [_paired(row_values(preds[(arm, s)], name, accuracy_field),
                         row_values(preds[(versus, s)], name, accuracy_field), metric,
                         f"{arm} vs {versus} (seed {s}, {metric.label})") for s in seeds]
        if metric.binary:
            diffs = np.stack([va - vb for va, vb, _ in pairs])
        else:  # eval loss: the rows finite in every evaluation of both arms
            values = [(row_values(preds[(arm, s)], name, accuracy_field), row_values(preds[(versus, s)], name,
                                                                                   accuracy_field)) for s in seeds]
            shared = sorted(set.intersection(*[set(va) & set(vb) for va, vb in values]))
            if not shared:
                continue
            diffs = np.array([[va[i] - vb[i] for i in shared] for va, vb in values])
        means = diffs.mean(axis=1)
        direction = 1 if metric.higher_is_better else -1
        test = stats.across_seed_test(diffs, alpha=ALPHA, bounds=metric.bounds)
        out.metrics[name] = test | {
            "arm_mean": float(np.mean([va.mean() for va, _, _ in pairs])),
            "versus_mean": float(np.mean([vb.mean() for _, vb, _ in pairs])),
            "per_seed": [float(m) for m in means],
            "seeds_favouring_arm": int((direction * means > 0).sum()),
            "seeds_favouring_versus": int((direction * means < 0).sum()), "seeds_tied": int((means == 0).sum())}
        if metric.binary:
            out.metrics[name]["mcnemar"] = stats.mcnemar_pooled(
                [stats.mcnemar_exact(va.astype(bool), vb.astype(bool)) for va, vb, _ in pairs])
    return out


def _side(test: dict, metric: Metric, p: float | None) -> str:
    if test["status"] != "tested":
        return test["status"]
    if p is None or p >= ALPHA:
        return "none"
    better = test["mean"] > 0 if metric.higher_is_better else test["mean"] < 0
    return "arm" if better else "versus"


def resolve_primary(declared: dict | None, aggregate: list[Aggregate]) -> Primary | None:
    """The primary comparison {arm, versus, metric, declared}: `report.primary` as declared (a UserError when the
    run has no such comparison or metric), else top_k against its first control (else the first comparison) on
    the first metric it has of choice accuracy, word accuracy and eval loss. None without comparisons."""
    if declared is not None:
        found = next((a for a in aggregate if (a.arm, a.versus) == (declared["arm"], declared["versus"])), None)
        if found is None:
            raise UserError(f"report.primary: {declared['arm']} vs {declared['versus']} is not a comparison of this "
                            f"run (have: {', '.join(a.arm + ' vs ' + a.versus for a in aggregate) or 'none'})")
        if declared["metric"] not in found.metrics:
            raise UserError(f"report.primary.metric = {declared['metric']!r}: {found.arm} vs {found.versus} "
                            f"has no values of it (have: {', '.join(found.metrics) or 'none'})")
        return Primary(arm=declared["arm"], versus=declared["versus"], metric=declared["metric"], declared=True)
    if not aggregate:
        return None
    found = next((a for a in aggregate if a.arm == "top_k"), aggregate[0])
    metric = next((m for m in METRICS if m in found.metrics), None)
    return None if metric is None else Primary(arm=found.arm, versus=found.versus, metric=metric, declared=False)


def decide(aggregate: list[Aggregate], per_seed_comparisons: list[SeedComparison], benchmarks: dict | None,
           declared_primary: dict | None) -> tuple[Primary | None, MultipleTesting]:
    """Verdicts by the fixed sequence (see the module doc): writes each test's `p_holm` and `verdict` (in the
    comparisons' and the benchmarks' tests); returns the primary comparison with its verdict, and how the
    tests were adjusted."""
    primary = resolve_primary(declared_primary, aggregate)
    first = None
    secondary: list[tuple[dict, Metric | None]] = []
    for agg in aggregate:
        for name, test in agg.metrics.items():
            if primary and (agg.arm, agg.versus, name) == (primary.arm, primary.versus, primary.metric):
                first = test
            elif test["p_value"] is not None:
                secondary.append((test, METRICS[name]))
    secondary += [(b, None) for b in (benchmarks or {}).get("aggregate", []) if b["p_value"] is not None]
    gate, adjusted = stats.fixed_sequence(first["p_value"] if first else None, [t["p_value"] for t, _ in secondary], ALPHA)
    if first is not None and primary is not None:  # first is the primary's test
        first["verdict"] = _side(first, METRICS[primary.metric], first["p_value"])
        primary = replace(primary, verdict=first["verdict"], test=first)
    for (test, metric), p_holm in zip(secondary, adjusted, strict=True):
        test["p_holm"] = p_holm
        if metric is not None:
            side = _side(test, metric, p_holm)
            test["verdict"] = "gated" if side in ("arm", "versus") and not gate else side
    for agg in aggregate:
        for name, test in agg.metrics.items():
            test.setdefault("verdict", _side(test, METRICS[name], None))
    per_seed_tests = [m for c in per_seed_comparisons for m in c.metrics.values() if m["p_value"] is not None]
    per_seed_tests += [c for c in (benchmarks or {}).get("comparisons", []) if c.get("p_value") is not None]
    for test, p_holm in zip(per_seed_tests, stats.holm([t["p_value"] for t in per_seed_tests]), strict=True):
        test["p_holm"] = p_holm
    return primary, MultipleTesting(
        procedure="fixed sequence: the primary test alone at alpha, then Holm over the secondary tests, "
                  "claimed only when the primary holds",
        alpha=ALPHA, primary_holds=gate, secondary_tests=len(secondary), per_seed_tests=len(per_seed_tests))


EXPECTATIONS = {"arm_better": ("arm",), "versus_better": ("versus",), "no_difference": ("none",)}
"""`report.expect` -> the primary verdicts that pass the control."""


def control(primary: Primary | None, expect: str | None) -> Control | None:
    """A control's outcome: did the primary comparison give the declared answer (`report.expect`)?"""
    if expect is None:
        return None
    found = primary.verdict if primary else None
    out = Control(expect=expect, found=found, passed=found in EXPECTATIONS[expect])
    if primary is None or not primary.test:
        return out
    test = primary.test
    seeds = len(test.get("per_seed", []))
    agree = (test.get("seeds_favouring_arm") == seeds if expect == "arm_better"
             else test.get("seeds_favouring_versus") == seeds if expect == "versus_better" else None)
    return replace(out, seeds_agree=agree, tested=True)
