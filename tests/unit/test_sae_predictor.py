"""The attribution predictors on synthetic features: planted signal, shuffled target, cross-fitting over
groups (a row's prediction never sees its own label, for every variant), the top-K, logistic, extra-layer
and last-token-probe variants, metadata."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from playpen_attribution.errors import UserError
from playpen_attribution.run.artifacts import RowFeatures
from playpen_attribution.sae.config import PredictConfig
from playpen_attribution.sae.features import STAT_NAMES, top_k_features
from playpen_attribution.sae.models import design, fit_model, top_decile_labels
from playpen_attribution.sae.predictor import (
    apply_predictor,
    fit_and_evaluate,
    grouped_folds,
    heldout_metrics,
    metadata_report,
    predictor_spec,
)

pytestmark = pytest.mark.integration  # fits cross-fitted predictors on synthetic features: over a minute in all

FILES = {"features": "sae/index.json", "scores": "attribute/scores.jsonl", "rows": "data/splits/train_base.jsonl"}
N, D_SAE, D_MODEL, TOP_K = 600, 48, 12, 24
VARIANTS = {"sae", "sae_topk", "sae_logistic", "length", "residual"}
FAST = {"cv_folds": 3, "alphas": [0.1, 10.0, 1000.0], "cs": [0.01, 1.0]}
"""Fewer inner folds and candidate strengths: the tests of the plumbing (folds, leaks, variants) fit faster."""
SPEC = {"release": "random", "sae_id": None, "hook_name": "blocks.0.hook_resid_post", "layer": 0,
        "d_sae": D_SAE, "pool": "all", "model": "base", "stat_names": list(STAT_NAMES), "top_k_features": TOP_K}


def _synthetic(seed: int = 0, metadata: bool = False):
    """Features of N rows in 60 groups, and rows carrying group_id (and SmolTalk metadata if asked)."""
    rng = np.random.default_rng(seed)
    means = rng.exponential(1.0, (N, D_SAE)) * (rng.random((N, D_SAE)) < 0.4)
    stats = rng.random((N, len(STAT_NAMES)))
    stats[:, 0] = rng.integers(10, 60, N)
    ids = [f"row{i:04d}" for i in range(N)]
    topk_ids, topk_values = top_k_features(means.astype(np.float32), TOP_K)
    features = RowFeatures(
        example_ids=ids, stats=stats.astype(np.float32), feature_mean=means.astype(np.float32),
        feature_presence=(means > 0).astype(np.float32), residual_mean=rng.normal(size=(N, D_MODEL)).astype(np.float32),
        pooled_tokens=stats[:, 0].astype(np.int64), residual_last=rng.normal(size=(N, D_MODEL)).astype(np.float32),
        topk_ids=topk_ids, topk_values=topk_values,
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
    return dict(zip(features.example_ids, target.tolist(), strict=True))


@functools.cache
def _planted_fit():
    """(features, rows, scores, fit): the planted signal fitted with the default config, once per session."""
    features, rows, rng = _synthetic()
    scores = _planted(features, rng)
    return features, rows, scores, fit_and_evaluate(features, rows, scores, PredictConfig(), FILES)


def test_planted_signal_is_recovered_well_above_length():
    _, _, _, fit = _planted_fit()
    models = fit.metrics["models"]
    assert models["sae"]["spearman"] > 0.7
    assert models["sae"]["spearman"] > abs(models["length"]["spearman"] or 0) + 0.5
    assert models["sae"]["top_k_overlap"] > 0.5 and models["sae"]["auroc"] > 0.85
    assert set(models) == VARIANTS
    assert models["sae_topk"]["spearman"] > 0.6  # the planted features are among most rows' top 24
    logistic = models["sae_logistic"]
    assert logistic["kind"] == "classifier" and logistic["auroc_top_decile"] > 0.85 and logistic["auroc"] > 0.8
    assert logistic["pearson"] is None and logistic["r2"] is None and logistic["spearman"] > 0.5
    assert "sae_logistic" in fit.metrics["null_metrics"] and logistic["C"] in PredictConfig().cs
    assert "skipped_models" not in fit.metrics
    assert len(logistic["fold_C"]) == 5 and len(models["sae"]["fold_alpha"]) == 5
    for name in VARIANTS - {"sae_logistic"}:
        assert models[name]["kind"] == "regressor" and models[name]["alpha"] in PredictConfig().alphas


def test_planted_signal_survives_a_sparse_random_projection():
    features, rows, rng = _synthetic()
    fit = fit_and_evaluate(features, rows, _planted(features, rng), PredictConfig(projection_dim=40, **FAST), FILES)
    assert fit.metrics["models"]["sae"]["spearman"] > 0.4


def test_shuffled_target_scores_near_zero():
    features, rows, rng = _synthetic(seed=1)
    scores = _planted(features, rng)
    shuffled = dict(zip(scores, rng.permutation(list(scores.values())).tolist(), strict=True))
    fit = fit_and_evaluate(features, rows, shuffled, PredictConfig(**FAST), FILES)
    assert abs(fit.metrics["models"]["sae"]["spearman"] or 0.0) < 0.2


def test_folds_never_share_a_group_and_unscored_rows_are_counted():
    features, rows, rng = _synthetic()
    scores = _planted(features, rng)
    scores["row0005"] = float("nan")
    fit = fit_and_evaluate(features, rows, scores, PredictConfig(folds=4, **FAST), FILES)
    fold_of_group: dict[str, int] = {}
    for eid, fold in fit.fold.items():
        if fold is not None:
            assert fold_of_group.setdefault(rows[eid]["group_id"], fold) == fold
    assert set(fold_of_group.values()) == {0, 1, 2, 3} and len(fold_of_group) == 60
    assert fit.fold["row0005"] is None and np.isfinite(fit.predicted["row0005"])  # the saved predictor's guess
    assert fit.metrics["rows_without_finite_score"] == 1 and sum(fit.metrics["rows_per_fold"]) == N - 1


def test_a_rows_prediction_does_not_move_when_its_own_label_changes():
    """For every model, the classifier too: its top-decile label is computed from the fit's rows alone, so
    moving a held-out row to the very top (which shifts the decile over all rows) changes nothing in its fold."""
    features, rows, rng = _synthetic()
    scores = _planted(features, rng)
    before = fit_and_evaluate(features, rows, scores, PredictConfig(**FAST), FILES)
    assert set(before.crossfitted) == VARIANTS
    for eid in ("row0010", "row0333"):
        changed = dict(scores) | {eid: max(scores.values()) * 10}  # from wherever it was to the very top
        after = fit_and_evaluate(features, rows, changed, PredictConfig(**FAST), FILES)
        assert after.fold[eid] == before.fold[eid]
        same_fold = [e for e, f in before.fold.items() if f == before.fold[eid]]
        for model in VARIANTS:
            assert all(after.crossfitted[model][e] == pytest.approx(before.crossfitted[model][e], abs=1e-12)
                       for e in same_fold), model


def test_top_decile_label_counts_only_the_rows_given():
    scores = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 0.0, 10.0, -1.0, 11.0, 12.0, 13.0, 14.0, 15.0,
                       16.0, 17.0, 18.0])
    assert np.flatnonzero(top_decile_labels(scores)).tolist() == [18, 19]  # the 2 highest of 20
    assert np.flatnonzero(top_decile_labels(scores[:10])).tolist() == [2]  # of these 10 alone: 9.0
    assert top_decile_labels(np.array([1.0, 2.0, 3.0])).tolist() == [False, False, True]  # at least one


def test_the_classifier_is_fitted_on_its_rows_top_decile():
    """A fit on the lower 70% of the rows learns that subset's own top decile (a label computed over every
    row would have no positive there, and the fit would fail)."""
    from sklearn.metrics import roc_auc_score

    features, rows, rng = _synthetic()
    scores = np.array(list(_planted(features, rng).values()))
    groups = np.array([rows[e]["group_id"] for e in features.example_ids])
    x = design(features, "sae_logistic")
    low = np.flatnonzero(scores < np.quantile(scores, 0.7))  # the top 30% left out of this fit
    pipe = fit_model(x[low], scores[low], groups[low], "sae_logistic", PredictConfig())
    proba = pipe.predict_proba(x[low])[:, 1]
    label = top_decile_labels(scores[low])
    assert label.sum() == round(0.1 * len(low)) and roc_auc_score(label, proba) > 0.75


def test_top_k_variant_reads_only_the_top_features():
    features, rows, rng = _synthetic()
    x = design(features, "sae_topk")
    assert x.shape == (N, len(STAT_NAMES) + D_SAE)
    dense = x[:, len(STAT_NAMES):]
    assert ((dense > 0).sum(1) <= TOP_K).all() and ((dense > 0).sum(1) == np.minimum((features.feature_mean > 0).sum(1), TOP_K)).all()
    kept = dense > 0
    np.testing.assert_allclose(dense[kept], features.feature_mean[kept])
    # every feature left out is no larger than the smallest one kept
    smallest = np.where(kept, dense, np.inf).min(1)
    assert (np.where(kept, -np.inf, features.feature_mean).max(1) <= smallest).all()
    old = RowFeatures(**{**features.__dict__, "topk_ids": None, "topk_values": None})  # a file from before top-K
    fit = fit_and_evaluate(old, rows, _planted(features, rng), PredictConfig(**FAST), FILES)
    assert "sae_topk" not in fit.metrics["models"] and "no top-K ids" in fit.metrics["skipped_models"]["sae_topk"]
    with pytest.raises(UserError, match=r"predict.model = 'sae_topk', but sae/index.json has features for sae, "
                                        r"sae_logistic only; rerun `sae`"):
        fit_and_evaluate(old, rows, _planted(features, rng), PredictConfig(model="sae_topk", **FAST), FILES)


def test_extra_layer_variant_reads_its_own_layer():
    features, rows, rng = _synthetic()
    other, _, _ = _synthetic(seed=5)  # another layer: other feature values for the same rows
    other.example_ids = features.example_ids
    scores = _planted(other, rng)  # the signal lives in that layer
    fit = fit_and_evaluate(features, rows, scores, PredictConfig(model="sae@3", **FAST), FILES, layers={3: other})
    models = fit.metrics["models"]
    assert set(models) == VARIANTS | {"sae@3"}
    assert models["sae@3"]["spearman"] > 0.7 and abs(models["sae"]["spearman"] or 0) < 0.3
    assert fit.predicted == fit.crossfitted["sae@3"] and fit.metrics["predicted_by"] == "sae@3"
    mismatched = RowFeatures(**{**other.__dict__, "example_ids": list(reversed(other.example_ids))})
    with pytest.raises(UserError, match="the features of layer 3 list other rows"):
        fit_and_evaluate(features, rows, scores, PredictConfig(**FAST), FILES, layers={3: mismatched})


def test_probe_pooling_chooses_the_residual_it_reads():
    features, rows, rng = _synthetic()
    signal = features.residual_last[:, 1] - features.residual_last[:, 4]
    scores = dict(zip(features.example_ids, (signal + 0.2 * rng.normal(size=N)).tolist(), strict=True))
    last = fit_and_evaluate(features, rows, scores, PredictConfig(probe_pooling="last_token", **FAST), FILES)
    mean = fit_and_evaluate(features, rows, scores, PredictConfig(**FAST), FILES)
    assert last.metrics["models"]["residual"]["spearman"] > 0.8
    assert abs(mean.metrics["models"]["residual"]["spearman"] or 0) < 0.2
    assert last.metrics["probe_pooling"] == "last_token"
    old = RowFeatures(**{**features.__dict__, "residual_last": None})
    with pytest.raises(UserError, match="probe_pooling = 'last_token' but these SAE features have no residual_last"):
        fit_and_evaluate(old, rows, scores, PredictConfig(probe_pooling="last_token"), FILES)


def test_the_logistic_variant_can_feed_predicted_and_the_saved_predictor():
    features, rows, rng = _synthetic()
    cfg = PredictConfig(model="sae_logistic", **FAST)
    fit = fit_and_evaluate(features, rows, _planted(features, rng), cfg, FILES)
    assert fit.predicted == fit.crossfitted["sae_logistic"]
    spec = predictor_spec(SPEC, cfg)
    assert spec["predictor"] == "sae_logistic" and "top_k_features" not in spec
    proba = apply_predictor({"pipeline": fit.pipeline, "spec": spec}, features, SPEC, "new")
    assert ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_allclose(proba, fit.pipeline.predict_proba(design(features, "sae"))[:, 1])


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
    fit = fit_and_evaluate(features, rows, _planted(features, rng), PredictConfig(**FAST), FILES)
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
        fit_and_evaluate(features, rows, scores, PredictConfig(**FAST), FILES)


def test_missing_group_column_is_named():
    features, rows, rng = _synthetic()
    with pytest.raises(UserError, match=r"train_base.jsonl: row 'row0000' has no column 'task' \(predict.group_key\)"):
        fit_and_evaluate(features, rows, _planted(features, rng), PredictConfig(group_key="task"), FILES)


def test_predictor_refuses_features_extracted_differently():
    features, rows, scores, fit = _planted_fit()
    spec = predictor_spec(SPEC, PredictConfig())
    bundle = {"pipeline": fit.pipeline, "spec": spec}
    assert apply_predictor(bundle, features, dict(SPEC), "new").shape == (N,)
    with pytest.raises(UserError, match=r"new: features were extracted differently.*layer: 0 vs 1"):
        apply_predictor(bundle, features, SPEC | {"layer": 1}, "new")
    assert apply_predictor(bundle, features, SPEC | {"top_k_features": 8}, "new").shape == (N,)  # sae ignores K
    topk = fit_and_evaluate(features, rows, scores, PredictConfig(model="sae_topk", **FAST), FILES)
    bundle = {"pipeline": topk.pipeline, "spec": predictor_spec(SPEC, PredictConfig(model="sae_topk"))}
    with pytest.raises(UserError, match=r"top_k_features: 24 vs 8"):
        apply_predictor(bundle, features, SPEC | {"top_k_features": 8}, "new")


def test_an_old_predictor_without_a_variant_name_is_the_sae_design():
    features, _, _, fit = _planted_fit()
    old_spec = {k: v for k, v in SPEC.items() if k != "top_k_features"} | {"target": "rank", "design": "stats + feature_mean"}
    got = apply_predictor({"pipeline": fit.pipeline, "spec": old_spec}, features, SPEC, "new")
    np.testing.assert_allclose(got, fit.pipeline.predict(design(features, "sae")))


def test_the_residual_probe_ranking_is_cross_fitted_too():
    features, rows, rng = _synthetic()
    scores = _planted(features, rng)
    residual_signal = features.residual_mean[:, 2] - features.residual_mean[:, 5]
    scores = {e: s + 50 * float(r) for (e, s), r in zip(scores.items(), residual_signal, strict=True)}
    before = fit_and_evaluate(features, rows, scores, PredictConfig(**FAST), FILES)
    assert set(before.probe) == set(features.example_ids) and before.probe == before.crossfitted["residual"]
    assert before.metrics["models"]["residual"]["spearman"] > 0.5  # it sees what the residual carries
    for eid in ("row0010",):
        after = fit_and_evaluate(features, rows, dict(scores) | {eid: max(scores.values()) * 10}, PredictConfig(**FAST),
                                 FILES)
        assert after.probe[eid] == pytest.approx(before.probe[eid], abs=1e-12)


def test_variant_fields_are_checked():
    from playpen_attribution.config import parse_config

    with pytest.raises(UserError, match=r"extra_layers = \[3\] needs release 'random'"):
        parse_config({"sae": {"release": "gemma-scope-2-1b-it-res", "sae_id": "layer_17", "extra_layers": [3]}}, "c.yaml")
    with pytest.raises(UserError, match=r"extra_layers = \[1, 1\]: expected distinct blocks >= 0 other than layer = 0"):
        parse_config({"sae": {"layer": 0, "extra_layers": [1, 1]}}, "c.yaml")
    with pytest.raises(UserError, match=r"probe_layers = \[2, -1, 2\]: expected distinct blocks >= 0"):
        parse_config({"sae": {"layer": 0, "probe_layers": [2, -1, 2]}}, "c.yaml")
    with pytest.raises(UserError, match=r"model = 'ridge': expected sae, sae_topk, sae_logistic or sae@<L>"):
        parse_config({"predict": {"model": "ridge"}}, "c.yaml")
    with pytest.raises(UserError, match=r"predict.model = 'sae@2' names layer 2, which is not in sae.extra_layers \(\[1\]\)"):
        parse_config({"sae": {"layer": 0, "extra_layers": [1]}, "predict": {"model": "sae@2"}}, "c.yaml")
    assert parse_config({"sae": {"layer": 0, "extra_layers": [1]}, "predict": {"model": "sae@1"}}).predict.model == "sae@1"


def test_the_report_table_lists_every_model_with_what_feeds_the_arms():
    from playpen_attribution.report.markdown_tables import predictor_lines

    _, _, _, fit = _planted_fit()
    lines = predictor_lines(fit.metrics | {"candidates_ranked": 30})
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| predictor")]
    assert [r.split(" | ")[0].removeprefix("| ") for r in rows] == [
        "sae (ranks sae_top_k)", "sae_topk", "sae_logistic", "length", "residual (mean pooling; ranks probe_top_k)"]
    logistic = next(r for r in rows if r.startswith("| sae_logistic"))
    assert logistic.split(" | ")[2:4] == ["n/a", "n/a"] and f"C = {fit.metrics['models']['sae_logistic']['C']:g}" in logistic
    assert any(line.startswith("sae_logistic: Pearson and R² are not computed") for line in lines)
    assert any(line.startswith("30 candidate rows (never scored by gradients) ranked by sae") for line in lines)


def test_extra_sae_ids_name_more_saes_of_a_release_or_more_folders():
    from playpen_attribution.config import parse_config
    from playpen_attribution.sae.config import SaeConfig

    hub = SaeConfig(release="gemma-scope-2-1b-it-res", sae_id="layer_17_width_16k_l0_small",
                    extra_sae_ids=["layer_12_width_16k_l0_small"])
    (extra,) = hub.extra_saes()
    assert (extra.release, extra.sae_id, extra.layer, extra.extra_sae_ids) == (
        "gemma-scope-2-1b-it-res", "layer_12_width_16k_l0_small", None, [])
    folder = SaeConfig(release="/saes/l17", extra_sae_ids=["/saes/l12"])
    assert [(e.release, e.sae_id) for e in folder.extra_saes()] == [("/saes/l12", None)]
    assert [e.layer for e in SaeConfig(layer=0, extra_layers=[1, 2]).extra_saes()] == [1, 2]
    assert SaeConfig(layer=0).model_dump()["extra_sae_ids"] == [] and hub.model_dump()["extra_sae_ids"]
    with pytest.raises(UserError, match=r"extra_sae_ids = \['x'\] with release 'random'"):
        parse_config({"sae": {"layer": 0, "extra_sae_ids": ["x"]}}, "c.yaml")
    with pytest.raises(UserError, match=r"expected distinct SAEs other than the main one"):
        parse_config({"sae": {"release": "r", "sae_id": "a", "extra_sae_ids": ["a"]}}, "c.yaml")
    # sae@<L> of an SAE named by id: its block is known only once loaded (the predict stage checks it)
    parse_config({"sae": {"release": "r", "sae_id": "a", "extra_sae_ids": ["b"]}, "predict": {"model": "sae@12"}}, "c.yaml")
