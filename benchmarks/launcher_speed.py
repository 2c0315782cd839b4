"""Wall time of the demo sweep inline vs as local jobs, and of Bergson scoring with 1 vs 2 CPU processes.

Side by side in one run, alternating, after the shared stages are built once (data, base model, base
adapter, attribution, baselines, evaluations of the shared models):

- sweep: `playpen-attribution run CONFIG` on a copy of that folder with every (arm, seed) unit missing,
  inline with 2 torch threads, and with `--workers 2` (two job processes of 1 thread each); the shared
  stages are reused in both, so the difference is the arm x seed jobs (each job also pays a Python +
  torch start-up) and the same report;
- attribution: the attribute stage on the demo pool with `attribute.nproc_per_node: 1` (this process,
  2 threads) and `2` (Bergson's two worker processes, 1 thread each), each with an empty query cache,
  and the largest difference between their scores.

    uv run python benchmarks/launcher_speed.py [--config configs/demo.yaml] [--repeats 1] [--tiny]

`--tiny` shrinks the demo (fewer rows, one seed, two arms, short training) to check the script quickly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from bench_common import say  # benchmarks/ is on sys.path when run as a script

from playpen_attribution.attribution.arms import plan_arms
from playpen_attribution.config import parse_config
from playpen_attribution.core.yaml_config import read_mapping
from playpen_attribution.pipeline import base_adapter_stages
from playpen_attribution.run import artifacts
from playpen_attribution.stages import attribute, base_model, data, evaluate

TINY = {"data": {"source": {"kind": "demo", "n_train": 200, "n_query": 20, "n_eval": 30}},
        "model": {"tiny": {"pretrain_epochs": 1, "pretrain_rows_per_word": 5}},
        "train": {"epochs": 1}, "arm_train": {"epochs": 1}, "select": {"k": 40, "arms": ["top_k", "matched_random_k"]},
        "sweep": {"seeds": [1]}}


def merged(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def timed_run(config: Path, run_dir: Path, extra: list[str], threads: int) -> float:
    """`playpen-attribution run` in a fresh process (OMP_NUM_THREADS = threads), its wall time."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "playpen_attribution", "run", str(config), "--run-dir", str(run_dir), *extra]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def timed_attribute(cfg, shared: Path, work: Path, nproc: int) -> tuple[float, dict[str, float]]:
    """The attribute stage with `nproc` Bergson processes on a copy of the shared folder, empty query cache."""
    import torch

    run_dir = work / f"attribute_{nproc}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    for name in (artifacts.DATA, artifacts.BASE_MODEL, artifacts.TRAIN_BASE):
        if (shared / name).is_dir():
            os.symlink(shared / name, run_dir / name)
    update = {"nproc_per_node": nproc, "cache_dir": str(work / f"cache_{nproc}_{time.time_ns()}")}
    cfg = cfg.model_copy(update={"attribute": cfg.attribute.model_copy(update=update)})
    torch.set_num_threads(2 if nproc == 1 else 1)  # the whole box either way: Bergson's ranks take 1 each
    start = time.perf_counter()
    attribute.run(cfg, run_dir)
    seconds = time.perf_counter() - start
    return seconds, artifacts.load_scores(run_dir / artifacts.ATTRIBUTE)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml", help="experiment config (default: the demo)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating repeats of each side")
    parser.add_argument("--tiny", action="store_true", help="a shrunken demo: checks the script, times nothing useful")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="launcher_speed_"))
    raw = read_mapping(args.config)
    if args.tiny:
        raw = merged(raw, TINY)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    cfg = parse_config(raw, str(config))

    shared = work / "shared"
    say(f"building the shared stages once in {shared}")
    data.run(cfg, shared)
    base_model.run(cfg, shared)
    evaluate.run(cfg, shared, model="base")
    base_adapter_stages(cfg, shared, overwrite=False)

    sides = {"inline, 2 threads": ([], 2), "--workers 2, 1 thread each": (["--workers", "2"], 1)}
    sweep = {name: [] for name in sides}
    bergson = {1: [], 2: []}
    scores = {}
    for repeat in range(args.repeats):
        for name, (extra, threads) in sides.items():
            run_dir = work / f"sweep_{repeat}_{len(sweep[name])}_{extra and 'workers' or 'inline'}"
            shutil.copytree(shared, run_dir, symlinks=True)
            sweep[name].append(timed_run(config, run_dir, extra, threads))
            say(f"  sweep {name}: {sweep[name][-1]:.1f} s")
        for nproc, times in bergson.items():
            seconds, scores[nproc] = timed_attribute(cfg, shared, work, nproc)
            times.append(seconds)
            say(f"  attribute, {nproc} Bergson process(es): {seconds:.1f} s")

    units = len(cfg.seeds) * len(plan_arms(cfg.select, cfg.attribute.methods))
    say()
    say(f"config {args.config}{' (--tiny)' if args.tiny else ''}: {units} (arm, seed) units, {args.repeats} repeat(s), "
        f"{os.cpu_count()} cores")
    say("| what | side | wall s (best) | ratio |")
    say("|---|---|---|---|")
    inline, workers = (min(v) for v in sweep.values())
    say(f"| demo sweep (run with shared stages reused) | inline, 2 threads | {inline:.1f} | 1.00 |")
    say(f"| | --workers 2, 1 thread each | {workers:.1f} | {workers / inline:.2f} |")
    one, two = min(bergson[1]), min(bergson[2])
    say(f"| attribute stage, demo pool | nproc_per_node 1, 2 threads | {one:.1f} | 1.00 |")
    say(f"| | nproc_per_node 2, 1 thread each | {two:.1f} | {two / one:.2f} |")
    diff = max(abs(scores[1][eid] - scores[2][eid]) for eid in scores[1])
    say(f"largest |score(nproc 1) - score(nproc 2)| over the pool: {diff:.2e}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":  # Bergson's worker processes re-import this module
    main()
