"""How one value reads in report.md: an accuracy cell, a difference with its interval, a p-value, a setting.

Accuracy cells read `62/152 = 0.4079 [0.33, 0.49]` (count, accuracy, Wilson 95% interval); differences
read `+0.030 [-0.020, +0.080]` (mean, 95% interval; `*` when the interval was cut to the metric's
range). Counts, settings and lists read as words, never Python reprs. Used by `report.markdown` and
`report.markdown_tables`.
"""

from __future__ import annotations

from playpen_attribution.report.records import ArmEntry
from playpen_attribution.run.artifacts import ArmSelection

KIND_TEXT = {"top": "top {n} by {ranking}", "matched_random": "random, matched on strata x length to the top {n} by {ranking}",
             "window": "ranks {ranks} by {ranking}", "random_beyond": "{n} random rows ranked beyond {beyond} by {ranking}",
             "random": "{n} rows drawn uniformly at random", "full_pool": "the whole pool",
             "label": "{n} random rows passing the label filter, token-matched to the top {n} by {ranking}",
             "longest_label": "the longest rows passing the label filter, up to the completion tokens of the top {n} by "
                              "{ranking}"}
METRIC_TEXT = {"target_correct": ("word accuracy vs target word", "vs transcript guess"),
               "correct": ("word accuracy vs transcript guess", "vs target word")}
"""The accuracy field -> (its column's name, the other accuracy's column)."""


def accuracy(arm: ArmEntry) -> str:
    if arm.accuracy is None:
        return "n/a"
    return f"{arm.correct}/{arm.total} = {arm.accuracy:.4f} [{arm.ci_low:.2f}, {arm.ci_high:.2f}]"


def other_accuracy(arm: ArmEntry) -> str:
    """The accuracy the verdict does not use: against the transcript's guess when the target word is the
    metric, against the target word otherwise."""
    if arm.metric == "target_correct":
        if arm.transcript_accuracy is None:
            return "n/a"
        return f"{arm.transcript_correct}/{arm.total} = {arm.transcript_accuracy:.4f}"
    if arm.target_total is None:
        return "n/a"
    return f"{arm.target_correct}/{arm.target_total} = {arm.target_accuracy:.4f}"


def no_guess(arm: ArmEntry) -> str:
    """Generations with no parsable guess: `n (share)`; empty when the arm was not generated from."""
    if arm.no_guess is None or not arm.total:
        return ""
    return f"{arm.no_guess} ({arm.no_guess / arm.total:.0%})"


def number(value) -> str:
    """A loss or mean to four places; n/a for none."""
    return "n/a" if value is None else f"{value:.4f}"


def difference(d: dict | None) -> str:
    """A test's or interval's mean with its 95% interval."""
    if not d or d.get("mean") is None:
        return "n/a"
    if d.get("ci_low") is None:
        return f"{d['mean']:+.3f}"
    return f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" + ("*" if d.get("clipped") else "")


def p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def p_is(value: float | None, name: str = "p") -> str:
    """A p-value in a sentence: `p < 0.001`, `p = 0.012`."""
    text = p(value)
    return f"{name} {text[0]} {text[1:]}" if text.startswith("<") else f"{name} = {text}" if value is not None else f"{name} n/a"


def value(item) -> str:
    """A setting's value in words: yes / no, n/a, a list joined, a section as `(key value, ...)`."""
    if isinstance(item, bool):
        return "yes" if item else "no"
    if item is None:
        return "n/a"
    if isinstance(item, (list, tuple)):
        return ", ".join(map(value, item))
    if isinstance(item, dict):
        return f"({settings(item)})"
    return str(item)


def counts(found: dict | None) -> str:
    """`{"success": 3, "failure": 1}` as `3 success, 1 failure`."""
    return ", ".join(f"{n} {what}" for what, n in found.items()) if found else "none"


def settings(section: dict) -> str:
    """`{"limit": None, "log_samples": True}` as `limit n/a, log_samples yes`."""
    return ", ".join(f"{k} {value(v)}" for k, v in section.items())


def describe_arm(spec: ArmSelection) -> str:
    """What an arm's rows are, in words (`KIND_TEXT`)."""
    text = KIND_TEXT.get(spec.kind, "{kind}")
    ranks = spec.ranks
    return text.format(n=spec.n, ranking=spec.ranking, beyond=spec.beyond, kind=spec.kind,
                       ranks=f"{ranks[0]}-{ranks[1]}" if ranks else None)
