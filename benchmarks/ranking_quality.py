"""How good is a ranking of the pool, where the truth is known (success vs planted failure rows)?

Builds (or reuses) a run's data, base model and base adapter with the project's stage functions, runs
the attribute stage twice (mode mean and mode nearest; the second reuses the cached query index),
and ranks the pool by: attribution (mean), attribution (nearest), per-row loss under the base
adapter (higher first and lower first: the sign matters), token length (longer first) and random
(mean over --random-seeds shuffles). For each ranker it reports precision@k of success rows and the
AUROC of success vs failure rows (sklearn.metrics.roc_auc_score).

    uv run python benchmarks/ranking_quality.py [--config configs/demo.yaml] [--run-dir DIR] [--threads 1]

Prints a markdown table and one JSON line per ranker.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from playpen_attribution import artifacts
from playpen_attribution.attribution_diagnostics import ranking_quality
from playpen_attribution.config import load_config
from playpen_attribution.jsonl import read_jsonl
from playpen_attribution.stages import attribute, base_model, data, train

KS = (50, 100, 200, 300)
UPSTREAM = (artifacts.DATA, artifacts.BASE_MODEL, artifacts.TRAIN_BASE)



def say(line: str = "") -> None:
    """One line of the benchmark's report on stdout (the package itself never prints)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()

def prepare(cfg, run_dir: Path) -> str:
    """data -> base model -> base adapter (finished stages are reused); returns the model path."""
    data.run(cfg, run_dir)
    base_model.run(cfg, run_dir)
    model_path = base_model.model_path(cfg, run_dir)
    train.run(cfg, run_dir, model_path)
    return model_path


def attribution_run(cfg, run_dir: Path, model_path: str, mode: str, cache: Path) -> Path:
    """The attribute stage with `mode`, in its own run folder beside the shared upstream stages."""
    mode_dir = run_dir / f"ranking_{mode}"
    for name in UPSTREAM:
        if not (mode_dir / name).exists():
            shutil.copytree(run_dir / name, mode_dir / name)
    fields = {"mode": mode, "cache_dir": str(cache)}
    mode_cfg = cfg.model_copy(update={"attribute": cfg.attribute.model_copy(update=fields)})
    return attribute.run(mode_cfg, mode_dir, model_path, overwrite=True)


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml", help="experiment config (default: the demo)")
    parser.add_argument("--run-dir", default=None, help="run folder to build or reuse (default: a temp folder)")
    parser.add_argument("--random-seeds", type=int, default=20, help="shuffles averaged for the random ranker")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: two OpenMP threads spin badly on a shared 2-core box)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="ranking_quality_"))
    started = time.perf_counter()
    model_path = prepare(cfg, run_dir)
    cache = run_dir / "ranking_query_cache"
    mean_dir = attribution_run(cfg, run_dir, model_path, "mean", cache)
    nearest_dir = attribution_run(cfg, run_dir, model_path, "nearest", cache)

    diagnostics = read_jsonl(mean_dir / artifacts.ROW_DIAGNOSTICS_FILE)
    outcomes = {r["example_id"]: r["outcome"] for r in diagnostics}
    loss = {r["example_id"]: float("nan") if r["loss"] is None else r["loss"] for r in diagnostics}
    rankers = {
        "attribution (mean)": artifacts.load_scores(mean_dir),
        "attribution (nearest)": artifacts.load_scores(nearest_dir),
        "loss, higher first": loss,
        "loss, lower first": {e: -v for e, v in loss.items()},
        "token length, longer first": {r["example_id"]: float(r["length"]) for r in diagnostics},
    }
    results = {name: ranking_quality(scores, outcomes, KS) for name, scores in rankers.items()}
    results[f"random (mean of {args.random_seeds})"] = random_quality(sorted(outcomes), outcomes, args.random_seeds)

    pool_success = sum(o == "success" for o in outcomes.values()) / len(outcomes)
    say(f"config {args.config}, pool {len(outcomes)} rows, success fraction {pool_success:.3f}, "
          f"attribution {cfg.attribute.preconditioning} preconditioning, projection {cfg.attribute.projection_dim}; "
          f"{time.perf_counter() - started:.0f} s in all\n")
    say("| ranker | " + " | ".join(f"P@{k}" for k in KS) + " | AUROC |")
    say("|---|" + "---|" * (len(KS) + 1))
    for name, r in results.items():
        cells = [f"{r['precision_at_k'].get(str(k), float('nan')):.3f}" for k in KS]
        say(f"| {name} | " + " | ".join(cells) + f" | {r['auroc']:.3f} |")
    say()
    for name, r in results.items():
        say(json.dumps({"ranker": name, **r, "pool_success_fraction": pool_success, "config": args.config}))


if __name__ == "__main__":
    main()
