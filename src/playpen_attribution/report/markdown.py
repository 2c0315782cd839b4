"""`report.md` from the report's records (`report.records.Report`): the page's order, and its answer.

This module owns the page (`render_markdown`) and what it says first: a control's PASSED / FAILED line,
the primary comparison, the secondary ones, what makes a comparison unreliable (warnings); then the first
figure, arm − vs per seed with the interval (`differences.png`), and the across-seeds table. The setup,
the per-seed tables, the arms, the predictor, the benchmarks and the cost are `report.markdown_tables`';
how one value reads (an accuracy cell, a difference, a p-value) is `report.cells`'.
"""

from __future__ import annotations

from playpen_attribution.report import markdown_tables as tables
from playpen_attribution.report.cells import difference, p, p_is
from playpen_attribution.report.comparisons import METRICS
from playpen_attribution.report.methods import method_lines
from playpen_attribution.report.probe_study import probe_study_lines
from playpen_attribution.report.records import Aggregate, Report
from playpen_attribution.run.artifacts import DIFFERENCES_PLOT


def _verdict(agg: Aggregate, metric: str) -> str:
    """One comparison on one metric, in words: the verdict, the difference, its test and the seeds."""
    test, m = agg.metrics[metric], METRICS[metric]
    arm, versus, verdict = agg.arm, agg.versus, test["verdict"]
    better = "has a lower eval loss than" if metric == "eval_loss" else "is better than"
    worse = "has a higher eval loss than" if metric == "eval_loss" else "is worse than"
    head = {"arm": f"**{arm} {better} {versus}**", "versus": f"**{arm} {worse} {versus}**",
            "none": f"no reliable difference between {arm} and {versus}",
            "one_seed": f"{arm} vs {versus}: one seed, training variance not measured, no verdict",
            "no_replication": f"{arm} vs {versus}: no replication, the seeds' differences agree to rounding (the "
                              "seed changed nothing), no verdict",
            "gated": f"{arm} vs {versus}: not claimed (significant after Holm, but the primary comparison did not "
                     "hold, and a fixed sequence tests the rest only after it)"}[verdict]
    p_text = p_is(test["p_value"]) + (", " + p_is(test["p_holm"], "p_holm") if "p_holm" in test else "")
    text = f"{head} on {m.label}: Δ {difference(test)}"
    if test["status"] == "tested":
        text += f", {p_text}"
    text += (f"; seeds favouring {arm} / {versus}: {test['seeds_favouring_arm']} / {test['seeds_favouring_versus']} "
             f"of {len(test['per_seed'])}")
    if verdict == "none" and test.get("mde") is not None:
        text += f"; underpowered for smaller effects: this design detects |Δ| ≥ {test['mde']:.3f} at 80% power"
    return text + "."


CONTROL_TEXT = {"arm_better": "{arm} better than {versus}", "versus_better": "{arm} worse than {versus}",
                "no_difference": "no reliable difference between {arm} and {versus}"}
FOUND_TEXT = {"arm": CONTROL_TEXT["arm_better"], "versus": CONTROL_TEXT["versus_better"],
              "none": CONTROL_TEXT["no_difference"]}
"""The primary verdict -> what a control found, in words."""


def _control_lines(report: Report) -> list[str]:
    control, primary = report.control, report.primary
    if control is None:
        return []
    if primary is None:
        return ["**Control FAILED**: the run made no comparison.", ""]
    names = {"arm": primary.arm, "versus": primary.versus}
    expected = CONTROL_TEXT[control.expect].format(**names)
    verdict = primary.verdict
    found_text = FOUND_TEXT.get(verdict or "", f"no verdict ({verdict})").format(**names)
    head = "**Control PASSED**" if control.passed else "**Control FAILED**"
    seeds = ""
    if control.seeds_agree is not None:
        seeds = "; every seed agrees" if control.seeds_agree else "; not every seed agrees"
    metric = METRICS[primary.metric].label
    return [(f"{head}: a control experiment with a known answer. Expected {expected} on {metric}; found "
             f"{found_text}{seeds}."), ""]


def _warning_lines(report: Report) -> list[str]:
    out = []
    for w in report.warnings:
        where = f"{w.model}" + (f" (seed {w.seed})" if w.seed is not None else "")
        if w.kind == "not_converged":
            out.append(f"- **{where} did not finish learning**: its training loss was still falling when training "
                       f"stopped (the last quarter lowered it by {w.late_drop:.0%} of the whole drop; final loss "
                       f"{w.final_loss:.3f}); a comparison with it may read how far the schedule got.")
        else:
            out.append(f"- **{where} wrote no guess in {w.share:.0%} of the eval rows**: its word accuracy reads "
                       "whether it learned the answer format; choice accuracy reads what it knows.")
    return ["### Warnings", "", *out, ""] if out else []


def _missing_lines(report: Report) -> list[str]:
    """Reported with --allow-incomplete: which planned units the numbers lack."""
    if not report.missing_units:
        return []
    return ["- **Incomplete sweep:** no evaluation for " + ", ".join(
        f"{u['arm']} (seed {u['seed']})" for u in report.missing_units) + "; the comparisons use the seeds that exist."]


def _answer_lines(report: Report) -> list[str]:
    lines = ["## Answer", "", *_control_lines(report), *_missing_lines(report)]
    primary, testing = report.primary, report.multiple_testing
    aggs = {(a.arm, a.versus): a for a in report.aggregate}
    if primary is None:
        return lines + ["- No arm was tested against another (no `versus` arm ran).", ""]
    declared = "declared in the config" if primary.declared else "not declared: the default, top_k against its control"
    lines.append(f"- Primary comparison ({declared}), tested alone at α = "
                 f"{testing.alpha}: " + _verdict(aggs[(primary.arm, primary.versus)], primary.metric))
    rest = [(agg, metric) for agg in report.aggregate for metric in agg.metrics
            if (agg.arm, agg.versus, metric) != (primary.arm, primary.versus, primary.metric)]
    if rest:
        lines += ["", f"Secondary comparisons (Holm over {testing.secondary_tests} tests"
                  + ("" if testing.primary_holds else "; not claimed, the primary did not hold") + "):", ""]
        lines += [f"- {_verdict(agg, metric)}" for agg, metric in rest]
    return lines + [""] + _warning_lines(report)


def _aggregate_table(aggregate: list[Aggregate]) -> list[str]:
    lines = ["## Across seeds", "",
             "| arm | vs | metric | seeds | arm (mean) | vs (mean) | Δ [95% CI] | seeds arm / vs / tie | p | p_holm | verdict | detects at 80% power |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for agg in aggregate:
        for metric, t in agg.metrics.items():
            mde = f"\\|Δ\\| ≥ {t['mde']:.3f}" if t.get("mde") is not None else ""  # escaped: a bare | splits the cell
            lines.append(f"| {agg.arm} | {agg.versus} | {METRICS[metric].label} | {len(agg.seeds)} | "
                         f"{t['arm_mean']:.4f} | {t['versus_mean']:.4f} | {difference(t)} | "
                         f"{t['seeds_favouring_arm']} / {t['seeds_favouring_versus']} / {t['seeds_tied']} | "
                         f"{p(t['p_value'])} | {p(t['p_holm']) if 'p_holm' in t else 'primary'} | "
                         f"{t['verdict']} | {mde} |")
    lines += ["", ("Δ = arm − vs (a negative Δ eval loss favours the arm); `*`: the interval was cut to the metric's "
                   "range. p: the across-seed t-test; p_holm: Holm over the secondary tests (the primary is tested "
                   "alone). Verdicts: arm / versus (that side reliably better), none, one_seed, no_replication, "
                   "gated (significant, but the primary did not hold)."), ""]
    return lines


def _differences_figure(plots: list[str]) -> list[str]:
    """The first figure, under the answer: what the verdicts test."""
    if DIFFERENCES_PLOT not in plots:
        return []
    return [f"![arm minus vs, per seed, with the 95% interval]({DIFFERENCES_PLOT})", "",
            ("Each dot: one seed's mean difference on the same eval rows; black: the mean over seeds with its 95% "
             "interval (unadjusted); the verdict at the right is the report's (secondary ones Holm-adjusted "
             "behind the primary)."), ""]


def render_markdown(report: Report, name: str) -> str:
    lines = [f"# {name}: which training rows teach the task?", ""]
    lines += _answer_lines(report)
    lines += _differences_figure(report.plots)
    if report.aggregate:
        lines += _aggregate_table(report.aggregate)
    lines += tables.efficiency_lines(report.data_efficiency) + tables.setup_lines(report)
    lines += tables.seed_tables(report)
    lines += tables.benchmark_lines(report.benchmarks)
    lines += tables.attribution_lines(report.attribution)
    lines += method_lines(report.methods)
    lines += tables.predictor_lines(report.predictor)
    lines += probe_study_lines(report.probe_study)
    lines += tables.selection_lines(report.selection)
    rest = [plot for plot in report.plots if plot != DIFFERENCES_PLOT]
    if rest:
        lines += ["## Plots", ""] + [f"![{plot.removesuffix('.png').replace('_', ' ')}]({plot})" for plot in rest] + [""]
    lines += tables.cost_lines(report)
    return "\n".join(lines)
