"""What attribution scores look like, and how good a ranking is where the truth (outcome) is known.

Pure functions over dicts keyed by ``example_id``, plus two plots. Non-finite scores are counted and
ranked last (never zeroed); a correlation uses the rows where both values are finite and says how
many that were.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from playpen_attribution.attribution.selection import rank_ids

COMPOSITION_CUTS = (50, 100, 200)
"""Top-k cuts whose outcome composition the summary reports (plus select.k)."""
OUTCOME_COLORS = {"success": "#2a9d8f", "failure": "#d1495b", "aborted": "#8d8d8d"}
GROUP_COLORS = OUTCOME_COLORS | {"clean": "#2a9d8f"}
PLANTED_COLORS = ("#d1495b", "#edae49", "#9b5de5", "#2e4057")
"""The planted kinds' colours, in their sorted order."""


def correlation(xs: dict[str, float], ys: dict[str, float]) -> dict:
    """Pearson and Spearman of two id-keyed value sets over the ids where both are finite."""
    from scipy.stats import pearsonr, spearmanr

    ids = [e for e in xs if e in ys and _finite(xs[e]) and _finite(ys[e])]
    x, y = np.array([xs[e] for e in ids], float), np.array([ys[e] for e in ids], float)
    if len(ids) < 3 or x.std() == 0 or y.std() == 0:
        return {"pearson": None, "spearman": None, "n": len(ids)}
    return {"pearson": float(pearsonr(x, y)[0]), "spearman": float(spearmanr(x, y)[0]), "n": len(ids)}


def ranking_quality(scores: dict[str, float], outcomes: dict[str, str], ks: tuple[int, ...]) -> dict:
    """Precision@k of success rows (non-finite last) and the AUROC of success vs failure rows.

    AUROC uses the success and failure rows only; a non-finite score counts as the lowest score.
    """
    from sklearn.metrics import roc_auc_score

    ranked = rank_ids(scores)
    precision = {str(k): sum(outcomes[e] == "success" for e in ranked[:k]) / k for k in ks if k <= len(ranked)}
    labelled = [e for e in ranked if outcomes[e] in ("success", "failure")]
    finite = [scores[e] for e in labelled if _finite(scores[e])]
    floor = (min(finite) - 1.0) if finite else 0.0
    truth = [outcomes[e] == "success" for e in labelled]
    auroc = (float(roc_auc_score(truth, [scores[e] if _finite(scores[e]) else floor for e in labelled]))
             if 0 < sum(truth) < len(truth) else None)
    return {"precision_at_k": precision, "auroc": auroc, "rows": len(ranked),
            "non_finite": len(ranked) - sum(_finite(scores[e]) for e in ranked)}


def summarize(scores: dict[str, float], outcomes: dict[str, str], k: int,
              lengths: dict[str, int] | None = None, losses: dict[str, float] | None = None) -> dict:
    """Coverage, range, the planted-signal check (success share of the top-k vs the pool), top-k
    outcome composition at 50/100/200/k, AUROC, and correlations of score with length and loss."""
    finite = [s for s in scores.values() if _finite(s)]
    ranked = rank_ids(scores)
    k = min(k, len(ranked))
    successes = sum(outcomes[e] == "success" for e in ranked[:k])
    names = sorted(set(outcomes.values()))
    composition = {str(cut): {o: sum(outcomes[e] == o for e in ranked[:cut]) for o in names}
                   for cut in sorted({*COMPOSITION_CUTS, k}) if cut <= len(ranked)}
    summary = {
        "rows": len(scores),
        "finite": len(finite),
        "non_finite": len(scores) - len(finite),
        "finite_coverage": len(finite) / len(scores) if scores else 0.0,
        "min": min(finite) if finite else None,
        "max": max(finite) if finite else None,
        "mean": sum(finite) / len(finite) if finite else None,
        "k": k,
        "precision_success_at_k": successes / k if k else 0.0,
        "pool_success_fraction": sum(o == "success" for o in outcomes.values()) / len(outcomes),
        "auroc_success_vs_failure": ranking_quality(scores, outcomes, ())["auroc"],
        "top_k_composition": composition,
    }
    if lengths is not None:
        summary["score_vs_length"] = correlation(scores, {e: float(v) for e, v in lengths.items()})
    if losses is not None:
        summary["score_vs_loss"] = correlation(scores, losses)
    return summary


def planted_check(scores: dict[str, float], planted: dict[str, list[str]], k: int) -> dict:
    """Where a source planted harmful rows: the share of clean rows in the top-k against the pool, the
    planted rows of each kind in the top-k, and the AUROC of the score for clean vs planted."""
    from sklearn.metrics import roc_auc_score

    bad = set().union(*map(set, planted.values())) & set(scores)
    ranked = rank_ids(scores)
    k = min(k, len(ranked))
    finite = [s for s in scores.values() if _finite(s)]
    floor = (min(finite) - 1.0) if finite else 0.0
    truth = [e not in bad for e in ranked]
    auroc = (float(roc_auc_score(truth, [scores[e] if _finite(scores[e]) else floor for e in ranked]))
             if 0 < sum(truth) < len(truth) else None)
    top = set(ranked[:k])
    return {"k": k, "clean_fraction_at_k": sum(e not in bad for e in ranked[:k]) / k if k else 0.0,
            "pool_clean_fraction": 1 - len(bad) / len(scores) if scores else 0.0,
            "planted_at_k": {kind: len(top & set(ids)) for kind, ids in planted.items()},
            "planted_in_pool": {kind: len(set(ids) & set(scores)) for kind, ids in planted.items()},
            "auroc_clean_vs_planted": auroc}


def row_diagnostics(pool: list[dict], scores: dict[str, float], lengths: dict[str, int],
                    losses: dict[str, float]) -> list[dict]:
    """One record per pool row, in rank order (non-finite scores and losses written as null)."""
    rows = {r["example_id"]: r for r in pool}
    return [{"example_id": e, "rank": i + 1, "score": _or_none(scores[e]), "loss": _or_none(losses[e]),
             "length": lengths[e], "outcome": rows[e]["outcome"], "group_id": rows[e].get("group_id")}
            for i, e in enumerate(rank_ids(scores))]


def histogram_groups(scores: dict[str, float], outcomes: dict[str, str], planted: dict[str, list[str]]) -> dict[str, str]:
    """The group each row is drawn in: `planted: <kind>` or `clean` when the source planted rows (its known
    truth), else the row's outcome."""
    if not planted:
        return {e: outcomes[e] for e in scores}
    kind_of = {e: kind for kind, ids in planted.items() for e in ids}
    return {e: f"planted: {kind_of[e]}" if e in kind_of else "clean" for e in scores}


def top_k_cut(scores: dict[str, float], k: int) -> float | None:
    """The k-th highest score (what select.k's top-k keeps at or above); None when k is out of the pool or that
    row's score is not finite."""
    ranked = rank_ids(scores)
    if not 0 < k <= len(ranked) or not _finite(scores[ranked[k - 1]]):
        return None
    return scores[ranked[k - 1]]


def plot_score_histogram(scores: dict[str, float], groups: dict[str, str], path: Path, title: str,
                         k: int | None = None) -> None:
    """Overlaid step histograms of the finite scores, one per group (`histogram_groups`), on shared bins; with
    `k`, the top-k cut as a dashed line, the kept side shaded, and each group's rows in the top k in its label."""
    plt = _pyplot()
    finite = {e: s for e, s in scores.items() if _finite(s)}
    cut = top_k_cut(scores, k) if k else None
    top = rank_ids(scores)[:k] if cut is not None else []
    fig, ax = plt.subplots(figsize=(9, 4.2))
    planted_colours = iter(PLANTED_COLORS)
    if finite:
        bins = np.histogram_bin_edges(list(finite.values()), bins=40)
        for name in sorted(set(groups.values()), key=lambda g: (g.startswith("planted"), g)):
            values = [s for e, s in finite.items() if groups[e] == name]
            if values:
                color = GROUP_COLORS.get(name) or next(planted_colours, None)
                kept = f", {sum(groups[e] == name for e in top)} in the top {k}" if top else ""
                ax.hist(values, bins=bins, histtype="stepfilled", alpha=0.25, color=color)
                ax.hist(values, bins=bins, histtype="step", linewidth=1.6, color=color, label=f"{name} (n={len(values)}{kept})")
    if cut is not None:
        right = ax.get_xlim()[1]
        ax.axvspan(cut, right, color="#000000", alpha=0.05, lw=0)
        ax.set_xlim(right=right)
        ax.axvline(cut, color="black", linestyle="--", linewidth=1.2, label=f"top-{k} cut (select.k): kept at or above")
    if finite:
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xlabel("attribution score (higher: ranked first)")
    ax.set_ylabel("pool rows")
    by = "planted vs clean rows" if any(g.startswith("planted") for g in groups.values()) else "outcome"
    hidden = len(scores) - len(finite)
    ax.set_title(f"{title}: score by {by}" + (f" ({hidden} non-finite not shown)" if hidden else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_score_vs_length(scores: dict[str, float], lengths: dict[str, int], outcomes: dict[str, str],
                         path: Path, title: str) -> None:
    """Scatter of score against token length, coloured by outcome (lengths jittered by < 0.3 token)."""
    plt = _pyplot()
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(7, 4))
    counts = {o: sum(v == o for v in outcomes.values()) for o in set(outcomes.values())}
    for outcome in sorted(counts, key=lambda o: -counts[o]):  # the smaller groups drawn on top
        ids = [e for e in scores if outcomes[e] == outcome and _finite(scores[e])]
        if ids:
            x = np.array([lengths[e] for e in ids], float) + rng.uniform(-0.3, 0.3, len(ids))
            ax.scatter(x, [scores[e] for e in ids], s=9, alpha=0.55, color=OUTCOME_COLORS.get(outcome),
                       label=f"{outcome} (n={len(ids)})", linewidths=0)
    ax.set_xlabel("tokens in row (prompt + completion + EOS)")
    ax.set_ylabel("attribution score")
    ax.set_title(f"{title}: score vs length")
    ax.legend(frameon=False, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _or_none(value):
    return float(value) if _finite(value) else None
