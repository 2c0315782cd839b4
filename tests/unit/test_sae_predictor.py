"""The attribution predictor on synthetic features: planted signal, shuffled target, cross-fitting over
groups (a row's prediction never sees its own label), metadata."""

from __future__ import annotations

import numpy as np
import pytest

from playpen_attribution.errors import UserError
from playpen_attribution.run.artifacts import RowFeatures
from playpen_attribution.sae.config import PredictConfig
from playpen_attribution.sae.features import STAT_NAMES
from playpen_attribution.sae.predictor import (
    apply_predictor,
    fit_and_evaluate,
    grouped_folds,
    heldout_metrics,
    metadata_report,
)

FILES = {"features": "sae/index.json", "scores": "attribute/scores.jsonl", "rows": "data/splits/train_base.jsonl"}
N, D_SAE, D_MODEL = 600, 48, 12


def _synthetic(seed: int = 0, metadata: bool = False):
    """Features of N rows in 60 groups, and rows carrying group_id (and SmolTalk metadata if asked)."""
    rng = np.random.default_rng(seed)
    means = rng.exponential(1.0, (N, D_SAE)) * (rng.random((N, D_SAE)) < 0.4)
    stats = rng.random((N, len(STAT_NAMES)))
    stats[:, 0] = rng.integers(10, 60, N)
    ids = [f"row{i:04d}" for i in range(N)]
    features = RowFeatures(
        example_ids=ids, stats=stats.astype(np.float32), feature_mean=means.astype(np.float32),
        feature_presence=(means > 0).astype(np.float32), residual_mean=rng.normal(size=(N, D_MODEL)).astype(np.float32),
        pooled_tokens=stats[:, 0].astype(np.int64),
    )
    rows = {}
    for i, eid in enumerate(ids):
        rows[eid] = {"example_id": eid, "group_id": f"g{i % 60}"}
        if metadata:
            rows[eid] |= {"reward_model_score": float(rng.normal()), "quality": ["poor", "good", "excellent"][i % 3],
                          "difficulty": ["easy", "hard"][i % 2], "category": ["math", "coding", "advice", "editing"][i % 4]}
    return features, rows, rng


def _planted(features: RowFeatures, rng) -> dict[str, float]:
    m = features.feature_mean
    signal = m[:, 3] + 2 * m[:, 7] - m[:, 11]
    target = signal + 0.3 * signal.std() * rng.normal(size=len(signal))
    return dict(zip(features.example_ids, target.tolist()))


def test_planted_signal_is_recovered_well_above_length():
    features, rows, rng = _synthetic()
    fit = fit_and_evaluate(features, rows, _planted(features, rng), PredictConfig(), FILES)
    models = fit.metrics["models"]
    assert models["sae"]["spearman"] > 0.7
    assert models["sae"]["spearman"] > abs(models["length"]["spearman"] or 0) + 0.5
    assert models["sae"]["top_k_overlap"] > 0.5 and models["sae"]["auroc"] > 0.85
    assert set(models) == {"sae", "length", "residual"}


def test_planted_signal_survives_a_sparse_random_projection():
    features, rows, rng = _synthetic()
    fit = fit_and_evaluate(features, rows, _planted(features, rng), PredictConfig(projection_dim=40), FILES)
    assert fit.metrics["models"]["sae"]["spearman"] > 0.4


def test_shuffled_target_scores_near_zero():
    features, rows, rng = _synthetic(seed=1)
    scores = _planted(features, rng)
    shuffled = dict(zip(scores, rng.permutation(list(scores.values())).tolist()))
    fit = fit_and_evaluate(features, rows, shuffled, PredictConfig(), FILES)
    assert abs(fit.metrics["models"]["sae"]["spearman"] or 0.0) < 0.2


def test_folds_never_share_a_group_and_unscored_rows_are_counted():
    features, rows, rng = _synthetic()
    scores = _planted(features, rng)
    scores["row0005"] = float("nan")
    fit = fit_and_evaluate(features, rows, scores, PredictConfig(folds=4), FILES)
    fold_of_group: dict[str, int] = {}
    for eid, fold in fit.fold.items():
        if fold is not None:
            assert fold_of_group.setdefault(rows[eid]["group_id"], fold) == fold
    assert set(fold_of_group.values()) == {0, 1, 2, 3} and len(fold_of_group) == 60
    assert fit.fold["row0005"] is None and np.isfinite(fit.predicted["row0005"])  # the saved predictor's guess
    assert fit.metrics["rows_without_finite_score"] == 1 and sum(fit.metrics["rows_per_fold"]) == N - 1


def test_a_rows_prediction_does_not_move_when_its_own_label_changes():
    features, rows, rng = _synthetic()
    scores = _planted(features, rng)
    before = fit_and_evaluate(features, rows, scores, PredictConfig(), FILES)
    for eid in ("row0010", "row0333"):
        changed = dict(scores) | {eid: max(scores.values()) * 10}  # from wherever it was to the very top
        after = fit_and_evaluate(features, rows, changed, PredictConfig(), FILES)
        assert after.predicted[eid] == pytest.approx(before.predicted[eid], abs=1e-12)
        assert after.fold[eid] == before.fold[eid]
        same_fold = [e for e, f in before.fold.items() if f == before.fold[eid]]
        assert all(after.predicted[e] == pytest.approx(before.predicted[e], abs=1e-12) for e in same_fold)


def test_grouped_folds_keep_groups_whole():
    groups = np.array([f"g{i % 7}" for i in range(50)])
    fold = grouped_folds(groups, 3)
    for g in set(groups):
        assert len(set(fold[groups == g])) == 1
    assert set(fold) == {0, 1, 2}
    with pytest.raises(UserError, match="predict.folds = 5 but the scored rows have only 1 group"):
        grouped_folds(np.array(["a"] * 5), 5)


def test_heldout_metrics_of_a_perfect_and_a_reversed_prediction():
    y = np.arange(20, dtype=float)
    perfect = heldout_metrics(y, y, 0.2)
    assert perfect["spearman"] == pytest.approx(1) and perfect["top_k_overlap"] == 1 and perfect["auroc"] == 1
    assert perfect["top_k"] == 4 and perfect["r2"] == pytest.approx(1)
    reversed_ = heldout_metrics(y, -y, 0.2)
    assert reversed_["spearman"] == pytest.approx(-1) and reversed_["top_k_overlap"] == 0 and reversed_["auroc"] == 0


def test_smoltalk_metadata_is_related_to_both_rankings():
    features, rows, rng = _synthetic(metadata=True)
    fit = fit_and_evaluate(features, rows, _planted(features, rng), PredictConfig(), FILES)
    meta = fit.metrics["metadata"]
    assert set(meta) == {"reward_model_score", "quality", "difficulty", "category"}
    assert meta["reward_model_score"]["rows"] == fit.metrics["scored_rows"]
    assert -1 <= meta["reward_model_score"]["spearman_predicted_rank"] <= 1
    assert set(meta["quality"]) == {"poor", "good", "excellent"}
    assert sum(level["rows"] for level in meta["category"].values()) == fit.metrics["scored_rows"]
    for level in meta["difficulty"].values():
        assert 0 < level["mean_true_rank"] <= 1 and 0 < level["mean_predicted_rank"] <= 1


def test_metadata_ranks_follow_a_planted_relation():
    rows = [{"reward_model_score": float(i), "quality": "good" if i >= 10 else "poor"} for i in range(20)]
    y = np.arange(20, dtype=float)
    meta = metadata_report(rows, y, y)
    assert meta["reward_model_score"]["spearman_true_rank"] == pytest.approx(1)
    assert meta["quality"]["good"]["mean_predicted_rank"] > meta["quality"]["poor"]["mean_predicted_rank"]
    assert metadata_report([{} for _ in range(20)], y, y) == {}


def test_feature_ids_that_differ_from_the_scores_are_named():
    features, rows, rng = _synthetic()
    scores = _planted(features, rng)
    scores.pop("row0001")
    scores["someone_else"] = 0.5
    with pytest.raises(UserError, match=r"sae/index.json and attribute/scores.jsonl do not hold the same example_ids"):
        fit_and_evaluate(features, rows, scores, PredictConfig(), FILES)


def test_missing_group_column_is_named():
    features, rows, rng = _synthetic()
    with pytest.raises(UserError, match=r"train_base.jsonl: row 'row0000' has no column 'task' \(predict.group_key\)"):
        fit_and_evaluate(features, rows, _planted(features, rng), PredictConfig(group_key="task"), FILES)


def test_predictor_refuses_features_extracted_differently():
    features, rows, rng = _synthetic()
    fit = fit_and_evaluate(features, rows, _planted(features, rng), PredictConfig(), FILES)
    spec = {"release": "random", "sae_id": None, "hook_name": "blocks.0.hook_resid_post", "layer": 0,
            "d_sae": D_SAE, "pool": "all", "model": "base", "stat_names": list(STAT_NAMES)}
    bundle = {"pipeline": fit.pipeline, "spec": spec}
    assert apply_predictor(bundle, features, dict(spec), "new").shape == (N,)
    with pytest.raises(UserError, match=r"new: features were extracted differently.*layer: 0 vs 1"):
        apply_predictor(bundle, features, spec | {"layer": 1}, "new")


def test_the_residual_probe_ranking_is_cross_fitted_too():
    features, rows, rng = _synthetic()
    scores = _planted(features, rng)
    residual_signal = features.residual_mean[:, 2] - features.residual_mean[:, 5]
    scores = {e: s + 50 * float(r) for (e, s), r in zip(scores.items(), residual_signal)}
    before = fit_and_evaluate(features, rows, scores, PredictConfig(), FILES)
    assert set(before.probe) == set(features.example_ids)
    assert before.metrics["models"]["residual"]["spearman"] > 0.5  # it sees what the residual carries
    for eid in ("row0010", "row0333"):
        after = fit_and_evaluate(features, rows, dict(scores) | {eid: max(scores.values()) * 10}, PredictConfig(), FILES)
        assert after.probe[eid] == pytest.approx(before.probe[eid], abs=1e-12)
