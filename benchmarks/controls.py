"""The control experiments, run the way another machine would: does every control give its known answer?

    uv run python benchmarks/controls.py --out /tmp/controls            # the demo (native kernels), the demo
                                                                         # under ATEN_CPU_CAPABILITY=default, the A/A
    uv run python benchmarks/controls.py --out /tmp/controls --all      # also the demo with data.seed 43 and the
                                                                         # SmolTalk-shaped demo

Each control is one `playpen-attribution run` in its own process (another machine's kernels are PyTorch's
other CPU kernels, `ATEN_CPU_CAPABILITY`: `default` has no vector instructions at all, `avx2`, `avx512`
where the CPU has it). The A/A config reuses the native demo's shared stages (data, base model, base
adapter, attribution: the same config sections), so its arms differ from the demo's by their draw only.
Prints one row per control: its answer, the primary comparison's difference and interval, p, the seeds
that agree, the smallest difference the design detects, and the wall time; exit status 1 when any control
FAILED (`.ci/run` runs the default set on every landing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = ("data", "base_model", "train_base", "attribute")
"""Stage folders the A/A run borrows from the demo run (its config sections are the demo's)."""


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run(name: str, config: Path, run_dir: Path, kernels: str | None, borrow: Path | None = None,
        overrides: tuple[str, ...] = ()) -> dict:
    """One control in its own process (`overrides`: its `--set` values); its report's control and primary
    fields, and the wall time."""
    if borrow is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stage in SHARED:
            if not (run_dir / stage).exists():
                (run_dir / stage).symlink_to(borrow / stage, target_is_directory=True)
    env = dict(os.environ)
    if kernels:
        env["ATEN_CPU_CAPABILITY"] = kernels
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "playpen_attribution", "run", str(config), "--run-dir", str(run_dir),
                           *(arg for value in overrides for arg in ("--set", value))],
                          check=False,
                          env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    report_path = run_dir / "report.json"
    if done.returncode not in (0, 1) or not report_path.is_file():
        return {"name": name, "passed": False, "error": done.stderr.strip().splitlines()[-1:] or ["no report"],
                "seconds": seconds}
    report = json.loads(report_path.read_text())
    control, primary = report.get("control") or {}, report.get("primary") or {}
    return {"name": name, "passed": bool(control.get("passed")), "expect": control.get("expect"),
            "found": control.get("found"), "seeds_agree": control.get("seeds_agree"), "test": primary.get("test") or {},
            "metric": primary.get("metric"), "seconds": seconds}


def row(result: dict) -> str:
    if "error" in result:
        return f"| {result['name']} | FAILED (did not finish: {result['error'][0]}) | | | | | {result['seconds']:.0f} s |"
    t = result["test"]
    interval = f"{t['mean']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}]" if t.get("ci_low") is not None else "n/a"
    seeds = f"{t.get('seeds_favouring_arm')} / {t.get('seeds_favouring_versus')} of {len(t.get('per_seed', []))}"
    p = "n/a" if t.get("p_value") is None else f"{t['p_value']:.2g}"
    mde = "" if t.get("mde") is None else f"{t['mde']:.3f}"
    answer = f"{'PASSED' if result['passed'] else 'FAILED'} (expected {result['expect']}, found {result['found']})"
    return f"| {result['name']} | {answer} | {result['metric']} {interval} | {p} | {seeds} | {mde} | {result['seconds']:.0f} s |"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the run folders (reused when rerun)")
    parser.add_argument("--all", action="store_true", help="also the demo with another data seed and the SmolTalk demo")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    demo, aa = REPO / "configs" / "demo.yaml", REPO / "configs" / "demo_aa.yaml"
    plan = [("demo (native kernels)", demo, out / "demo", None, None, ()),
            ("demo (ATEN_CPU_CAPABILITY=default)", demo, out / "demo_default_kernels", "default", None, ()),
            ("A/A (native kernels)", aa, out / "demo_aa", None, out / "demo", ())]
    if args.all:
        plan += [("demo, data.seed 43", demo, out / "demo_data_seed_43", None, None, ("data.seed=43",)),
                 ("SmolTalk-shaped demo", REPO / "configs" / "smoltalk_demo.yaml", out / "smoltalk_demo", None, None, ())]
    say("| control | answer | primary difference [95% CI] | p | seeds arm / vs | detects at 80% power | wall time |")
    say("|---|---|---|---|---|---|---|")
    results = []
    for name, config, run_dir, kernels, borrow, overrides in plan:
        results.append(run(name, config, run_dir, kernels, borrow, overrides))
        say(row(results[-1]))
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
