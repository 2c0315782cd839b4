"""Statistics of the report: intervals and paired tests. Pure functions, no files.

- `wilson_interval`: the Wilson score interval of a proportion (95% by default).
- `mcnemar_exact`: exact McNemar test of two models on the same rows: a two-sided binomial test
  (p = 1/2) on the discordant pairs (scipy.stats.binomtest).
- `bootstrap_mean`: a percentile bootstrap interval of the mean of paired per-row differences.
- `seed_t_test`: the across-seed interval and test of a mean difference: a t interval / t-test with
  seeds - 1 degrees of freedom on the per-seed mean differences. The seed is the replication (a seed
  redraws the random arms and retrains); tests that treat every (seed, row) pair as independent
  (pooled McNemar, sign flips of every pair, a bootstrap over 3 seeds) ignore that spread, and an A/A
  control of two identically drawn arms got p_holm < 0.001 from them.
- `paired`: joins two models' per-row values on example_id (both must hold the same rows).
- `mcnemar_pooled`: exact McNemar over several seeds' tables (descriptive: the discordant rows of all
  seeds; not the across-seed test).
- `sign_flip_p`: a paired permutation test of a mean difference, flipping the sign of each row's
  difference (the per-seed test of eval loss in loss-only runs).
- `holm`: Holm-Bonferroni adjusted p-values of a family of tests (every test in one report).

Bootstrap draws use a fixed generator seed, so a report is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from playpen_attribution.errors import UserError

Z95 = 1.959963984540054
BOOTSTRAP_DRAWS = 4000
BOOTSTRAP_SEED = 0


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of correct/total; (0, 1) when total is 0."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    # at 0 or total correct the bound is exactly 0 or 1; the formula leaves float dust on the wrong side of p
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == total else min(1.0, centre + half)
    return low, high


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict:
    """Exact McNemar test on paired outcomes: counts of the 2x2 table and the two-sided p-value."""
    from scipy.stats import binomtest

    if len(a_correct) != len(b_correct):
        raise ValueError("mcnemar_exact needs paired outcomes of equal length")
    a_only = sum(bool(a) and not bool(b) for a, b in zip(a_correct, b_correct))
    b_only = sum(bool(b) and not bool(a) for a, b in zip(a_correct, b_correct))
    both = sum(bool(a) and bool(b) for a, b in zip(a_correct, b_correct))
    discordant = a_only + b_only
    p_value = 1.0 if discordant == 0 else float(binomtest(a_only, discordant, 0.5).pvalue)
    return {"both": both, "a_only": a_only, "b_only": b_only, "neither": len(a_correct) - both - discordant,
            "p_value": p_value}


def _interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean(
    differences: Sequence[float], level: float = 0.95, draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED
) -> dict:
    """Mean of paired per-row differences with a percentile bootstrap interval (rows resampled)."""
    values = np.asarray(differences, dtype=float)
    if values.size == 0:
        raise ValueError("bootstrap_mean needs at least one difference")
    rng = np.random.default_rng(seed)
    means = np.empty(draws)
    for start in range(0, draws, 500):
        stop = min(draws, start + 500)
        means[start:stop] = values[rng.integers(0, values.size, (stop - start, values.size))].mean(axis=1)
    low, high = _interval(means, level)
    return {"mean": float(values.mean()), "ci_low": low, "ci_high": high}


def seed_t_test(differences: np.ndarray, level: float = 0.95) -> dict:
    """Across seeds, per-row paired differences [seeds, rows] on the same eval rows: the mean of the
    per-seed mean differences, a t interval and a two-sided one-sample t-test of the per-seed means with
    seeds - 1 degrees of freedom. The seed is the replication: a seed redraws the random arms and
    retrains, and its mean difference carries that variation and the eval rows' noise; the eval set is
    held fixed, as in the per-seed tests. (Adding the eval rows' variance of the seed-averaged
    differences on top counts their noise twice: on simulated A/A runs that test called 0.35% instead of
    5%.) One seed: the rows' variance alone (rows - 1 degrees of freedom); no verdict is drawn from it.
    Seeds with identical mean differences: the rows' variance stands in for the seeds' (zero) spread."""
    from scipy.stats import t as student_t

    values = np.asarray(differences, dtype=float)
    if values.ndim != 2 or values.size == 0:
        raise ValueError("seed_t_test needs a non-empty [seeds, rows] array")
    n_seeds, n_rows = values.shape
    per_seed = values.mean(axis=1)
    mean = float(per_seed.mean())
    row_se = math.sqrt(values.mean(axis=0).var(ddof=1) / n_rows) if n_rows > 1 else 0.0
    if n_seeds > 1:
        se, df = math.sqrt(per_seed.var(ddof=1) / n_seeds), n_seeds - 1
        if se == 0.0:  # seeds that agree to the last row say nothing of their spread: the rows' variance stands in
            se = row_se
    else:
        se, df = row_se, max(n_rows - 1, 1)
    if se == 0.0:
        return {"mean": mean, "ci_low": mean, "ci_high": mean, "p_value": 1.0 if mean == 0 else 0.0, "se": 0.0, "df": df}
    half = float(student_t.ppf(0.5 + level / 2, df)) * se
    p_value = float(2 * student_t.sf(abs(mean) / se, df))
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "p_value": p_value, "se": se, "df": df}


def paired(a: dict[str, object], b: dict[str, object], what: str) -> tuple[list[str], list, list]:
    """(example_ids, a's values, b's values) joined on example_id; both must cover the same rows."""
    if set(a) != set(b):
        raise UserError(f"{what}: the two evaluations do not hold the same eval rows "
                        f"({len(set(a) - set(b))} only in the first, {len(set(b) - set(a))} only in the second)")
    ids = sorted(a)
    return ids, [a[i] for i in ids], [b[i] for i in ids]


def mcnemar_pooled(tables: Sequence[dict]) -> dict:
    """Exact McNemar over several seeds' paired tables (from `mcnemar_exact`): a two-sided binomial test
    on all discordant (row, seed) pairs together, each seed's pair of trainings one replication."""
    from scipy.stats import binomtest

    a_only, b_only = sum(t["a_only"] for t in tables), sum(t["b_only"] for t in tables)
    discordant = a_only + b_only
    p_value = 1.0 if discordant == 0 else float(binomtest(a_only, discordant, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p_value": p_value}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (step-down, monotone, capped at 1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


PERMUTATION_DRAWS = 10000


def sign_flip_p(differences: np.ndarray, draws: int = PERMUTATION_DRAWS, seed: int = BOOTSTRAP_SEED) -> float:
    """Two-sided p-value that the mean of paired differences (any shape, e.g. [seeds, rows]) is zero:
    under the null each difference is as likely to have either sign. Monte Carlo with a fixed generator,
    (hits + 1) / (draws + 1) so it is never 0."""
    values = np.asarray(differences, dtype=float).ravel()
    if values.size == 0:
        raise ValueError("sign_flip_p needs at least one difference")
    observed = abs(values.mean())
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, draws, 500):
        stop = min(draws, start + 500)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(stop - start, values.size))
        hits += int((np.abs((signs * values).mean(axis=1)) >= observed - 1e-12).sum())
    return (hits + 1) / (draws + 1)
