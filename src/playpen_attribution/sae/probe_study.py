"""The length-confound probe study's statistics: does a predictor of attribution see anything beyond length?

The authors found that length drives attribution. For each (layer, pooling) of residual features the study
cross-fits a ridge probe on the same grouped folds twice: on the raw features and target, and on features
and target with length regressed out (`residualise`, fitted inside each training fold). Each probe is judged
by its held-out Spearman and R^2 against the attribution score and by the partial Spearman given length
(`partial_spearman`): the rank correlation left once the length ranks are regressed out of both sides, which
is ~0 for a predictor that sees only length. `study_rows` builds the table rows the report shows
(`report.probe_study`). Pure numpy / scipy / scikit-learn on arrays, no model or disk.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.stats import rankdata, spearmanr

POOLINGS = ("last_token", "mean", "first_response_token")
"""The residual poolings the study compares: the last token, the mean over tokens, the first response token."""

FLAT = 1e-12
"""A residual whose spread is below this (relative to the input's) carries nothing beyond length."""


def _design(length: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(len(length)), np.asarray(length, dtype=float)])


def residualise(values: np.ndarray, length: np.ndarray, fit_on: np.ndarray | None = None) -> np.ndarray:
    """`values` (a vector or rows x columns) minus their least-squares line in `length`, the line fitted on the
    rows `fit_on` (a boolean mask; default all), so held-out rows never shape it."""
    values = np.asarray(values, dtype=float)
    design = _design(length)
    rows = np.ones(len(design), dtype=bool) if fit_on is None else np.asarray(fit_on, dtype=bool)
    coef, *_ = np.linalg.lstsq(design[rows], values[rows], rcond=None)
    return values - design @ coef


def partial_spearman(x: np.ndarray, y: np.ndarray, length: np.ndarray) -> float:
    """Spearman of `x` and `y` given `length`: the Pearson correlation of their ranks once the ranks of
    `length` are regressed out of both. 0.0 when either side has nothing left beyond length (e.g. `x` is a
    monotone function of length)."""
    rx, ry, rz = (rankdata(np.asarray(v, dtype=float)) for v in (x, y, length))
    ex, ey = residualise(rx, rz), residualise(ry, rz)
    if ex.std() <= FLAT * max(rx.std(), 1.0) or ey.std() <= FLAT * max(ry.std(), 1.0):
        return 0.0
    return float(np.corrcoef(ex, ey)[0, 1])


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / total if total > 0 else 0.0


def cross_fit(features: np.ndarray, target: np.ndarray, length: np.ndarray, folds: np.ndarray,
              alphas: list[float], residualised: bool) -> np.ndarray:
    """Held-out predictions of `target` from `features`, one ridge (RidgeCV over `alphas`) per fold fitted on
    the other folds; with `residualised`, length is first regressed out of the features and the target on the
    training folds (so the probe is asked what it predicts beyond length)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = np.asarray(features, dtype=float), np.asarray(target, dtype=float)
    pred = np.empty(len(y))
    for fold in np.unique(folds):
        train = folds != fold
        xs = residualise(x, length, train) if residualised else x
        ys = residualise(y, length, train) if residualised else y
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas)).fit(xs[train], ys[train])
        pred[~train] = model.predict(xs[~train])
    return pred


def judge(pred: np.ndarray, target: np.ndarray, length: np.ndarray, residualised: bool) -> dict:
    """Spearman and R^2 of held-out predictions against the target they were fitted to (the residualised
    target for a residualised probe), and the partial Spearman with the attribution score given length."""
    y = residualise(target, length) if residualised else np.asarray(target, dtype=float)
    rho = spearmanr(pred, y).statistic if np.ptp(pred) > 0 else 0.0
    return {"spearman": round(float(rho), 4), "r2": round(_r2(y, pred), 4),
            "partial_spearman": round(partial_spearman(pred, target, length), 4)}


def study_rows(features: Mapping[tuple[int, str], np.ndarray], target: np.ndarray, length: np.ndarray,
               folds: np.ndarray, alphas: list[float]) -> list[dict]:
    """One table row per (layer, pooling) and per variant (raw, length-residualised), plus a `length` row
    (the probe that sees only the token count), sorted by layer, pooling, variant."""
    length = np.asarray(length, dtype=float)
    rows = []
    for (layer, pooling), x in sorted(features.items()):
        for residualised in (False, True):
            pred = cross_fit(x, target, length, folds, alphas, residualised)
            rows.append({"layer": layer, "pooling": pooling, "length_residualised": residualised}
                        | judge(pred, target, length, residualised))
    only_length = cross_fit(length[:, None], target, length, folds, alphas, residualised=False)
    rows.append({"layer": None, "pooling": "length", "length_residualised": False}
                | judge(only_length, target, length, residualised=False))
    return rows
