"""Predict attribution from SAE fingerprints, cross-fitted: no row is scored by a model that saw it.

The target is the attribution percentile (`rank`: scipy `rankdata / n` over the fitted rows with a
finite score, 1 = the most helpful row) or the raw `score`. Rows whose score is not finite are left
out of fitting and evaluation and counted. The scored rows are cut into `folds` groups of groups
(`GroupKFold` on the configured group column), so no group is in two folds; each fold is predicted
by a model fitted on the other folds (its percentile target computed from those rows alone, so a
row's own label never reaches the model that predicts it), with the ridge regularisation chosen by
RidgeCV over grouped folds inside that fit. The saved predictor, for new rows, is fitted on every
scored row. Rows without a finite score are predicted by it too (they have no label to leak).

Three models share the folds:

- `sae`: the ten sample statistics + the per-feature mean activation (optionally through a sparse
  random projection to `projection_dim`), standardised, RidgeCV;
- `length`: the row's token count alone (the length baseline);
- `residual`: the mean-pooled raw residual stream of the same layer, standardised, RidgeCV (the
  no-SAE probe); its cross-fitted predictions are the `probe` ranking of the `probe_top_k` arm.

Out-of-fold metrics per model, over every scored row: Spearman, Pearson, R^2, top-k overlap (k =
`top_fraction` of the rows; |predicted top-k & true top-k| / k) and AUROC of the prediction for "in
the true top-k". When the rows carry SmolTalk metadata, `metadata` relates both rankings
(percentiles, 1 = top) to `reward_model_score` (Spearman) and to each level of `quality`,
`difficulty` and `category` (mean percentile per level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from playpen_attribution.errors import UserError
from playpen_attribution.run.artifacts import RowFeatures
from playpen_attribution.sae.config import PredictConfig
from playpen_attribution.sae.features import STAT_NAMES

MODELS = ("sae", "length", "residual")
LEVEL_COLUMNS = ("quality", "difficulty", "category")
SPEC_KEYS = ("release", "sae_id", "hook_name", "layer", "d_sae", "pool", "model", "stat_names")
"""Index fields a feature file must share with the features a predictor was fitted on."""


@dataclass
class Fit:
    """The SAE predictor fitted on every scored row, every row's cross-fitted prediction and the metrics."""

    pipeline: object
    predicted: dict[str, float]
    """example_id -> prediction by a model that never saw the row (out of fold; unscored rows: `pipeline`)."""
    fold: dict[str, int | None]
    """example_id -> the fold whose model predicted it (None: an unscored row, predicted by `pipeline`)."""
    metrics: dict
    probe: dict[str, float] | None = None
    """example_id -> the residual-stream probe's prediction, cross-fitted on the same folds (the probe_top_k ranking)."""


def design(features: RowFeatures, model: str) -> np.ndarray:
    """The input columns of one model, rows in the features' order."""
    if model == "sae":
        return np.hstack([features.stats, features.feature_mean]).astype(np.float64)
    if model == "length":
        return features.stats[:, [STAT_NAMES.index("seq_len")]].astype(np.float64)
    return features.residual_mean.astype(np.float64)


def build_pipeline(model: str, cfg: PredictConfig, cv: list):
    """StandardScaler -> RidgeCV, with the sparse random projection of the feature means when asked."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.random_projection import SparseRandomProjection

    ridge = RidgeCV(alphas=list(cfg.alphas), cv=cv)
    if model == "sae" and cfg.projection_dim is not None:
        n = len(STAT_NAMES)
        project = ColumnTransformer([
            ("stats", "passthrough", slice(0, n)),
            ("means", SparseRandomProjection(cfg.projection_dim, random_state=cfg.seed), slice(n, None)),
        ])
        return make_pipeline(project, StandardScaler(), ridge)
    return make_pipeline(StandardScaler(), ridge)


def targets(scores: dict[str, float], ids: list[str], kind: str) -> np.ndarray:
    """Attribution target per id: percentile among finite scores (rank) or the score; NaN if not finite."""
    from scipy.stats import rankdata

    values = np.array([scores[i] for i in ids], dtype=np.float64)
    if kind == "score":
        return values
    finite = np.isfinite(values)
    out = np.full(len(values), np.nan)
    out[finite] = rankdata(values[finite]) / finite.sum()
    return out


def check_ids(feature_ids: list[str], score_ids, features_file: str, scores_file: str) -> None:
    """The feature file and the score file must hold exactly the same example_ids."""
    missing, extra = set(score_ids) - set(feature_ids), set(feature_ids) - set(score_ids)
    if missing or extra:
        raise UserError(
            f"{features_file} and {scores_file} do not hold the same example_ids: {len(missing)} scored rows have no "
            f"features (e.g. {sorted(missing)[:3]}), {len(extra)} feature rows have no score (e.g. {sorted(extra)[:3]}); "
            "extract features of the scored split (sae.split) or rerun `sae`"
        )


def row_groups(ids: list[str], rows: dict[str, dict], key: str, rows_file: str) -> np.ndarray:
    groups = []
    for eid in ids:
        if eid not in rows:
            raise UserError(f"{rows_file}: no row with example_id {eid!r} (it has SAE features)")
        if key not in rows[eid]:
            raise UserError(f"{rows_file}: row {eid!r} has no column {key!r} (predict.group_key)")
        groups.append(str(rows[eid][key]))
    return np.array(groups)


def _num(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def heldout_metrics(y_true: np.ndarray, y_pred: np.ndarray, top_fraction: float) -> dict:
    """Spearman, Pearson, R^2, top-k overlap and top-vs-rest AUROC of predictions on held-out rows."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import r2_score, roc_auc_score

    n = len(y_true)
    k = max(1, round(top_fraction * n))
    true_top = np.argsort(-y_true, kind="stable")[:k]
    pred_top = np.argsort(-y_pred, kind="stable")[:k]
    label = np.zeros(n, dtype=bool)
    label[true_top] = True
    varied = n > 1 and np.ptp(y_pred) > 0 and np.ptp(y_true) > 0
    return {
        "spearman": _num(spearmanr(y_true, y_pred).statistic) if varied else None,
        "pearson": _num(pearsonr(y_true, y_pred).statistic) if varied else None,
        "r2": _num(r2_score(y_true, y_pred)) if n > 1 else None,
        "top_k": k,
        "top_k_overlap": len(set(true_top) & set(pred_top)) / k,
        "auroc": _num(roc_auc_score(label, y_pred)) if 0 < k < n else None,
    }


def metadata_report(rows: list[dict], y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """How the predicted and the true ranking relate to SmolTalk metadata, on the held-out rows."""
    from scipy.stats import rankdata, spearmanr

    true_pct, pred_pct = rankdata(y_true) / len(y_true), rankdata(y_pred) / len(y_pred)
    report: dict = {}
    rms = np.array([_num(r.get("reward_model_score")) if isinstance(r.get("reward_model_score"), (int, float))
                    else None for r in rows], dtype=object)
    has = np.array([v is not None for v in rms])
    if has.sum() > 2:
        values = rms[has].astype(np.float64)
        report["reward_model_score"] = {
            "rows": int(has.sum()),
            "spearman_true_rank": _num(spearmanr(true_pct[has], values).statistic),
            "spearman_predicted_rank": _num(spearmanr(pred_pct[has], values).statistic),
        }
    for column in LEVEL_COLUMNS:
        levels: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            if row.get(column) is not None:
                levels.setdefault(str(row[column]), []).append(i)
        if levels:
            report[column] = {
                level: {"rows": len(idx), "mean_true_rank": float(true_pct[idx].mean()),
                        "mean_predicted_rank": float(pred_pct[idx].mean())}
                for level, idx in sorted(levels.items())
            }
    return report


def grouped_folds(groups: np.ndarray, n_folds: int) -> np.ndarray:
    """Fold (0..n-1) of each row, whole groups per fold (GroupKFold); UserError with too few groups."""
    from sklearn.model_selection import GroupKFold

    if len(set(groups)) < n_folds:
        raise UserError(f"predict.folds = {n_folds} but the scored rows have only {len(set(groups))} group(s) "
                        f"(predict.group_key); lower predict.folds")
    fold = np.empty(len(groups), dtype=int)
    for i, (_, held) in enumerate(GroupKFold(n_splits=n_folds).split(np.zeros(len(groups)), groups=groups)):
        fold[held] = i
    return fold


def _fit(x: np.ndarray, scores: np.ndarray, groups: np.ndarray, model: str, cfg: PredictConfig):
    """One model fitted on these rows: the target computed from them alone, alpha by grouped RidgeCV."""
    from sklearn.model_selection import GroupKFold

    y = targets(dict(enumerate(scores)), list(range(len(scores))), cfg.target)
    n_inner = min(cfg.cv_folds, len(set(groups)))
    if n_inner < 2:
        raise UserError(f"predict: a fit has {n_inner} group(s); RidgeCV needs at least 2 (lower predict.folds)")
    cv = list(GroupKFold(n_splits=n_inner).split(np.zeros(len(groups)), groups=groups))
    return build_pipeline(model, cfg, cv).fit(x, y)


def fit_and_evaluate(features: RowFeatures, rows: dict[str, dict], scores: dict[str, float], cfg: PredictConfig,
                     files: dict[str, str]) -> Fit:
    """Cross-fit the three models over grouped folds; `files` names the features, scores and rows files."""
    ids = features.example_ids
    check_ids(ids, scores.keys(), files["features"], files["scores"])
    raw = np.array([scores[i] for i in ids], dtype=np.float64)
    scored = np.flatnonzero(np.isfinite(raw))
    groups = row_groups(ids, rows, cfg.group_key, files["rows"])
    fold = grouped_folds(groups[scored], cfg.folds)
    y_true = targets(scores, [ids[i] for i in scored], cfg.target)  # over every scored row, for the metrics
    models, out_of_fold, final = {}, {}, {}
    for model in MODELS:
        x = design(features, model)
        pred = np.empty(len(scored))
        for f in range(cfg.folds):
            fit_rows, held = scored[fold != f], fold == f
            pred[held] = _fit(x[fit_rows], raw[fit_rows], groups[fit_rows], model, cfg).predict(x[scored[held]])
        final[model] = _fit(x[scored], raw[scored], groups[scored], model, cfg)
        models[model] = heldout_metrics(y_true, pred, cfg.top_fraction) | {"alpha": float(final[model][-1].alpha_)}
        out_of_fold[model] = pred
    unscored = np.setdiff1d(np.arange(len(ids)), scored)
    fold_of: dict[str, int | None] = dict.fromkeys(ids)
    for i, f in zip(scored, fold):
        fold_of[ids[i]] = int(f)

    def crossfitted(model: str) -> dict[str, float]:
        out = dict.fromkeys(ids, float("nan"))
        if unscored.size:
            for i, value in zip(unscored, final[model].predict(design(features, model)[unscored])):
                out[ids[i]] = float(value)
        for i, value in zip(scored, out_of_fold[model]):
            out[ids[i]] = float(value)
        return out

    predicted = crossfitted("sae")
    metrics = {
        "target": cfg.target, "group_key": cfg.group_key, "rows": len(ids), "rows_without_finite_score": len(unscored),
        "scored_rows": len(scored), "groups": len(set(groups[scored])), "folds": cfg.folds,
        "rows_per_fold": np.bincount(fold, minlength=cfg.folds).tolist(), "cv_folds": cfg.cv_folds,
        "cross_fitted": True, "models": models,
    }
    meta = metadata_report([rows[ids[i]] for i in scored], y_true, out_of_fold["sae"])
    if meta:
        metrics["metadata"] = meta
    return Fit(pipeline=final["sae"], predicted=predicted, fold=fold_of, metrics=metrics, probe=crossfitted("residual"))


def apply_predictor(bundle: dict, features: RowFeatures, index: dict, where: str) -> np.ndarray:
    """Predictions for rows whose features were extracted exactly as the predictor's training features."""
    spec = bundle["spec"]
    differ = [f"{k}: {spec.get(k)!r} vs {index.get(k)!r}" for k in SPEC_KEYS if spec.get(k) != index.get(k)]
    if differ:
        raise UserError(f"{where}: features were extracted differently from the predictor's ({'; '.join(differ)})")
    return bundle["pipeline"].predict(design(features, "sae"))
