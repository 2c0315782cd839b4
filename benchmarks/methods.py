"""Which attribution method picks the best rows, and at what cost? Read from a finished run that scored
the pool with several methods (`attribute.methods`, e.g. configs/demo_methods.yaml):

    uv run playpen-attribution run configs/demo_methods.yaml            # -> runs/demo_methods
    uv run python benchmarks/methods.py --run-dir runs/demo_methods [--ks 50,100,300]

Per method, from the attribute stage's manifest (`methods`: each method's seconds and peak resident
memory, measured side by side in the same process and run) and relative to gradient cosine; the
ranking quality against the truth the demo planted (precision@k of clean rows and the AUROC of clean vs
planted rows, as benchmarks/ranking_quality.py computes them, `attribution.diagnostics.ranking_quality`);
the Spearman correlation between every pair of methods; and, from report.json, top_k@<method> minus its own
matched control across seeds with its verdict. Runs nothing: the run's numbers only. Prints a markdown
table, the Spearman matrix, and one JSON line per method.
"""

from __future__ import annotations

import argparse
import json
from itertools import combinations
from pathlib import Path

from bench_common import say  # benchmarks/ is on sys.path when run as a script

from playpen_attribution.attribution.diagnostics import ranking_quality
from playpen_attribution.report.methods import gain, number, relative, spearman, top_k_verdict
from playpen_attribution.run import artifacts


def clean_labels(run_dir: Path, ids: list[str]) -> dict[str, str]:
    """example_id -> success (clean) / failure (planted), as ranking_quality reads them; without planted rows,
    the rows' own outcomes."""
    planted = set().union(*map(set, artifacts.load_planted(run_dir / artifacts.DATA).values()))
    if planted:
        return {e: "failure" if e in planted else "success" for e in ids}
    pool = artifacts.load_split(run_dir / artifacts.DATA, "train_base")
    return {r["example_id"]: r["outcome"] for r in pool}


def method_rows(run_dir: Path, ks: tuple[int, ...]) -> tuple[dict, dict, dict]:
    """(method -> row of the table, method -> scores, attribute manifest fields) of a finished run."""
    folder = run_dir / artifacts.ATTRIBUTE
    manifest = artifacts.load_manifest(folder).fields
    costs = manifest.get("methods")
    if not costs:
        raise SystemExit(f"{folder}: the attribute stage scored with one method (no `methods` in its manifest); "
                         "run a config with attribute.methods, e.g. configs/demo_methods.yaml")
    scores = {m: artifacts.load_scores(artifacts.method_dir(folder, m)) for m in costs}
    clean = clean_labels(run_dir, list(next(iter(scores.values()))))
    report_file = run_dir / artifacts.REPORT_JSON
    aggregate = json.loads(report_file.read_text())["aggregate"] if report_file.is_file() else []
    seconds, memory = relative(costs, "seconds"), relative(costs, "peak_rss_mb")
    rows = {}
    for method, cost in costs.items():
        quality = ranking_quality(scores[method], clean, ks)
        rows[method] = {"seconds": cost.get("seconds"), "relative_seconds": seconds[method],
                        "peak_rss_mb": cost.get("peak_rss_mb"), "relative_peak_rss": memory[method],
                        "peak_rss_scope": cost.get("peak_rss_scope"), "query_index_reused": cost.get("query_index_reused"),
                        "precision_clean_at_k": quality["precision_at_k"], "auroc_clean_vs_planted": quality["auroc"],
                        "top_k_vs_control": top_k_verdict(aggregate, method)}
    return rows, scores, manifest


def _gain(v: dict | None) -> str:
    if not v or v.get("mean") is None:
        return "n/a (no report.json comparison)"
    return f"{gain(v)}, {v.get('verdict')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True, help="a finished run with attribute.methods (runs/demo_methods)")
    parser.add_argument("--ks", default="50,100,300", help="cuts of the clean precision@k, comma-separated")
    args = parser.parse_args()
    run_dir, ks = Path(args.run_dir), tuple(int(k) for k in args.ks.split(","))
    rows, scores, manifest = method_rows(run_dir, ks)
    say(f"run {run_dir}: {len(next(iter(scores.values())))} pool rows, methods {', '.join(rows)}; attribute stage "
        f"{manifest.get('wall_seconds', 'n/a')} s in all; costs relative to gradient cosine in this run\n")
    say("| method | attribute s | × | peak RSS MB | × | " + " | ".join(f"clean P@{k}" for k in ks)
        + " | AUROC clean vs planted | top_k − its control (across seeds) |")
    say("|---|---|---|---|---|" + "---|" * (len(ks) + 2))
    for method, r in rows.items():
        precision = [number(r["precision_clean_at_k"].get(str(k))) for k in ks]
        reused = " (query index reused)" if r["query_index_reused"] else ""
        say(f"| {method} | {number(r['seconds'], '.1f')}{reused} | {number(r['relative_seconds'], '.2f')} | "
            f"{number(r['peak_rss_mb'], '.0f')} | {number(r['relative_peak_rss'], '.2f')} | " + " | ".join(precision)
            + f" | {number(r['auroc_clean_vs_planted'])} | {_gain(r['top_k_vs_control'])} |")
    say("\nSpearman between methods' scores:")
    for a, b in combinations(rows, 2):
        say(f"- {a} vs {b}: {number(spearman(scores[a], scores[b]))}")
    say()
    for method, r in rows.items():
        say(json.dumps({"method": method, **r, "run_dir": str(run_dir)}))


if __name__ == "__main__":
    main()
