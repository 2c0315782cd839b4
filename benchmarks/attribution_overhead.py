"""Wall time of the attribute stage vs calling Bergson directly on the same rows and settings.

Both run in this process, side by side, alternating, after one warm-up (imports, first model load):

- stage: `stages.attribute.run` with a fresh query cache (so it builds the query index like a first
  run), and once more with that cache warm ("reused query index");
- direct: Bergson's own commands on the same pre-tokenized `pool.hf` / `query.hf` the stage saved
  and the same settings, the way the Bergson notes do mean scoring: `Hessian` on the query (when
  preconditioning), `Build` of the query with `aggregation="mean"`, `Score` of the pool.

Then the stage's extras are timed one by one (tokenization, the query cache key's content hashing,
the per-row loss forward pass (run only with label smoothing), summary + plots, hashing the stage folder for its
manifest) so the ratio can be explained.

    uv run python benchmarks/attribution_overhead.py [--config configs/demo.yaml] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench_common import (  # benchmarks/ is on sys.path when run as a script
    parser_for,
    prepare,
    say,
    start,
)
from bergson_direct import direct_steps, run_in_process

from playpen_attribution.attribution import diagnostics as diag
from playpen_attribution.attribution import scoring as bs
from playpen_attribution.core.modeling import load_tokenizer
from playpen_attribution.core.tokenization import tokenize_rows
from playpen_attribution.run import artifacts
from playpen_attribution.stages import attribute


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def run_stage(cfg, run_dir: Path, model_path: str, cache: Path) -> float:
    """One real run of the stage (its previous folder removed first, so nothing is reused but the cache)."""
    stage_cfg = cfg.model_copy(update={"attribute": cfg.attribute.model_copy(update={"cache_dir": str(cache)})})
    shutil.rmtree(run_dir / artifacts.ATTRIBUTE, ignore_errors=True)
    return timed(attribute.run, stage_cfg, run_dir)


def run_direct(cfg, model_path: str, adapter: Path, rows: Path, work: Path) -> float:
    """Bergson's commands alone: query Hessian, aggregated query index, pool scores."""
    steps = direct_steps(attribute.scoring_for(cfg, model_path), model_path, adapter, rows, work)
    return timed(run_in_process, steps)


def folder_hash_seconds(folder: Path) -> float:
    start = time.perf_counter()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        hashlib.sha256(path.read_bytes()).hexdigest()
    return time.perf_counter() - start


def extras(cfg, run_dir: Path, model_path: str) -> dict[str, float]:
    """The stage's work besides Bergson, each timed alone."""
    pool = artifacts.load_split(run_dir / artifacts.DATA, "train_base")
    query = artifacts.load_split(run_dir / artifacts.DATA, "attr_query")
    tokenizer = load_tokenizer(model_path)
    rule = cfg.tokenize
    out = {"tokenization": timed(lambda: (tokenize_rows(tokenizer, pool, rule), tokenize_rows(tokenizer, query, rule)))}
    pool_ds, query_ds = tokenize_rows(tokenizer, pool, rule), tokenize_rows(tokenizer, query, rule)
    adapter = run_dir / artifacts.TRAIN_BASE / artifacts.ADAPTER_DIR
    out["query cache key (hash model, adapter, query)"] = timed(
        bs.query_key, Path(model_path), adapter, query_ds, attribute.scoring_for(cfg, model_path))
    out["row-loss forward pass (only with label smoothing; otherwise Bergson's loss is read)"] = timed(
        attribute.base_losses, cfg, model_path, adapter, pool_ds, tokenizer.pad_token_id)
    scores = artifacts.load_scores(run_dir / artifacts.ATTRIBUTE)
    outcomes = {r["example_id"]: r["outcome"] for r in pool}
    lengths = {e: len(t) for e, t in zip(pool_ds["example_id"], pool_ds["input_ids"], strict=True)}
    plots = Path(tempfile.mkdtemp())
    out["summary + two plots"] = timed(lambda: (
        diag.summarize(scores, outcomes, cfg.select.k, lengths=lengths, losses={e: 1.0 for e in scores}),
        diag.plot_score_histogram(scores, outcomes, plots / "h.png", "t"),
        diag.plot_score_vs_length(scores, lengths, outcomes, plots / "s.png", "t")))
    out["manifest hashing of the stage folder"] = folder_hash_seconds(run_dir / artifacts.ATTRIBUTE)
    return out


def main() -> None:
    parser = parser_for(__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="alternating stage/direct repetitions")
    args = parser.parse_args()
    cfg, run_dir = start(args, "attr_overhead_")
    model_path = prepare(cfg, run_dir)
    scratch = run_dir / "overhead_scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    for name in (artifacts.DATA, artifacts.BASE_MODEL, artifacts.TRAIN_BASE):  # stage runs go here, not in run_dir
        shutil.copytree(run_dir / name, scratch / "run" / name)
    run_dir = scratch / "run"
    adapter = run_dir / artifacts.TRAIN_BASE / artifacts.ADAPTER_DIR
    warmup = run_stage(cfg, run_dir, model_path, scratch / "cache_warmup")
    rows = scratch / "rows"
    for name in ("pool.hf", "query.hf"):
        shutil.copytree(run_dir / artifacts.ATTRIBUTE / artifacts.BERGSON_DIR / name, rows / name)
    times = {"stage (query index built)": [], "stage (query index reused)": [], "direct Bergson": []}
    for i in range(args.repeats):
        times["direct Bergson"].append(run_direct(cfg, model_path, adapter, rows, scratch / f"direct_{i}"))
        times["stage (query index built)"].append(run_stage(cfg, run_dir, model_path, scratch / f"cache_{i}"))
        times["stage (query index reused)"].append(run_stage(cfg, run_dir, model_path, scratch / f"cache_{i}"))
    medians = {k: statistics.median(v) for k, v in times.items()}
    direct = medians["direct Bergson"]
    parts = extras(cfg, run_dir, model_path)

    say(f"\nconfig {args.config}: {args.repeats} alternating repeats after a {warmup:.1f} s warm-up, "
          f"{args.threads} torch thread(s); medians\n")
    say("| path | seconds | ratio to direct Bergson |\n|---|---|---|")
    for name, seconds in medians.items():
        say(f"| {name} | {seconds:.2f} | {seconds / direct:.2f} |")
    say("\n| stage extra (timed alone) | seconds |\n|---|---|")
    for name, seconds in parts.items():
        say(f"| {name} | {seconds:.2f} |")
    say(json.dumps({"median_seconds": medians, "all_seconds": times, "extras_seconds": parts,
                      "ratio_built": medians["stage (query index built)"] / direct,
                      "ratio_reused": medians["stage (query index reused)"] / direct, "config": args.config}))


if __name__ == "__main__":
    main()
