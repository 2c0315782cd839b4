"""Compare the result fields of two report.json files: accuracies, losses, p-values, intervals, arms.

    uv run python benchmarks/compare_reports.py A/report.json B/report.json

Timing and memory fields (stage seconds, throughput, wall time, peak memory, each method's cost) and paths are left out;
every other field must be equal. Prints each difference (up to 80) and their count; exit status 1 when any differ. Used to
show that a change (a refactor, a wider launcher, a resumed run) leaves the answer as it was.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SKIP = {"stage_seconds", "wall_seconds", "stage_speed", "stage_peak_rss_mb", "sweep", "run_dir", "plots", "speed",
        "real_model", "seconds", "relative_seconds", "peak_rss_mb", "relative_peak_rss"}


def differences(a, b, path: str = "") -> list[str]:
    """Every place where two JSON values differ, skipping the timing and path fields."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key in SKIP:
                continue
            if key not in a or key not in b:
                out.append(f"{path}.{key}: only in the {'second' if key not in a else 'first'}")
            else:
                out += differences(a[key], b[key], f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        out = [f"{path}: lengths {len(a)} vs {len(b)}"] if len(a) != len(b) else []
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            out += differences(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def main(argv: list[str]) -> int:
    first, second = (json.loads(Path(p).read_text()) for p in argv[:2])
    found = differences(first, second)
    sys.stdout.write("\n".join(found[:80] + [f"{len(found)} differences"]) + "\n")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
