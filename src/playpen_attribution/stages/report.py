"""Stage `report`: gather the finished stage folders into files a person reads.

Reads every `eval_*/metrics.json`, `attribute/summary.json`, `select/selections.json` and the
manifests of all stages of the run (for wall times). Writes `report/`: `report.json`, `report.md`
(setup, an accuracy table with counts like `62/152 = 0.4079`, the attribution check, stage times)
and `accuracy.png` (a bar chart of word accuracy per model). Needs nothing but the run directory,
so `playpen-attribution report --run-dir D` regenerates it.
"""

from __future__ import annotations

import json
from pathlib import Path

from playpen_attribution import artifacts
from playpen_attribution.stage_folder import run_stage

MODEL_ORDER = ("base", "base_adapter", "top_k", "matched_random_k")


def _stage_folders(run_dir: Path) -> list[Path]:
    return sorted(p.parent for p in run_dir.glob(f"*/{artifacts.MANIFEST_FILE}") if p.parent.name != artifacts.REPORT)


def collect(run_dir: Path, seed: int | None) -> dict:
    """The report's data, from the stage folders alone."""
    evals = {p.name.removeprefix("eval_"): artifacts.load_metrics(p) for p in sorted(run_dir.glob("eval_*"))
             if (p / artifacts.METRICS_FILE).is_file()}
    order = [m for m in MODEL_ORDER if m in evals] + sorted(m for m in evals if m not in MODEL_ORDER)
    arms = [{"name": m, "seed": seed, **{k: evals[m][k] for k in ("correct", "total", "accuracy")},
             **{k: evals[m][k] for k in ("target_correct", "target_total", "target_accuracy") if k in evals[m]}}
            for m in order]
    stages = {p.name: artifacts.load_manifest(p)["wall_seconds"] for p in _stage_folders(run_dir)}
    report = {"run_dir": str(run_dir), "arms": arms, "stage_seconds": stages,
              "wall_seconds": round(sum(stages.values()), 2)}
    summary_path = run_dir / artifacts.ATTRIBUTE / artifacts.ATTRIBUTION_SUMMARY
    if summary_path.is_file():
        report["attribution"] = artifacts.load_json(summary_path)
    if (run_dir / artifacts.SELECT / artifacts.SELECTIONS_FILE).is_file():
        selections = artifacts.load_selections(run_dir / artifacts.SELECT)
        report["selection"] = {n: {k: v for k, v in a.items() if k != "example_ids"} for n, a in selections.items()}
    if "top_k" in evals and "matched_random_k" in evals:
        diff = evals["top_k"]["accuracy"] - evals["matched_random_k"]["accuracy"]
        report["top_k_vs_matched_random"] = {"accuracy_difference": diff, "top_k_better": diff > 0}
    data_manifest = run_dir / artifacts.DATA / artifacts.MANIFEST_FILE
    if data_manifest.is_file():
        manifest = json.loads(data_manifest.read_text())
        report["data"] = {k: manifest.get(k) for k in ("rows", "outcomes", "dropped", "source")}
    return report


def render_markdown(report: dict, name: str, plot_name: str) -> str:
    lines = [f"# {name}: which training rows teach the task?", ""]
    if "data" in report:
        rows = report["data"]["rows"]
        lines += [f"Data: {rows.get('train_base')} pool rows, {rows.get('attr_query')} attribution queries, "
                  f"{rows.get('eval')} eval rows; dropped: {report['data']['dropped'] or 'none'}.", ""]
    lines += ["| model | word accuracy | target-word accuracy |", "|---|---|---|"]
    for arm in report["arms"]:
        target = (f"{arm['target_correct']}/{arm['target_total']} = {arm['target_accuracy']:.4f}"
                  if "target_total" in arm else "n/a")
        lines.append(f"| {arm['name']} | {arm['correct']}/{arm['total']} = {arm['accuracy']:.4f} | {target} |")
    lines.append("")
    if "top_k_vs_matched_random" in report:
        d = report["top_k_vs_matched_random"]["accuracy_difference"]
        verdict = "beats" if d > 0 else ("ties with" if d == 0 else "does not beat")
        lines += [f"**top_k {verdict} matched_random_k** (difference {d:+.4f}, one seed: no significance claimed).", ""]
    if "attribution" in report:
        a = report["attribution"]
        lines += [f"Attribution check: {a['precision_success_at_k']:.4f} of the top-{a['k']} rows are success rows, "
                  f"against {a['pool_success_fraction']:.4f} of the pool ({a['non_finite']} non-finite scores).", ""]
    if "selection" in report:
        lines += ["| arm | rows | tokens | outcomes |", "|---|---|---|---|"]
        for arm, s in report["selection"].items():
            lines.append(f"| {arm} | {s['rows']} | {s['tokens']} | {s['outcomes']} |")
        lines.append("")
    lines += [f"![word accuracy]({plot_name})", "", f"Wall time: {report['wall_seconds']:.1f} s in all.", "",
              "| stage | seconds |", "|---|---|"]
    lines += [f"| {s} | {t:.1f} |" for s, t in report["stage_seconds"].items()]
    return "\n".join(lines) + "\n"


def plot_accuracy(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [a["name"] for a in report["arms"]]
    values = [a["accuracy"] for a in report["arms"]]
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.6))
    bars = ax.bar(names, values, color=["#999999", "#6a8caf", "#d1495b", "#edae49"][: len(names)] or None)
    for bar, arm in zip(bars, report["arms"]):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, f"{arm['correct']}/{arm['total']}",
                ha="center", va="bottom", fontsize=9)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("word accuracy on eval")
    ax.set_title("Eval word accuracy by model")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(run_dir: Path, name: str = "experiment", seed: int | None = None, overwrite: bool = True) -> Path:
    """Always rebuilt (the report is cheap and reflects whatever stage folders exist now)."""
    run_dir = Path(run_dir)
    inputs = {p.name: p for p in _stage_folders(run_dir)}

    def build(out: Path) -> dict:
        report = collect(run_dir, seed)
        (out / artifacts.REPORT_JSON).write_text(json.dumps(report, indent=1) + "\n")
        plot_accuracy(report, out / artifacts.ACCURACY_PLOT)
        (out / artifacts.REPORT_MD).write_text(render_markdown(report, name, artifacts.ACCURACY_PLOT))
        return {}

    return run_stage(run_dir, artifacts.REPORT, {"name": name, "seed": seed}, inputs, build, overwrite)
