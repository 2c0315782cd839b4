"""The report's method table, when the attribute stage scored the pool with several methods (`attribute.methods`).

`method_table(run_dir, aggregate)` reads the attribute folder's manifest (each method's seconds and peak
memory, `methods`), each method's `methods/<method>/summary.json` (AUROC of clean vs planted rows, where the
source planted some) and scores (Spearman between every pair of methods), and the across-seed verdict of
`top_k@<method>` against its own control (`report.json`'s `aggregate`); `method_lines` renders it. Costs are
relative to gradient cosine in the same run when it ran (`relative_to`), else to the first method.
"""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path

import numpy as np

from playpen_attribution.run import artifacts

REFERENCE = "gradient_cosine"
VERDICT_METRICS = ("choice_accuracy", "accuracy", "eval_loss")
"""The metric a method's top-k verdict is read on: the first of these the comparison has."""


def spearman(a: dict[str, float], b: dict[str, float]) -> float | None:
    """Spearman correlation of two rankings over the ids both score finitely (None with fewer than 3)."""
    from scipy.stats import spearmanr

    ids = [e for e in a if e in b and np.isfinite(a[e]) and np.isfinite(b[e])]
    if len(ids) < 3:
        return None
    value = spearmanr([a[e] for e in ids], [b[e] for e in ids]).statistic
    return None if not np.isfinite(value) else float(value)


def relative(costs: dict[str, dict], key: str) -> dict[str, float | None]:
    """Each method's `key` divided by the reference method's (gradient cosine, else the first)."""
    reference = costs.get(REFERENCE) or next(iter(costs.values()), {})
    base = reference.get(key)
    return {m: (c[key] / base if base and c.get(key) is not None else None) for m, c in costs.items()}


def top_k_verdict(aggregate: list[dict], method: str) -> dict | None:
    """`top_k@<method>` against its first control on the first metric of VERDICT_METRICS it has. With
    `select.extra_k` the arm is named by its size (`top_300@<method>`); the first one is select.k's."""
    name = re.compile(rf"top_(k|\d+)@{re.escape(method)}")
    found = next((a for a in aggregate if name.fullmatch(a["arm"])), None)
    if found is None:
        return None
    metric = next((m for m in VERDICT_METRICS if m in found["metrics"]), None)
    if metric is None:
        return None
    test = found["metrics"][metric]
    return {"versus": found["versus"], "metric": metric, "mean": test.get("mean"), "ci_low": test.get("ci_low"),
            "ci_high": test.get("ci_high"), "p_value": test.get("p_value"), "verdict": test.get("verdict")}


def method_table(run_dir: Path, aggregate: list[dict]) -> dict | None:
    """{methods: {method: {seconds, peak_rss_mb, relative_seconds, relative_peak_rss, auroc_planted, top_k}},
    spearman: {"a vs b": rho}} for a run whose attribute stage scored with several methods; else None."""
    folder = Path(run_dir) / artifacts.ATTRIBUTE
    if not artifacts.is_stage_folder(folder):
        return None
    costs = artifacts.load_manifest(folder).fields.get("methods")
    if not costs:
        return None
    seconds, memory = relative(costs, "seconds"), relative(costs, "peak_rss_mb")
    scores = {m: artifacts.load_scores(artifacts.method_dir(folder, m)) for m in costs}
    table = {}
    for method, cost in costs.items():
        summary = artifacts.load_attribution_summary(artifacts.method_dir(folder, method))
        table[method] = {"seconds": cost.get("seconds"), "peak_rss_mb": cost.get("peak_rss_mb"),
                         "relative_seconds": seconds[method], "relative_peak_rss": memory[method],
                         "query_index_reused": cost.get("query_index_reused", False),
                         "auroc_planted": (summary.get("planted") or {}).get("auroc_clean_vs_planted"),
                         "top_k": top_k_verdict(aggregate, method)}
    return {"methods": table, "spearman": {f"{a} vs {b}": spearman(scores[a], scores[b])
                                           for a, b in combinations(costs, 2)}}


def number(value, fmt: str = ".3f") -> str:
    """A cost or score as the method table writes it (`n/a` for None)."""
    return "n/a" if value is None else format(value, fmt)


def gain(v: dict | None) -> str:
    """A `top_k_verdict` as `+0.090 [+0.048, +0.132] on choice accuracy, p 0.0032` (`n/a` without one)."""
    if not v or v.get("mean") is None:
        return "n/a"
    interval = "" if v.get("ci_low") is None else f" [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]"
    return f"{v['mean']:+.3f}{interval} on {v['metric'].replace('_', ' ')}, p {number(v.get('p_value'), '.2g')}"


def method_lines(table: dict | None) -> list[str]:
    """The `## Attribution methods` section from `method_table`'s result (nothing when the run scored with one
    method)."""
    if not table:
        return []
    lines = ["## Attribution methods", "",
             ("Each method ranks the same pool; `top_k@<method>` is tested against its own matched control. Cost is "
              "the attribute stage's seconds and peak resident memory for that method, relative to gradient cosine "
              "in this run (`reused`: its query index came from the cache)."), "",
             "| method | seconds | × | peak RSS MB | × | AUROC clean vs planted | top_k − control | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for method, m in table["methods"].items():
        verdict = (m["top_k"] or {}).get("verdict") or "n/a"
        reused = " (reused)" if m.get("query_index_reused") else ""
        lines.append(f"| {method} | {number(m['seconds'], '.1f')}{reused} | {number(m['relative_seconds'], '.2f')} | "
                     f"{number(m['peak_rss_mb'], '.0f')} | {number(m['relative_peak_rss'], '.2f')} | "
                     f"{number(m['auroc_planted'])} | {gain(m['top_k'])} | {verdict} |")
    if table["spearman"]:
        lines += ["", "Spearman between methods' scores: " + "; ".join(
            f"{pair} {number(rho)}" for pair, rho in table["spearman"].items()) + "."]
    return lines + [""]
