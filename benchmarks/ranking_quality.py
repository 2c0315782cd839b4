"""How good is a ranking of the pool, where the truth is known (the rows the demo planted as harmful)?

Builds (or reuses) a run's data, base model and base adapter with the project's stage functions, runs
the attribute stage twice (mode mean and mode nearest; the second reuses the cached query index),
and ranks the pool by: attribution (mean), attribution (nearest), per-row loss under the base
adapter (higher first and lower first: the sign matters), token length (longer first) and random
(mean over --random-seeds shuffles). For each ranker it reports precision@k of clean rows (neither
planted kind; without planted rows: of won games), the AUROC of clean vs planted rows, and the AUROC
of won vs lost games (sklearn.metrics.roc_auc_score) -- the second planted kind is won on paper, so
only the first AUROC sees it.

    uv run python benchmarks/ranking_quality.py [--config configs/demo.yaml] [--run-dir DIR] [--threads 1]

Prints a markdown table and one JSON line per ranker.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from bench_common import (  # benchmarks/ is on sys.path when run as a script
    parser_for,
    prepare,
    say,
    start,
)

from playpen_attribution.attribution.diagnostics import ranking_quality
from playpen_attribution.core.jsonl import read_jsonl
from playpen_attribution.run import artifacts
from playpen_attribution.stages import attribute

KS = (50, 100, 200, 300)
UPSTREAM = (artifacts.DATA, artifacts.BASE_MODEL, artifacts.TRAIN_BASE)



def attribution_run(cfg, run_dir: Path, model_path: str, mode: str, cache: Path) -> Path:
    """The attribute stage with `mode`, in its own run folder beside the shared upstream stages."""
    mode_dir = run_dir / f"ranking_{mode}"
    mode_dir.mkdir(parents=True, exist_ok=True)
    for name in UPSTREAM:  # links: the adapter names the base model by its (resolved) path
        if not (mode_dir / name).exists():
            (mode_dir / name).symlink_to(run_dir / name, target_is_directory=True)
    fields = {"mode": mode, "cache_dir": str(cache)}
    mode_cfg = cfg.model_copy(update={"attribute": cfg.attribute.model_copy(update=fields)})
    return attribute.run(mode_cfg, mode_dir, overwrite=True)


def random_quality(ids: list[str], outcomes: dict[str, str], seeds: int) -> dict:
    """Precision@k and AUROC of a random ranking, averaged over `seeds` shuffles."""
    runs = []
    for seed in range(seeds):
        order = ids[:]
        random.Random(seed).shuffle(order)
        runs.append(ranking_quality({e: float(len(order) - i) for i, e in enumerate(order)}, outcomes, KS))
    return {"precision_at_k": {k: sum(r["precision_at_k"][k] for r in runs) / seeds for k in runs[0]["precision_at_k"]},
            "auroc": sum(r["auroc"] for r in runs) / seeds, "rows": len(ids), "non_finite": 0}


def main() -> None:
    parser = parser_for(__doc__.split("\n")[0])
    parser.add_argument("--random-seeds", type=int, default=20, help="shuffles averaged for the random ranker")
    args = parser.parse_args()
    cfg, run_dir = start(args, "ranking_quality_")
    started = time.perf_counter()
    model_path = prepare(cfg, run_dir)
    cache = run_dir / "ranking_query_cache"
    mean_dir = attribution_run(cfg, run_dir, model_path, "mean", cache)
    nearest_dir = attribution_run(cfg, run_dir, model_path, "nearest", cache)

    diagnostics = read_jsonl(mean_dir / artifacts.ROW_DIAGNOSTICS_FILE)
    outcomes = {r["example_id"]: r["outcome"] for r in diagnostics}
    planted = set().union(*map(set, artifacts.load_planted(run_dir / artifacts.DATA).values()))
    clean = ({e: "failure" if e in planted else "success" for e in outcomes} if planted else outcomes)
    loss = {r["example_id"]: float("nan") if r["loss"] is None else r["loss"] for r in diagnostics}
    rankers = {
        "attribution (mean)": artifacts.load_scores(mean_dir),
        "attribution (nearest)": artifacts.load_scores(nearest_dir),
        "loss, higher first": loss,
        "loss, lower first": {e: -v for e, v in loss.items()},
        "token length, longer first": {r["example_id"]: float(r["length"]) for r in diagnostics},
    }
    results = {name: ranking_quality(scores, clean, KS) for name, scores in rankers.items()}
    won_lost = {name: ranking_quality(scores, outcomes, ())["auroc"] for name, scores in rankers.items()}
    random_name = f"random (mean of {args.random_seeds})"
    results[random_name] = random_quality(sorted(outcomes), clean, args.random_seeds)
    won_lost[random_name] = random_quality(sorted(outcomes), outcomes, args.random_seeds)["auroc"]

    pool_clean = sum(o == "success" for o in clean.values()) / len(clean)
    say(f"config {args.config}, pool {len(outcomes)} rows, clean fraction {pool_clean:.3f} ({len(planted)} planted), "
        f"attribution {cfg.attribute.preconditioning} preconditioning, projection {cfg.attribute.projection_dim}, "
        f"loss reduction {cfg.attribute.loss_reduction}; {time.perf_counter() - started:.0f} s in all\n")
    say("| ranker | " + " | ".join(f"clean P@{k}" for k in KS) + " | AUROC clean vs planted | AUROC won vs lost |")
    say("|---|" + "---|" * (len(KS) + 2))
    for name, r in results.items():
        cells = [f"{r['precision_at_k'].get(str(k), float('nan')):.3f}" for k in KS]
        say(f"| {name} | " + " | ".join(cells) + f" | {r['auroc']:.3f} | {won_lost[name]:.3f} |")
    say()
    for name, r in results.items():
        say(json.dumps({"ranker": name, **r, "auroc_won_vs_lost": won_lost[name], "pool_clean_fraction": pool_clean,
                        "config": args.config}))


if __name__ == "__main__":
    main()
