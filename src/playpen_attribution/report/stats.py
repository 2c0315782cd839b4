"""Statistics of the report: intervals and paired tests. Pure functions, no files.

- `wilson_interval`: the Wilson score interval of a proportion (95% by default).
- `mcnemar_exact`: exact McNemar test of two models on the same rows: a two-sided binomial test
  (p = 1/2) on the discordant pairs (scipy.stats.binomtest).
- `bootstrap_mean`: a percentile bootstrap interval of the mean of paired per-row differences.
- `across_seed_test`: the across-seed interval and test of a mean difference: a t interval / t-test
  with the crossed seed x eval-row variance (Satterthwaite degrees of freedom), the smallest
  difference the design detects at 80% power, "no replication" when the seeds did not vary, the
  interval cut to the metric's range. The seed is the replication (a seed redraws the random arms and
  retrains); tests that treat every (seed, row) pair as independent (pooled McNemar, sign flips of
  every pair, a bootstrap over 3 seeds) ignore that spread, and an A/A control of two identically
  drawn arms got p_holm < 0.001 from them.
- `paired`: joins two models' per-row values on example_id (both must hold the same rows).
- `mcnemar_pooled`: exact McNemar over several seeds' tables (descriptive: the discordant rows of all
  seeds; not the across-seed test).
- `sign_flip_p`: a paired permutation test of a mean difference, flipping the sign of each row's
  difference (the per-seed test of eval loss in loss-only runs).
- `holm`: Holm-Bonferroni adjusted p-values of a family of tests.
- `fixed_sequence`: the pre-declared primary test alone at alpha, then Holm over the secondary tests.

Bootstrap draws use a fixed generator seed, so a report is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

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


def mcnemar_exact(a_correct: Sequence[bool] | np.ndarray, b_correct: Sequence[bool] | np.ndarray) -> dict:
    """Exact McNemar test on paired outcomes: counts of the 2x2 table and the two-sided p-value."""
    from scipy.stats import binomtest

    if len(a_correct) != len(b_correct):
        raise ValueError("mcnemar_exact needs paired outcomes of equal length")
    a_only = sum(bool(a) and not bool(b) for a, b in zip(a_correct, b_correct, strict=True))
    b_only = sum(bool(b) and not bool(a) for a, b in zip(a_correct, b_correct, strict=True))
    both = sum(bool(a) and bool(b) for a, b in zip(a_correct, b_correct, strict=True))
    discordant = a_only + b_only
    p_value = 1.0 if discordant == 0 else float(binomtest(a_only, discordant, 0.5).pvalue)
    return {"both": both, "a_only": a_only, "b_only": b_only, "neither": len(a_correct) - both - discordant,
            "p_value": p_value}


def _interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean(
    differences: Sequence[float] | np.ndarray, level: float = 0.95, draws: int = BOOTSTRAP_DRAWS,
    seed: int = BOOTSTRAP_SEED,
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


NO_REPLICATION_TOLERANCE = 1e-9
"""Seeds whose per-row differences all agree within this (relative to the largest, at least absolute) did not
vary: the seed replicated nothing."""
POWER = 0.8
"""The power the minimal detectable difference is given at."""


def _t_stats(mean: float, se: float, df: float, level: float, alpha: float) -> dict:
    from scipy.stats import t as student_t

    if se == 0.0:
        return {"ci_low": mean, "ci_high": mean, "p_value": 1.0 if mean == 0 else 0.0, "mde": 0.0}
    half = float(student_t.ppf(0.5 + level / 2, df)) * se
    mde = float(student_t.ppf(1 - alpha / 2, df) + student_t.ppf(POWER, df)) * se
    return {"ci_low": mean - half, "ci_high": mean + half, "p_value": float(2 * student_t.sf(abs(mean) / se, df)),
            "mde": mde}


def across_seed_test(differences: np.ndarray, level: float = 0.95, alpha: float = 0.05,
                     bounds: tuple[float, float] | None = None) -> dict:
    """The across-seed test of a mean paired difference, from per-row differences [seeds, rows] on the same
    eval rows in every seed: a t-test with the crossed seed x row variance and Satterthwaite's degrees of
    freedom.

    A difference d[s, r] = mean + seed effect (a seed redraws the random arms and retrains) + row effect
    (an eval row one arm gets right in every seed) + noise. The mean over S seeds and R rows has variance
    var_seed / S + var_row / R + var_noise / (S R). From the two-way mean squares, each variance
    component is estimated and cut at zero: (max(MS_seed, MS_res) + max(0, MS_row - MS_res)) / (S R),
    so the verdict holds for new seeds and new eval rows of the same kind. The seed term keeps the
    seeds' S - 1 degrees of freedom even where the noise's mean square stands in for it (seeds that
    agree by chance do not make the test bolder); Satterthwaite combines them. Without a row effect and
    with seeds that vary it is the t-test of the per-seed means. On simulated studies (1,000-4,000 each,
    tests/unit/test_report_stats.py and BENCHMARKS.md) it calls at most its 5% in A/A studies and with
    row effects, where leaving the seed term uncut called up to 6-7% with 3 seeds.

    `status`: `tested`; `one_seed` (the rows' variance alone, descriptive, no p-value);
    `no_replication` (every seed gave the same per-row differences, up to rounding: the seed replicated
    nothing, no p-value). `mde`: the smallest difference this design detects at `POWER` with a
    two-sided test at `alpha`. With `bounds` (the metric's range of a difference) the interval is cut
    to it and `clipped` says so."""
    values = np.asarray(differences, dtype=float)
    if values.ndim != 2 or values.size == 0:
        raise ValueError("across_seed_test needs a non-empty [seeds, rows] array")
    n_seeds, n_rows = values.shape
    per_seed, per_row = values.mean(axis=1), values.mean(axis=0)
    mean = float(per_seed.mean())
    out: dict = {"mean": mean, "seeds": n_seeds, "rows": n_rows}
    if n_seeds < 2:
        se = math.sqrt(values[0].var(ddof=1) / n_rows) if n_rows > 1 else 0.0
        out |= {"status": "one_seed", "se": se, "df": max(n_rows - 1, 1)}
        out |= {k: v for k, v in _t_stats(mean, se, out["df"], level, alpha).items() if k != "p_value"}
        out["p_value"] = None
    elif float(np.ptp(values, axis=0).max()) <= NO_REPLICATION_TOLERANCE * max(1.0, float(np.abs(values).max())):
        out |= {"status": "no_replication", "se": None, "df": None, "ci_low": mean, "ci_high": mean, "p_value": None,
                "mde": None}
        return out
    else:
        cells = n_seeds * n_rows
        ms_seed = n_rows * float(per_seed.var(ddof=1))
        ms_row, ms_res, df_res = 0.0, 0.0, 1
        if n_rows > 1:
            ms_row = n_seeds * float(per_row.var(ddof=1))
            residual = values - per_seed[:, None] - per_row[None, :] + mean
            df_res = (n_seeds - 1) * (n_rows - 1)
            ms_res = float((residual ** 2).sum()) / df_res
        seed_ms = max(ms_seed, ms_res)
        terms = [(seed_ms, n_seeds - 1)]
        row_ms = max(0.0, ms_row - ms_res)
        if row_ms > 0:
            terms += [(ms_row, n_rows - 1), (ms_res, df_res)]
        total = seed_ms + row_ms
        df = total ** 2 / sum(ms ** 2 / d for ms, d in terms) if total > 0 else float(n_seeds - 1)
        se = math.sqrt(total / cells)
        out |= {"status": "tested", "se": se, "df": df, "variance": {"seed": seed_ms / cells, "row": row_ms / cells},
                "mean_squares": {"seed": ms_seed, "row": ms_row, "residual": ms_res}}
        out |= _t_stats(mean, se, df, level, alpha)
    out["clipped"] = False
    if bounds is not None and (out["ci_low"] < bounds[0] or out["ci_high"] > bounds[1]):
        out |= {"ci_low": max(out["ci_low"], bounds[0]), "ci_high": min(out["ci_high"], bounds[1]), "clipped": True}
    return out


def fixed_sequence(primary_p: float | None, secondary_ps: Sequence[float], alpha: float = 0.05) -> tuple[bool, list[float]]:
    """The primary test alone at `alpha`; the secondary tests Holm-adjusted among themselves. Returns (whether the
    primary rejected: the gate to the secondaries, which a fixed sequence may claim only then; their p_holm)."""
    return primary_p is not None and primary_p < alpha, holm(secondary_ps)


def paired(a: Mapping[str, object], b: Mapping[str, object], what: str) -> tuple[list[str], list, list]:
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
