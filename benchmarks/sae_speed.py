"""Rank one pool two ways, side by side: the SAE predictor vs the attribute stage (Bergson gradients).

For each model shape (the demo's tiny model as configured, and a 4-block x 256-wide tiny model):

1. data -> model -> train_base -> attribute (cold: builds the query index) -> sae -> predict, in one
   run folder; the predictor's held-out metrics and both baselines are recorded.
2. Then, alternating, `--repeats` times each:
   - gradients: the attribute stage in a fresh run folder (upstream folders linked) with the query
     index cache warm, i.e. what ranking a pool costs once the query side exists: per-row Bergson
     gradients + scoring, plus the stage's own extras (row losses, summary, plots, manifest);
   - predictor: `stages.rank.run` on the same pool file: one forward pass to block L, the
     SAE, the saved ridge regressor (no gradient), plus its stage folder (features + manifest).
   Imports (torch, transformers, Bergson, SAELens) and the first model load are warmed up before.

Rows per second of each and the ratio (median over repeats), by wall clock and by this process's CPU
time (steadier on a shared machine; `--threads 1` steadier still), go to stdout and `--out` (Markdown) with the
command and the machine. Both sides use base + train_base adapter (the model attribution scores).
With `--workdir`, finished stages of an earlier call are reused (only the timed repeats are redone).

    uv run python benchmarks/sae_speed.py [--config configs/demo.yaml] [--repeats 2] [--threads N]
        [--workdir D] [--out results.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playpen_attribution.config import load_config
from playpen_attribution.core.yaml_config import dump as to_yaml
from playpen_attribution.run import artifacts
from playpen_attribution.sae.config import PredictConfig, SaeConfig
from playpen_attribution.stages import (
    attribute,
    base_model,
    data,
    predict,
    rank,
    sae,
    train,
)

UPSTREAM = (artifacts.DATA, artifacts.BASE_MODEL, artifacts.TRAIN_BASE)


def shapes(cfg) -> list[tuple[str, object, int]]:
    """(label, config, layer L): the demo's model (L = its last block) and a 4 x 256 model (L = 2)."""
    demo_layer = cfg.model.tiny.num_layers - 1
    wide = cfg.model.tiny.model_copy(update={"hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 512})
    return [
        (f"demo tiny ({cfg.model.tiny.num_layers} x {cfg.model.tiny.hidden_size})", cfg, demo_layer),
        ("tiny 4 x 256", cfg.model_copy(update={"model": cfg.model.model_copy(update={"tiny": wide})}), 2),
    ]


def with_sections(cfg, layer: int, d_sae: int):
    return cfg.model_copy(update={
        "sae": cfg.sae or SaeConfig(layer=layer, d_sae=d_sae, model="base_adapter"),
        "predict": cfg.predict or PredictConfig(),
    })


def linked(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in UPSTREAM:
        (dst / name).symlink_to(src / name, target_is_directory=True)
    return dst


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): CPU time is far less sensitive to other jobs' load."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_shape(label: str, cfg, work: Path, repeats: int) -> dict:
    """Build (or reuse, from an earlier call with the same workdir) the run, then time both paths."""
    run_dir = work / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    data.run(cfg, run_dir)
    base_model.run(cfg, run_dir)
    train.run(cfg, run_dir)
    attribute.run(cfg, run_dir)
    sae.run(cfg, run_dir)
    predict.run(cfg, run_dir)
    cold = artifacts.load_manifest(run_dir / artifacts.ATTRIBUTE).wall_seconds
    sae_wall = artifacts.load_manifest(run_dir / artifacts.SAE).wall_seconds
    metrics = artifacts.load_predictor_metrics(run_dir / artifacts.PREDICT)
    pool_file = artifacts.split_path(run_dir / artifacts.DATA, "train_base")
    rows = metrics["rows"]
    grad, pred = [], []  # (wall, cpu) per repeat
    for rep in range(repeats):
        shutil.rmtree(work / f"grad_{rep}", ignore_errors=True)  # a finished folder would be reused, not timed
        shutil.rmtree(run_dir / artifacts.rank_dir(f"pool_{rep}"), ignore_errors=True)
        other = linked(run_dir, work / f"grad_{rep}")
        grad.append(timed(lambda other=other: attribute.run(cfg, other)))
        pred.append(timed(lambda rep=rep: rank.run(cfg, run_dir, rows=pool_file, name=f"pool_{rep}")))
    out = {"label": label, "rows": rows, "layer": cfg.sae.layer, "d_sae": cfg.sae.d_sae,
           "attribute_cold_s": cold, "sae_stage_s": sae_wall, "metrics": metrics}
    for i, clock in enumerate(("wall", "cpu")):
        g, p = [t[i] for t in grad], [t[i] for t in pred]
        out[clock] = {"gradient_s": g, "predictor_s": p, "gradient_rows_per_s": rows / statistics.median(g),
                      "predictor_rows_per_s": rows / statistics.median(p),
                      "ratio": statistics.median(a / b for a, b in zip(g, p, strict=True))}
    return out


def machine() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else platform.processor()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"CPU only; load average at start {load}")


def markdown(results: list[dict], command: str, where: str, cfg_yaml: str) -> str:
    out = ["# SAE predictor vs gradient attribution: speed and held-out quality", "",
           f"Command: `{command}`", "", f"Machine: {where}", "",
           ("Both paths rank the same pool (`train_base`) under base + `train_base/adapter`. *Gradients* = the "
            "attribute stage with a warm query-index cache (per-row Bergson gradients and scores, plus the stage's "
            "row losses, summary, plots and manifest). *Predictor* = `stages.rank.run`: forward to block L, "
            "random JumpReLU SAE, saved ridge regressor, features written to its stage folder. Imports warmed up; "
            "rows/s use the median over repeats measured alternately in one process; the speed-up is the median of "
            "the per-repeat ratios. *wall* = elapsed time; *cpu* = CPU seconds used by this process (all its threads), "
            "which other jobs on a shared machine disturb far less."), "",
           ("| model | L | d_sae | rows | clock | gradients s (each) | predictor s (each) | gradients rows/s "
            "| predictor rows/s | speed-up |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for clock in ("wall", "cpu"):
            c = r[clock]
            out.append(f"| {r['label']} | {r['layer']} | {r['d_sae']} | {r['rows']} | {clock} | "
                       f"{', '.join(f'{s:.1f}' for s in c['gradient_s'])} | {', '.join(f'{s:.1f}' for s in c['predictor_s'])} | "
                       f"{c['gradient_rows_per_s']:.1f} | {c['predictor_rows_per_s']:.1f} | {c['ratio']:.1f}x |")
    cold = ", ".join(f"{r['label']} {r['attribute_cold_s']:.1f} s" for r in results)
    sae_first = ", ".join(f"{r['label']} {r['sae_stage_s']:.1f} s" for r in results)
    out += ["", (f"First attribute run (cold: builds the query index too; from its manifest): {cold}; sae stage "
                 f"(first build, from its manifest; the first one in a process includes importing SAELens): {sae_first}."),
        "", "## Held-out quality of the predictor and its baselines", "",
        ("Target: attribution rank percentile; out-of-fold predictions over grouped folds on `group_id` (the demo "
         "groups rows by target word); top-k = top 20% of the rows. The SAE is random (no GemmaScope offline), so "
         "this measures the plumbing and what random sparse features of the residual carry, not GemmaScope features."),
        "",
        "| model | predictor | Spearman | Pearson | R2 | top-k overlap | AUROC top-vs-rest | alpha |",
        "|---|---|---|---|---|---|---|---|"]
    names = {"sae": "SAE features (stats + feature means)", "length": "length only", "residual": "raw residual probe"}
    for r in results:
        for key, name in names.items():
            m = r["metrics"]["models"][key]
            cells = [m["spearman"], m["pearson"], m["r2"], m["top_k_overlap"], m["auroc"]]
            out.append(f"| {r['label']} | {name} | " + " | ".join("n/a" if c is None else f"{c:.3f}" for c in cells)
                       + f" | {m['alpha']:g} |")
    out += ["", "Cross-fitted over grouped folds: every row predicted by a model that never saw its group; "
            + ", ".join(f"{r['label']} {r['metrics']['scored_rows']} rows in {r['metrics']['folds']} folds of "
                        f"{r['metrics']['groups']} groups" for r in results) + ".", "",
            "<details><summary>config</summary>", "", "```yaml", cfg_yaml.rstrip(), "```", "", "</details>", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--d-sae", type=int, default=512, help="width of the random SAE (when the config has no sae:)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    parser.add_argument("--workdir", type=Path,
                        help="where the runs go (default: a temporary folder); finished stages there are reused")
    parser.add_argument("--threads", type=int, help="torch CPU threads for both paths (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sae_speed_"))
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")  # the attribute stage's query-index cache starts empty
    base = load_config(args.config)
    where = machine()
    import bergson  # noqa: F401  warm imports so neither side pays them in its timings
    import sae_lens  # noqa: F401

    results = []
    for i, (label, cfg, layer) in enumerate(shapes(base)):
        cfg = with_sections(cfg, layer, args.d_sae)
        results.append(bench_shape(label, cfg, work / f"shape_{i}", args.repeats))
        sys.stderr.write(json.dumps({k: v for k, v in results[-1].items() if k != "metrics"}) + "\n")
    command = "uv run python benchmarks/sae_speed.py " + " ".join(sys.argv[1:])
    text = markdown(results, command.strip(), where, to_yaml(with_sections(base, base.model.tiny.num_layers - 1, args.d_sae)))
    if args.out is not None:
        args.out.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
