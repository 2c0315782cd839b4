"""The attribution predictors and their baselines: each model's input columns, its sklearn pipeline,
how it is fitted on a set of rows (its target computed from those rows alone) and how it scores rows.

Models, by the name they have in `predict/metrics.json`:

- `sae`: the ten sample statistics + the per-feature mean activation (optionally through a sparse
  random projection to `predict.projection_dim`), standardised, RidgeCV over `predict.alphas`;
- `sae_topk`: the statistics + the top-K sparse vector (each row's `topk_values` at its `topk_ids`,
  zeros elsewhere; d_sae wide), otherwise as `sae`;
- `sae_logistic`: the `sae` design, LogisticRegressionCV over `predict.cs` (L2, log loss, grouped
  stratified inner folds) of the label "in the top 10% of attribution" (`TOP_DECILE`) among the
  fit's own rows; it scores a row by the predicted probability of that label;
- `sae@<L>`: the `sae` design on the features of extra layer L (`sae.extra_layers`);
- `length`: the row's token count alone (the length baseline);
- `residual`: the raw residual stream of the SAE's layer, mean-pooled or at the last pooled token
  (`predict.probe_pooling`), standardised, RidgeCV (the no-SAE probe, `probe_top_k`'s ranking);
- `residual@<L>`: the same probe on block L's residual (`sae.probe_layers`, pooled the same way; the
  named probe whose cross-fitted predictions rank `probe_top_k@<L>`).

Regressors fit the attribution target (`rank`: percentile among the fit's rows, 1 = top; `score`:
the raw score); RidgeCV and LogisticRegressionCV choose their regularisation by grouped folds inside
the fit, so nothing outside the fit's rows reaches it.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from playpen_attribution.errors import UserError
from playpen_attribution.run.artifacts import RowFeatures
from playpen_attribution.sae.config import PredictConfig
from playpen_attribution.sae.features import STAT_NAMES

K = TypeVar("K", bound=Hashable)

TOP_DECILE = 0.1
"""Share of a fit's rows (by attribution) that the classifier's label calls top."""
CLASSIFIERS = ("sae_logistic",)
SAE_DESIGNS = ("sae", "sae_topk", "sae_logistic")
_LAYER = re.compile(r"^sae@(\d+)$")
_PROBE_LAYER = re.compile(r"^residual@(\d+)$")
DESIGNS = {
    "sae": "stats + feature_mean", "sae_topk": "stats + top-K feature means (zeros elsewhere)",
    "sae_logistic": "stats + feature_mean -> P(top decile)", "length": "seq_len",
}


def layer_of(model: str) -> int | None:
    """L of a model `sae@<L>`, None for the other models."""
    match = _LAYER.match(model)
    return int(match.group(1)) if match else None


def probe_layer_of(model: str) -> int | None:
    """L of a model `residual@<L>`, None for the other models."""
    match = _PROBE_LAYER.match(model)
    return int(match.group(1)) if match else None


def model_names(features: RowFeatures, layers: dict[int, RowFeatures], probe_layers=()) -> list[str]:
    """The models fitted on these features: sae_topk only when the features carry top-K ids (feature files
    from before them do not), one sae@<L> per extra layer, the two baselines, one residual@<L> per probe layer."""
    names = ["sae"] + (["sae_topk"] if features.topk_ids is not None else []) + ["sae_logistic"]
    return (names + [f"sae@{layer}" for layer in sorted(layers)] + ["length", "residual"]
            + [f"residual@{layer}" for layer in sorted(probe_layers)])


def features_for(model: str, features: RowFeatures, layers: dict[int, RowFeatures]) -> RowFeatures:
    """The features a model reads: its extra layer's for sae@<L>, the main layer's otherwise."""
    layer = layer_of(model)
    return features if layer is None else layers[layer]


def design_name(model: str, probe_pooling: str = "mean") -> str:
    """What a model's input columns are, in words (recorded in the saved predictor's spec)."""
    if model == "residual":
        return f"residual ({probe_pooling})"
    return DESIGNS.get(model, DESIGNS["sae"])


def top_k_dense(features: RowFeatures) -> np.ndarray:
    """rows x d_sae: each row's top-K values at their feature ids, zeros elsewhere."""
    if features.topk_ids is None or features.topk_values is None:
        raise UserError("these SAE features have no top-K ids (built before sae.top_k_features); rerun `sae` with "
                        "--overwrite")
    n, d = features.feature_mean.shape
    dense = np.zeros((n, d), dtype=np.float64)
    valid = features.topk_ids >= 0
    rows = np.broadcast_to(np.arange(n)[:, None], features.topk_ids.shape)
    dense[rows[valid], features.topk_ids[valid]] = features.topk_values[valid]
    return dense


def design(features: RowFeatures, model: str, probe_pooling: str = "mean") -> np.ndarray:
    """The input columns of one model, rows in the features' order (for sae@<L>, pass that layer's features)."""
    if model == "sae_topk":
        return np.hstack([features.stats.astype(np.float64), top_k_dense(features)])
    if model == "length":
        return features.stats[:, [STAT_NAMES.index("seq_len")]].astype(np.float64)
    if model == "residual":
        if probe_pooling == "last_token":
            if features.residual_last is None:
                raise UserError("predict.probe_pooling = 'last_token' but these SAE features have no residual_last "
                                "(built before it); rerun `sae` with --overwrite")
            return features.residual_last.astype(np.float64)
        return features.residual_mean.astype(np.float64)
    return np.hstack([features.stats, features.feature_mean]).astype(np.float64)  # sae, sae_logistic, sae@<L>


def build_pipeline(model: str, cfg: PredictConfig, cv: list):
    """[sparse random projection of the SAE columns] -> StandardScaler -> RidgeCV (or LogisticRegressionCV)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.random_projection import SparseRandomProjection

    if model in CLASSIFIERS:
        head = LogisticRegressionCV(Cs=list(cfg.cs), cv=cv, l1_ratios=(0.0,), scoring="neg_log_loss", max_iter=2000,
                                    use_legacy_attributes=False)
    else:
        head = RidgeCV(alphas=list(cfg.alphas), cv=cv)
    sae_like = model in SAE_DESIGNS or layer_of(model) is not None
    if sae_like and cfg.projection_dim is not None:
        n = len(STAT_NAMES)
        project = ColumnTransformer([
            ("stats", "passthrough", slice(0, n)),
            ("means", SparseRandomProjection(cfg.projection_dim, random_state=cfg.seed), slice(n, None)),
        ])
        return make_pipeline(project, StandardScaler(), head)
    return make_pipeline(StandardScaler(), head)


def targets(scores: Mapping[K, float], ids: Sequence[K], kind: str) -> np.ndarray:
    """Attribution target per id: percentile among finite scores (rank) or the score; NaN if not finite."""
    from scipy.stats import rankdata

    values = np.array([scores[i] for i in ids], dtype=np.float64)
    if kind == "score":
        return values
    finite = np.isfinite(values)
    out = np.full(len(values), np.nan)
    out[finite] = rankdata(values[finite]) / finite.sum()
    return out


def top_decile_labels(scores: np.ndarray) -> np.ndarray:
    """True for the max(1, round(10% of n)) rows of highest score among exactly these rows (ties: first wins)."""
    k = max(1, round(TOP_DECILE * len(scores)))
    label = np.zeros(len(scores), dtype=bool)
    label[np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]] = True
    return label


def fit_model(x: np.ndarray, scores: np.ndarray, groups: np.ndarray, model: str, cfg: PredictConfig):
    """One model fitted on these rows (finite scores): its target or label computed from them alone, its
    regularisation chosen on grouped folds of them."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    if model in CLASSIFIERS:
        y = top_decile_labels(scores)
        n_inner = min(cfg.cv_folds, len(set(groups[y])), len(set(groups[~y])))
        if n_inner < 2:
            raise UserError(f"predict: a fit's top-decile rows lie in {len(set(groups[y]))} group(s); the classifier "
                            f"{model} needs them in at least 2 (lower predict.folds, or more scored groups)")
        cv = list(StratifiedGroupKFold(n_splits=n_inner).split(np.zeros(len(groups)), y, groups=groups))
    else:
        y = targets(dict(enumerate(scores)), list(range(len(scores))), cfg.target)
        n_inner = min(cfg.cv_folds, len(set(groups)))
        if n_inner < 2:
            raise UserError(f"predict: a fit has {n_inner} group(s); RidgeCV needs at least 2 (lower predict.folds)")
        cv = list(GroupKFold(n_splits=n_inner).split(np.zeros(len(groups)), groups=groups))
    return build_pipeline(model, cfg, cv).fit(x, y)


def score(pipeline, model: str, x: np.ndarray) -> np.ndarray:
    """A fitted model's scores of rows (higher = more helpful): the prediction, or P(top decile) for a classifier."""
    if model in CLASSIFIERS:
        return pipeline.predict_proba(x)[:, list(pipeline[-1].classes_).index(True)]
    return pipeline.predict(x)


def chosen(pipeline, model: str) -> dict[str, float]:
    """The regularisation the fit's inner folds chose: {"C": ...} for a classifier, {"alpha": ...} otherwise."""
    head = pipeline[-1]
    return {"C": float(head.C_)} if model in CLASSIFIERS else {"alpha": float(head.alpha_)}
