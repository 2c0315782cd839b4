"""The probe study in the report: a table and a plot of `sae.probe_study.study_rows`.

The table has one line per (layer, pooling): the held-out Spearman and R^2 of the raw probe, the same
of the length-residualised probe, and the raw probe's partial Spearman with the attribution score given
length, then the length-only probe as the baseline; the plot draws one line per pooling over the layers,
solid for the raw probe and dashed for the length-residualised one. `probe_study_lines` is the report's
section (report.json's `probe_study`, the predict stage's `probe_study.json`).
"""

from __future__ import annotations

from pathlib import Path

from playpen_attribution.report.plots import SEED_COLOURS, _pyplot
from playpen_attribution.run.artifacts import PROBE_STUDY_PLOT


def _num(value) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def study_table(rows: list[dict]) -> list[str]:
    """Markdown lines of the probe study (rows of `study_rows`, raw and residualised per layer and pooling)."""
    cells: dict[tuple, dict] = {}
    for row in rows:
        cells.setdefault((row["layer"], row["pooling"]), {})[row["length_residualised"]] = row
    header = ("| layer | pooling | Spearman | R² | Spearman, length-residualised | R², length-residualised "
              "| partial Spearman given length |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    for (layer, pooling), pair in sorted(cells.items(), key=lambda kv: (kv[0][0] is None, kv[0][0] or 0, kv[0][1])):
        raw, resid = pair.get(False, {}), pair.get(True, {})
        lines.append(f"| {'-' if layer is None else layer} | {pooling} | {_num(raw.get('spearman'))} | "
                     f"{_num(raw.get('r2'))} | {_num(resid.get('spearman'))} | {_num(resid.get('r2'))} | "
                     f"{_num(raw.get('partial_spearman'))} |")
    return lines


def plot_probe_study(rows: list[dict], path: Path) -> None:
    """Spearman over layers, one colour per pooling: raw solid, length-residualised dashed; the length-only
    probe as a grey horizontal line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4))
    poolings = sorted({r["pooling"] for r in rows if r["layer"] is not None})
    for colour, pooling in zip(SEED_COLOURS, poolings, strict=False):
        for residualised, style in ((False, "-"), (True, "--")):
            points = sorted((r["layer"], r["spearman"]) for r in rows
                            if r["pooling"] == pooling and r["length_residualised"] == residualised)
            if points:
                label = f"{pooling}{', length-residualised' if residualised else ''}"
                ax.plot(*zip(*points, strict=True), style, marker="o", color=colour, label=label)
    for row in (r for r in rows if r["layer"] is None):
        ax.axhline(row["spearman"], color="grey", linewidth=1, label=f"{row['pooling']} only")
    ax.set_xticks(sorted({r["layer"] for r in rows if r["layer"] is not None}))
    ax.set_xlabel("layer (block)")
    ax.set_ylabel("held-out Spearman with attribution")
    ax.set_title("Probes of attribution: raw (solid) vs length-residualised (dashed)", fontsize=9)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def probe_study_lines(study: dict | None) -> list[str]:
    """The report's probe-study section (the predict stage's probe_study.json): what was fitted, the table
    and the plot; none without a study."""
    if not study:
        return []
    return ["## Probe study: does a predictor see anything beyond length?", "",
            (f"Ridge probes on the residual of blocks {', '.join(map(str, study['layers']))} (pooled three ways) and on "
            f"the SAE features (`sae`), cross-fitted over {study['folds']} folds grouped by `{study['group_key']}` "
            f"({study['rows_fitted']} rows, target: attribution {study['target']}); length-residualised: length "
            f"({study['length']}) regressed out of features and target inside each training fold. The partial "
            "Spearman is the raw probe's rank correlation with the target once length is regressed out of both "
             "(about 0 for a probe that sees only length)."), "",
            *study_table(study["rows"]), "", f"![probe study]({PROBE_STUDY_PLOT})", ""]
