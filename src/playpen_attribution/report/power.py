"""How many seeds a comparison needs: the power of the across-seed test, simulated from a run's own variance.

A finished comparison's across-seed test (`stats.across_seed_test`) carries its two-way mean squares;
from them come the variance of a seed's effect (a seed redraws the random arms and retrains), of an eval
row's effect and of the rest. `simulate(...)` draws studies of S seeds x R rows with those variances
and a true difference `effect`, runs the same test on each, and returns the share that reach a verdict
(at alpha, on the right side): the power at `effect`, or the false-positive rate at effect 0 (an A/A
study). `benchmarks/power.py` prints both for a report and for several seed counts; a config's
`sweep.seeds` should give the power it needs at the effect it wants to see.
"""

from __future__ import annotations

import numpy as np

from playpen_attribution.report.stats import across_seed_test


def components(test: dict) -> dict[str, float]:
    """Variances of the seed effect, the row effect and the rest, from an across-seed test's mean squares."""
    ms, seeds, rows = test["mean_squares"], test["seeds"], test["rows"]
    residual = ms["residual"] or 0.0
    return {"seed": max(0.0, (ms["seed"] - residual) / rows), "row": max(0.0, ((ms["row"] or 0.0) - residual) / seeds),
            "residual": residual}


def simulate(effect: float, variance: dict[str, float], seeds: int, rows: int, studies: int = 2000,
             alpha: float = 0.05, seed: int = 0) -> float:
    """The share of simulated studies whose across-seed test finds `effect`'s side at `alpha` (for effect 0: either
    side, the false-positive rate)."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(studies):
        d = (effect + rng.normal(0, np.sqrt(variance["seed"]), (seeds, 1))
             + rng.normal(0, np.sqrt(variance["row"]), (1, rows)) + rng.normal(0, np.sqrt(variance["residual"]), (seeds, rows)))
        test = across_seed_test(d, alpha=alpha)
        if test["p_value"] is not None and test["p_value"] < alpha and (effect == 0 or np.sign(test["mean"]) == np.sign(effect)):
            hits += 1
    return hits / studies
