"""How many seeds does a comparison need? The across-seed test's power and false-positive rate, simulated
from a finished run's own variance (`report.power`).

    uv run python benchmarks/power.py runs/demo/report.json --seeds 3 5 8 --studies 2000

For the report's primary comparison (or `--arm A --versus B --metric M`): the observed difference, the
variance of a seed's effect, an eval row's effect and the rest (from the test's mean squares), then per
seed count the simulated power at the observed difference and at half of it, and the false-positive
rate of an A/A study (no difference) with the same variances. Pure arithmetic: no model, seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from playpen_attribution.report.power import components, simulate


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="a report.json")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5, 8])
    parser.add_argument("--studies", type=int, default=2000, help="simulated studies per cell")
    parser.add_argument("--arm")
    parser.add_argument("--versus")
    parser.add_argument("--metric")
    args = parser.parse_args(argv)
    report = json.loads(Path(args.report).read_text())
    primary = report["primary"]
    arm, versus, metric = args.arm or primary["arm"], args.versus or primary["versus"], args.metric or primary["metric"]
    agg = next(a for a in report["aggregate"] if (a["arm"], a["versus"]) == (arm, versus))
    test = agg["metrics"][metric]
    variance = components(test)
    say(f"{arm} vs {versus} on {metric}: observed difference {test['mean']:+.4f} over {test['seeds']} seeds x "
        f"{test['rows']} rows (p = {test['p_value']:.4g})")
    say("variance of a seed's effect {seed:.3g}, of a row's effect {row:.3g}, the rest {residual:.3g}".format(**variance))
    say("")
    say("| seeds | power at the observed difference | power at half of it | A/A false-positive rate |")
    say("|---|---|---|---|")
    for seeds in args.seeds:
        cells = [simulate(effect, variance, seeds, test["rows"], args.studies, seed=seeds)
                 for effect in (test["mean"], test["mean"] / 2, 0.0)]
        say(f"| {seeds} | {cells[0]:.3f} | {cells[1]:.3f} | {cells[2]:.3f} |")
    say("")
    say(f"({args.studies} simulated studies per cell; a cell's standard error is at most {0.5 / args.studies ** 0.5:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
