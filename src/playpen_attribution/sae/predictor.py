"""Predict attribution from SAE fingerprints, cross-fitted: no row is scored by a model that saw it.

The target is the attribution percentile (`rank`: scipy `rankdata / n` over the fitted rows with a
finite score, 1 = the most helpful row) or the raw `score`. Rows whose score is not finite are left
out of fitting and evaluation and counted. The scored rows are cut into `folds` groups of groups
(`GroupKFold` on the configured group column), so no group is in two folds; each fold is predicted
by a model fitted on the other folds (its target, or the classifier's top-decile label, computed
from those rows alone, so a row's own label never reaches the model that predicts it), with the
regularisation chosen by grouped folds inside that fit. Every model (`sae.models`: the SAE variants
`sae`, `sae_topk`, `sae_logistic`, `sae@<L>`, the baselines `length` and `residual`, and one named probe
`residual@<L>` per `sae.probe_layers` block) runs on the same folds. The saved predictor (`predict.model`, `sae` by default), for new rows, is fitted on
every scored row, and so is the probe that ranks the candidates. Rows without a finite score are
predicted by those final fits too (they have no label to leak).

Out-of-fold metrics per model, over every scored row: Spearman, Pearson, R^2, top-k overlap (k =
`top_fraction` of the rows; |predicted top-k & true top-k| / k), AUROC of the prediction for "in
the true top-k" and for "in the true top decile", and the regularisation chosen by the final fit
and by each fold's. For the classifier, Pearson and R^2 are null: its score is a probability, not
on the target's scale (Spearman, overlap and AUROC compare rankings and stay). When the rows carry
SmolTalk metadata, `metadata` relates both rankings (the `predict.model` variant's; percentiles,
1 = top) to `reward_model_score` (Spearman) and to each level of `quality`, `difficulty` and
`category` (mean percentile per level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from playpen_attribution.errors import UserError
from playpen_attribution.run.artifacts import RowFeatures
from playpen_attribution.sae.config import PredictConfig
from playpen_attribution.sae.models import (
    CLASSIFIERS,
    TOP_DECILE,
    chosen,
    design,
    design_name,
    features_for,
    fit_model,
    model_names,
    probe_layer_of,
    score,
    targets,
)

LEVEL_COLUMNS = ("quality", "difficulty", "category")
SPEC_KEYS = ("release", "sae_id", "hook_name", "layer", "d_sae", "pool", "model", "stat_names")
"""Index fields a feature file must share with the features a predictor was fitted on (and, for
`sae_topk`, `top_k_features`)."""


@dataclass
class Fit:
    """Every model fitted on every scored row, every row's cross-fitted prediction and the metrics."""

    pipelines: dict[str, object]
    """model -> its pipeline fitted on every scored row (what ranks rows outside the fit: candidates, new rows)."""
    crossfitted: dict[str, dict[str, float]]
    """model -> example_id -> prediction by a model that never saw the row (out of fold; unscored rows: the
    final fit)."""
    fold: dict[str, int | None]
    """example_id -> the fold whose model predicted it (None: an unscored row, predicted by the final fit)."""
    metrics: dict
    model: str = "sae"
    """The variant that feeds `predicted` (predict.model)."""

    @property
    def pipeline(self):
        """The saved predictor: the `model` variant fitted on every scored row."""
        return self.pipelines[self.model]

    @property
    def predicted(self) -> dict[str, float]:
        """The `model` variant's cross-fitted predictions (the sae_top_k ranking)."""
        return self.crossfitted[self.model]

    @property
    def probe(self) -> dict[str, float]:
        """The residual-stream probe's cross-fitted predictions on the same folds (the probe_top_k ranking)."""
        return self.crossfitted["residual"]


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


def model_metrics(y_true: np.ndarray, y_pred: np.ndarray, model: str, top_fraction: float) -> dict:
    """`heldout_metrics` plus the top-decile AUROC; a classifier's Pearson and R^2 are null (not on the target's scale)."""
    out = heldout_metrics(y_true, y_pred, top_fraction)
    out["auroc_top_decile"] = heldout_metrics(y_true, y_pred, TOP_DECILE)["auroc"]
    if model in CLASSIFIERS:
        out |= {"kind": "classifier", "pearson": None, "r2": None}
    else:
        out["kind"] = "regressor"
    return out


def fit_and_evaluate(features: RowFeatures, rows: dict[str, dict], scores: dict[str, float], cfg: PredictConfig,
                     files: dict[str, str], layers: dict[int, RowFeatures] | None = None,
                     residuals: dict[int, np.ndarray] | None = None) -> Fit:
    """Cross-fit every model over the same grouped folds; `files` names the features, scores and rows files;
    `layers` holds the extra layers' features (same rows), for the sae@<L> models; `residuals` block L -> its
    pooled residual (rows x d_model, the features' row order), for the named probes residual@<L>."""
    layers, residuals = layers or {}, residuals or {}
    ids = features.example_ids
    check_ids(ids, scores.keys(), files["features"], files["scores"])
    for layer, other in layers.items():
        if other.example_ids != ids:
            raise UserError(f"{files['features']}: the features of layer {layer} list other rows than the main layer's")
    names = model_names(features, layers, residuals)
    if cfg.model not in names:
        raise UserError(f"predict.model = {cfg.model!r}, but {files['features']} has features for "
                        f"{', '.join(n for n in names if n.startswith('sae'))} only; rerun `sae`")
    raw = np.array([scores[i] for i in ids], dtype=np.float64)
    scored = np.flatnonzero(np.isfinite(raw))
    groups = row_groups(ids, rows, cfg.group_key, files["rows"])
    fold = grouped_folds(groups[scored], cfg.folds)
    y_true = targets(scores, [ids[i] for i in scored], cfg.target)  # over every scored row, for the metrics
    unscored = np.setdiff1d(np.arange(len(ids)), scored)
    models, pipelines, crossfitted = {}, {}, {}
    for model in names:
        block = probe_layer_of(model)
        x = (residuals[block].astype(np.float64) if block is not None
             else design(features_for(model, features, layers), model, cfg.probe_pooling))
        pred, per_fold = np.empty(len(scored)), []
        for f in range(cfg.folds):
            fit_rows, held = scored[fold != f], fold == f
            fitted = fit_model(x[fit_rows], raw[fit_rows], groups[fit_rows], model, cfg)
            pred[held] = score(fitted, model, x[scored[held]])
            per_fold.append(chosen(fitted, model))
        pipelines[model] = fit_model(x[scored], raw[scored], groups[scored], model, cfg)
        final = chosen(pipelines[model], model)
        models[model] = model_metrics(y_true, pred, model, cfg.top_fraction) | final | {
            f"fold_{key}": [c[key] for c in per_fold] for key in final}
        out = dict.fromkeys(ids, float("nan"))
        if unscored.size:
            for i, value in zip(unscored, score(pipelines[model], model, x[unscored]), strict=True):
                out[ids[i]] = float(value)
        for i, value in zip(scored, pred, strict=True):
            out[ids[i]] = float(value)
        crossfitted[model] = out
    fold_of: dict[str, int | None] = dict.fromkeys(ids)
    for i, f in zip(scored, fold, strict=True):
        fold_of[ids[i]] = int(f)
    metrics = {
        "target": cfg.target, "group_key": cfg.group_key, "rows": len(ids), "rows_without_finite_score": len(unscored),
        "scored_rows": len(scored), "groups": len(set(groups[scored])), "folds": cfg.folds,
        "rows_per_fold": np.bincount(fold, minlength=cfg.folds).tolist(), "cv_folds": cfg.cv_folds,
        "cross_fitted": True, "predicted_by": cfg.model, "probe_pooling": cfg.probe_pooling,
        "top_decile": TOP_DECILE, "models": models,
        "null_metrics": {m: "Pearson and R² are not computed for a classifier: its score is P(top decile), not on "
                         "the target's scale" for m in names if m in CLASSIFIERS},
    }
    if features.topk_ids is None:
        metrics["skipped_models"] = {"sae_topk": f"{files['features']} has no top-K ids (built before them); rerun "
                                                 "`sae` with --overwrite"}
    meta = metadata_report([rows[ids[i]] for i in scored], y_true,
                           np.array([crossfitted[cfg.model][ids[i]] for i in scored]))
    if meta:
        metrics["metadata"] = meta
    return Fit(pipelines=pipelines, crossfitted=crossfitted, fold=fold_of, metrics=metrics, model=cfg.model)


def predictor_spec(index: dict, cfg: PredictConfig) -> dict:
    """The spec saved beside a predictor: the feature index fields it was fitted on (SPEC_KEYS; for sae@<L>
    that layer's index), the target, its design and the variant's name."""
    spec = {k: index[k] for k in SPEC_KEYS} | {"target": cfg.target, "design": design_name(cfg.model),
                                               "predictor": cfg.model}
    if cfg.model == "sae_topk":
        spec["top_k_features"] = index["top_k_features"]
    return spec


def check_spec(spec: dict, index: dict, where: str) -> None:
    """Refuse features extracted differently from the ones the predictor (spec) was fitted on."""
    keys = SPEC_KEYS + (("top_k_features",) if spec.get("predictor") == "sae_topk" else ())
    differ = [f"{k}: {spec.get(k)!r} vs {index.get(k)!r}" for k in keys if spec.get(k) != index.get(k)]
    if differ:
        raise UserError(f"{where}: features were extracted differently from the predictor's ({'; '.join(differ)})")


def apply_predictor(bundle: dict, features: RowFeatures, index: dict, where: str) -> np.ndarray:
    """Predictions for rows whose features were extracted exactly as the predictor's training features
    (for a sae@<L> predictor: that layer's features)."""
    spec = bundle["spec"]
    check_spec(spec, index, where)
    model = spec.get("predictor", "sae")  # predictors saved before the variants are all `sae`
    return score(bundle["pipeline"], model, design(features, model))


def apply_probe(pipeline, features: RowFeatures, probe_pooling: str) -> np.ndarray:
    """The residual probe's predictions for rows (check their spec against the main layer's first)."""
    return score(pipeline, "residual", design(features, "residual", probe_pooling))
