"""Integration: the sae and predict stages (and ranking a new file) on the small demo run, through the CLI:
with a candidates split and an extra layer, the candidates ranked by the final fits exactly as `rank` ranks
the same rows file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import rerecord

from playpen_attribution.cli import main
from playpen_attribution.core.jsonl import read_jsonl, write_jsonl
from playpen_attribution.core.modeling import load_tokenizer
from playpen_attribution.core.tokenization import TokenizeConfig, tokenize_rows
from playpen_attribution.core.yaml_config import dump
from playpen_attribution.errors import UserError
from playpen_attribution.run import artifacts
from playpen_attribution.sae.config import PredictConfig, SaeConfig
from playpen_attribution.sae.features import STAT_NAMES
from playpen_attribution.stages import predict, rank

UPSTREAM = (artifacts.DATA, artifacts.BASE_MODEL, artifacts.TRAIN_BASE, artifacts.ATTRIBUTE)
D_SAE, TOP_K, N_CANDIDATES = 64, 16, 30
FEATURE_FILES = {"features.npz", "index.json"}


def _linked_run(src, dst, names=UPSTREAM):
    """A fresh run folder whose upstream stage folders are links to the demo run's (never written to)."""
    dst.mkdir(parents=True)
    for name in names:
        (dst / name).symlink_to(src / name, target_is_directory=True)
    return dst


def _with_candidates(src, dst):
    """A copy of the demo run's data/ with a candidates split: pool and eval rows under new example_ids (rows
    never scored by gradients), recorded in its manifest as if the data stage had written it."""
    shutil.copytree(src / artifacts.DATA, dst / artifacts.DATA)
    pool = artifacts.load_split(dst / artifacts.DATA, "train_base")[:20]
    held = artifacts.load_split(dst / artifacts.DATA, "eval")[: N_CANDIDATES - 20]
    artifacts.write_split(dst / artifacts.DATA, "candidates", [r | {"example_id": "cand_" + r["example_id"]}
                                                                for r in pool + held])
    rerecord(dst / artifacts.DATA)


@pytest.fixture(scope="module")
def sae_run(demo_run, tmp_path_factory):
    """(cfg, run_dir, config_path) after `sae` (main layer 0, extra layer 1, a candidates split) and `predict`
    ran through the CLI on the demo run's folders."""
    cfg, src = demo_run
    tmp = tmp_path_factory.mktemp("sae_stage")
    run_dir = _linked_run(src, tmp / "run", UPSTREAM[1:])
    _with_candidates(src, run_dir)
    cfg = cfg.model_copy(update={
        "sae": SaeConfig(layer=0, d_sae=D_SAE, model="base_adapter", batch_size=32, extra_layers=[1], top_k_features=TOP_K,
                         probe_layers=[0, 1]),
        "predict": PredictConfig(group_key="target_word", folds=5, cv_folds=3),
    })
    config = tmp / "config.yaml"
    config.write_text(dump(cfg))
    assert main(["sae", "--config", str(config), "--run-dir", str(run_dir)]) == 0
    assert main(["predict", "--config", str(config), "--run-dir", str(run_dir)]) == 0
    return cfg, run_dir, config


def _files(folder):
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_stages_write_exactly_their_files(sae_run):
    _, run_dir, _ = sae_run
    common = {artifacts.CONFIG_FILE, artifacts.MANIFEST_FILE}
    every_layer = FEATURE_FILES | {f"layer_1/{f}" for f in FEATURE_FILES}
    assert _files(run_dir / "sae") == common | every_layer | {f"candidates/{f}" for f in every_layer} | {
        "probe_residuals.npz", "candidates/probe_residuals.npz"}
    assert _files(run_dir / "predict") == common | {"predictor.joblib", "metrics.json", "predicted_scores.jsonl",
                                                    "candidate_scores.jsonl", "probe_study.json", "probe_study.png"}
    for stage in ("sae", "predict"):
        assert set(artifacts.load_manifest(run_dir / stage).fields["produced"]) == _files(run_dir / stage) - {"manifest.json"}


def test_features_are_keyed_by_example_id_with_the_expected_shapes(sae_run):
    cfg, run_dir, _ = sae_run
    pool = artifacts.load_split(run_dir / "data", "train_base")
    features, index = artifacts.load_features(run_dir / "sae")
    n = len(pool)
    assert index["example_ids"] == features.example_ids == [r["example_id"] for r in pool]
    assert features.stats.shape == (n, len(STAT_NAMES)) and index["stat_names"] == list(STAT_NAMES)
    assert features.feature_mean.shape == features.feature_presence.shape == (n, D_SAE)
    assert features.residual_mean.shape == (n, cfg.model.tiny.hidden_size)
    tokenizer = load_tokenizer(str(run_dir / "base_model" / "model"))
    lengths = [len(ids) for ids in tokenize_rows(tokenizer, pool, TokenizeConfig(max_length=cfg.tokenize.max_length))["input_ids"]]
    np.testing.assert_array_equal(features.stats[:, 0], lengths)
    assert ((features.feature_presence >= 0) & (features.feature_presence <= 1)).all()
    manifest = artifacts.load_manifest(run_dir / "sae").fields
    recorded = manifest["sae"]
    assert (recorded["release"], recorded["hook_name"], recorded["layer"], recorded["d_sae"]) == (
        "random", "blocks.0.hook_resid_post", 0, D_SAE)
    assert manifest["extra_layers"] == {"1": "blocks.1.hook_resid_post"}
    assert manifest["candidates"] == {"rows": N_CANDIDATES, "empty_pooled_rows": 0}
    assert features.topk_ids.shape == features.topk_values.shape == (n, TOP_K) and index["top_k_features"] == TOP_K
    assert features.residual_last.shape == (n, cfg.model.tiny.hidden_size) and index["extra_layers"] == [1]
    layer1, index1 = artifacts.load_features(run_dir / "sae" / "layer_1")
    assert layer1.example_ids == features.example_ids and (index1["layer"], index1["split"]) == (1, "train_base")
    assert not np.allclose(layer1.residual_mean, features.residual_mean)


def test_probe_residuals_come_from_the_same_pass_in_three_poolings(sae_run):
    """sae/probe_residuals.npz: per probe layer and pooling, rows x d_model in the features' row order; the mean
    and last-token poolings equal the features' own (the same residual, the same pooled tokens)."""
    _, run_dir, _ = sae_run
    features, index = artifacts.load_features(run_dir / "sae")
    layer1, _ = artifacts.load_features(run_dir / "sae" / "layer_1")
    assert index["probe_layers"] == [0, 1] and artifacts.load_manifest(run_dir / "sae").fields["probe_layers"] == [0, 1]
    with np.load(run_dir / "sae" / "probe_residuals.npz") as npz:
        assert sorted(npz.files) == sorted(["example_ids"] + [f"layer_{layer}_{pooling}" for layer in (0, 1)
                                                               for pooling in ("last_token", "mean", "first_response_token")])
        assert npz["example_ids"].tolist() == features.example_ids
        for layer, own in ((0, features), (1, layer1)):
            np.testing.assert_allclose(npz[f"layer_{layer}_mean"], own.residual_mean, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(npz[f"layer_{layer}_last_token"], own.residual_last, rtol=1e-5, atol=1e-6)
            first = npz[f"layer_{layer}_first_response_token"]
            assert first.shape == own.residual_mean.shape and not np.allclose(first, own.residual_last)


def test_the_probe_study_table_covers_every_layer_and_pooling_raw_and_residualised(sae_run):
    _, run_dir, _ = sae_run
    study = artifacts.load_probe_study(run_dir / "predict")
    metrics = json.loads((run_dir / "predict" / "metrics.json").read_text())
    assert (study["layers"], study["rows_fitted"], study["folds"]) == ([0, 1], metrics["scored_rows"], 5)
    keys = {(r["layer"], r["pooling"], r["length_residualised"]) for r in study["rows"]}
    assert keys == {(layer, pooling, resid) for layer in (0, 1) for pooling in ("last_token", "mean", "first_response_token")
                    for resid in (False, True)} | {(0, "sae", False), (0, "sae", True), (None, "length", False)}
    for row in study["rows"]:
        assert all(-1 <= row[m] <= 1 for m in ("spearman", "partial_spearman")) and row["r2"] <= 1
    length_only = next(r for r in study["rows"] if r["pooling"] == "length")
    assert length_only["spearman"] == pytest.approx(metrics["models"]["length"]["spearman"], abs=0.15)
    assert artifacts.load_manifest(run_dir / "predict").fields["probe_study"] == {"layers": [0, 1],
                                                                                   "rows_fitted": metrics["scored_rows"]}


def test_named_probes_rank_the_pool_cross_fitted_and_the_candidates(sae_run):
    """One named probe per sae.probe_layers block (residual@<L>, column probe@<L>): on the SAE's own block 0 it
    is the `probe` (the same residual, pooling and folds); block 1's differs. The candidates get both too."""
    _, run_dir, _ = sae_run
    predicted = read_jsonl(run_dir / "predict" / "predicted_scores.jsonl")
    assert list(predicted[0]) == ["example_id", "predicted", "probe", "probe@0", "probe@1", "fold"]
    np.testing.assert_allclose([r["probe@0"] for r in predicted], [r["probe"] for r in predicted], rtol=1e-6, atol=1e-9)
    assert not np.allclose([r["probe@1"] for r in predicted], [r["probe"] for r in predicted])
    ranked = read_jsonl(run_dir / "predict" / "candidate_scores.jsonl")
    assert len(ranked) == N_CANDIDATES and {"probe@0", "probe@1"} <= set(ranked[0])
    np.testing.assert_allclose([r["probe@0"] for r in ranked], [r["probe"] for r in ranked], rtol=1e-6, atol=1e-9)
    with np.load(run_dir / "sae" / "candidates" / "probe_residuals.npz") as npz:
        cand, _ = artifacts.load_features(run_dir / "sae" / "candidates")
        assert npz["example_ids"].tolist() == cand.example_ids
        np.testing.assert_allclose(npz["layer_0_mean"], cand.residual_mean, rtol=1e-5, atol=1e-6)
    assert artifacts.load_manifest(run_dir / "predict").fields["named_probes"] == ["probe@0", "probe@1"]


def test_candidates_get_features_in_their_own_folder(sae_run):
    _, run_dir, _ = sae_run
    candidates = artifacts.load_split(run_dir / "data", "candidates")
    pool, _ = artifacts.load_features(run_dir / "sae")
    for sub in ("candidates", "candidates/layer_1"):
        features, index = artifacts.load_features(run_dir / "sae" / sub)
        assert features.example_ids == [r["example_id"] for r in candidates] and index["split"] == "candidates"
        assert index["layer"] == (1 if sub.endswith("layer_1") else 0)
    features, _ = artifacts.load_features(run_dir / "sae" / "candidates")
    row = pool.example_ids.index(candidates[0]["example_id"].removeprefix("cand_"))  # the same tokens as a pool row
    np.testing.assert_allclose(features.feature_mean[0], pool.feature_mean[row], rtol=1e-5, atol=1e-6)


def test_predictions_are_cross_fitted_and_no_group_spans_two_folds(sae_run):
    _, run_dir, _ = sae_run
    group = {r["example_id"]: r["target_word"] for r in artifacts.load_split(run_dir / "data", "train_base")}
    fold_of: dict[str, int] = {}
    predicted = read_jsonl(run_dir / "predict" / "predicted_scores.jsonl")
    assert {p["fold"] for p in predicted} == {0, 1, 2, 3, 4}  # every row predicted by a model that never saw it
    for row in predicted:
        assert fold_of.setdefault(group[row["example_id"]], row["fold"]) == row["fold"]
    metrics = json.loads((run_dir / "predict" / "metrics.json").read_text())
    assert metrics["cross_fitted"] and metrics["groups"] == len(fold_of) > 5
    assert sum(metrics["rows_per_fold"]) == metrics["scored_rows"] == len(predicted)


def test_metrics_hold_the_predictor_and_both_baselines(sae_run):
    _, run_dir, _ = sae_run
    metrics = json.loads((run_dir / "predict" / "metrics.json").read_text())
    assert list(metrics["models"]) == ["sae", "sae_topk", "sae_logistic", "sae@1", "length", "residual",
                                       "residual@0", "residual@1"]
    for name, model in metrics["models"].items():
        regularisation = "C" if name == "sae_logistic" else "alpha"
        assert {"spearman", "pearson", "r2", "top_k", "top_k_overlap", "auroc", "auroc_top_decile",
                regularisation, f"fold_{regularisation}"} <= set(model)
        assert model["top_k"] == round(0.2 * metrics["scored_rows"])
        assert model["auroc"] is not None and model["auroc_top_decile"] is not None
    assert metrics["models"]["sae_logistic"]["pearson"] is None and "sae_logistic" in metrics["null_metrics"]
    assert (metrics["predicted_by"], metrics["probe_pooling"]) == ("sae", "mean")
    manifest = artifacts.load_manifest(run_dir / "predict").fields
    assert manifest["candidates_ranked"] == N_CANDIDATES and manifest["probe"]["alpha"] == metrics["models"]["residual"]["alpha"]
    assert "metadata" not in metrics  # the demo rows carry no SmolTalk metadata


def test_the_saved_predictor_is_fitted_on_every_row_and_differs_from_the_out_of_fold_one(sae_run):
    _, run_dir, _ = sae_run
    in_sample = rank.rank_new_rows(run_dir / "predict", run_dir / "sae")
    saved = {r["example_id"]: r["predicted"] for r in read_jsonl(run_dir / "predict" / "predicted_scores.jsonl")}
    assert in_sample.keys() == saved.keys()
    assert max(abs(in_sample[e] - saved[e]) for e in saved) > 1e-6  # the arm never ranks on in-sample predictions


def test_new_rows_are_ranked_without_gradients(sae_run, tmp_path, monkeypatch):
    import torch

    _, run_dir, config = sae_run
    pool = artifacts.load_split(run_dir / "data", "train_base")[:12]
    rows_file = tmp_path / "fresh.jsonl"
    write_jsonl(rows_file, [r | {"example_id": "new_" + r["example_id"]} for r in pool])
    in_sample = rank.rank_new_rows(run_dir / "predict", run_dir / "sae")

    def no_backward(*args, **kwargs):
        raise AssertionError("ranking new rows must not compute gradients")

    monkeypatch.setattr(torch.autograd, "backward", no_backward)
    assert main(["rank", "--config", str(config), "--run-dir", str(run_dir), "--rows", str(rows_file)]) == 0
    folder = run_dir / "rank_fresh"
    assert _files(folder) == {"config.yaml", "manifest.json", "features.npz", "index.json", "ranked.jsonl"}
    ranked = read_jsonl(folder / "ranked.jsonl")
    assert [r["rank"] for r in ranked] == list(range(1, 13))
    assert [r["predicted"] for r in ranked] == sorted((r["predicted"] for r in ranked), reverse=True)
    for row in ranked:  # the same tokens give the same prediction as the saved predictor's on the pool
        assert row["predicted"] == pytest.approx(in_sample[row["example_id"].removeprefix("new_")], rel=1e-4, abs=1e-6)


def test_candidates_are_ranked_by_the_final_fits_as_rank_ranks_them(sae_run):
    """candidate_scores.jsonl holds exactly the candidates, `predicted` as `rank` gives for the same rows file
    (same model, SAE and saved predictor); candidates with a pool row's tokens get that row's in-sample
    prediction and probe (the final fits, never a cross-fitted one)."""
    _, run_dir, config = sae_run
    scores = read_jsonl(run_dir / "predict" / "candidate_scores.jsonl")
    candidates = artifacts.load_split(run_dir / "data", "candidates")
    assert [r["example_id"] for r in scores] == [r["example_id"] for r in candidates]
    assert all(set(r) == {"example_id", "predicted", "probe", "probe@0", "probe@1"} for r in scores)  # + named probes
    assert artifacts.load_candidate_ranking(run_dir, "sae") == {r["example_id"]: r["predicted"] for r in scores}
    rows_file = artifacts.split_path(run_dir / "data", "candidates")
    assert main(["rank", "--config", str(config), "--run-dir", str(run_dir), "--rows", str(rows_file)]) == 0
    ranked = {r["example_id"]: r["predicted"] for r in read_jsonl(run_dir / "rank_candidates" / "ranked.jsonl")}
    assert ranked.keys() == {r["example_id"] for r in scores}
    for row in scores:
        assert row["predicted"] == pytest.approx(ranked[row["example_id"]], rel=1e-6, abs=1e-9)
    in_sample = rank.rank_new_rows(run_dir / "predict", run_dir / "sae")
    for row in scores[:20]:  # the ones copied from the pool
        assert row["predicted"] == pytest.approx(in_sample[row["example_id"].removeprefix("cand_")], rel=1e-4, abs=1e-6)
    probe = {r["example_id"]: r["probe"] for r in read_jsonl(run_dir / "predict" / "predicted_scores.jsonl")}
    assert max(abs(r["probe"] - probe[r["example_id"].removeprefix("cand_")]) for r in scores[:20]) > 1e-6


def test_an_extra_layer_predictor_ranks_candidates_and_new_rows_from_its_layer(sae_run, tmp_path):
    """predict.model: sae@1 feeds `predicted` and the saved predictor; `rank` then extracts block 1 alone
    (the random SAE `layer: 1` builds), which gives the candidates the scores the two-layer pass gave them."""
    cfg, src, _ = sae_run
    run_dir = _linked_run(src, tmp_path / "run", UPSTREAM[1:] + (artifacts.DATA, artifacts.SAE))
    cfg = cfg.model_copy(update={"predict": cfg.predict.model_copy(update={"model": "sae@1"})})
    config = tmp_path / "config.yaml"
    config.write_text(dump(cfg))
    assert main(["predict", "--config", str(config), "--run-dir", str(run_dir)]) == 0
    bundle = artifacts.load_predictor(run_dir / "predict")
    assert (bundle["spec"]["predictor"], bundle["spec"]["layer"], bundle["spec"]["hook_name"]) == (
        "sae@1", 1, "blocks.1.hook_resid_post")
    metrics = artifacts.load_predictor_metrics(run_dir / "predict")
    predicted = read_jsonl(run_dir / "predict" / "predicted_scores.jsonl")
    assert metrics["predicted_by"] == "sae@1"
    before = read_jsonl(src / "predict" / "predicted_scores.jsonl")
    assert [r["probe"] for r in predicted] == [r["probe"] for r in before]  # the same probe on the same folds
    assert max(abs(a["predicted"] - b["predicted"]) for a, b in zip(predicted, before, strict=True)) > 1e-6
    rows_file = artifacts.split_path(run_dir / "data", "candidates")
    assert main(["rank", "--config", str(config), "--run-dir", str(run_dir), "--rows", str(rows_file)]) == 0
    ranked = {r["example_id"]: r["predicted"] for r in read_jsonl(run_dir / "rank_candidates" / "ranked.jsonl")}
    for row in read_jsonl(run_dir / "predict" / "candidate_scores.jsonl"):
        assert row["predicted"] == pytest.approx(ranked[row["example_id"]], rel=1e-6, abs=1e-9)
    assert artifacts.load_features(run_dir / "rank_candidates")[1]["layer"] == 1


def test_a_candidate_that_is_a_pool_row_is_refused(sae_run, demo_run, tmp_path):
    cfg, src, _ = sae_run
    run_dir = _linked_run(src, tmp_path / "run", UPSTREAM[1:])
    shutil.copytree(src / "data", run_dir / "data")
    shutil.copytree(src / "sae", run_dir / "sae")
    index = json.loads((run_dir / "sae" / "candidates" / "index.json").read_text())
    pool_id = index["example_ids"][0].removeprefix("cand_")
    index["example_ids"][0] = pool_id
    (run_dir / "sae" / "candidates" / "index.json").write_text(json.dumps(index))
    rerecord(run_dir / "sae")
    with pytest.raises(UserError, match=rf"candidates: 1 candidate\(s\) are also scored pool rows \(e.g. \['{pool_id}'\]\)"):
        predict.run(cfg, run_dir)


def test_a_candidates_split_without_candidate_features_is_named(sae_run, demo_run, tmp_path):
    cfg, src, _ = sae_run
    run_dir = _linked_run(src, tmp_path / "run", UPSTREAM[1:] + (artifacts.DATA,))
    shutil.copytree(src / "sae", run_dir / "sae")
    shutil.rmtree(run_dir / "sae" / "candidates")
    rerecord(run_dir / "sae")
    with pytest.raises(UserError, match=r"candidates.jsonl: data/ has a candidates split but .*sae holds no "
                                        r"candidates' features"):
        predict.run(cfg, run_dir)


def test_feature_file_whose_ids_do_not_match_the_scores_is_named(sae_run, demo_run, tmp_path):
    cfg, run_dir, _ = sae_run
    other = _linked_run(demo_run[1], tmp_path / "run", (artifacts.DATA, artifacts.ATTRIBUTE))
    shutil.copytree(run_dir / "sae", other / "sae")
    index = json.loads((other / "sae" / "index.json").read_text())
    index["example_ids"][3] = "not_in_the_pool"
    (other / "sae" / "index.json").write_text(json.dumps(index))
    # a features file edited after its stage finished is refused by the input check (its hash), before
    # the join could find the ids that no longer match the scores
    with pytest.raises(UserError, match=r"input 'sae' no longer matches its manifest: index.json \(changed\)"):
        predict.run(cfg, other)


def test_stages_without_their_config_section_are_named(demo_run, tmp_path):
    from playpen_attribution.stages import sae

    cfg, _src = demo_run
    with pytest.raises(UserError, match="no 'sae' section"):
        sae.run(cfg, tmp_path)
    with pytest.raises(UserError, match="no 'predict' section"):
        predict.run(cfg, tmp_path)


def _saved_sae(folder, d_in: int, layer: int, seed: int) -> str:
    """A SAELens folder (`save_model`) holding a JumpReLU SAE of block `layer`, as a trained one is shipped."""
    import torch
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    meta = SAEMetadata(hook_name=f"blocks.{layer}.hook_resid_post")
    JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=D_SAE, metadata=meta)).save_model(folder)
    return str(folder)


def test_saelens_saes_of_other_blocks_from_extra_sae_ids(sae_run, demo_run, tmp_path):
    """sae.extra_sae_ids: SAELens SAEs (here folders; on the hub, more ids of the release) of other blocks are
    encoded in the same pass; each layer's index names its own SAE, predict.model sae@<L> fits on it, and
    `rank` extracts that SAE alone and gives the candidates the scores predict gave them."""
    cfg, src, _ = sae_run
    width = demo_run[0].model.tiny.hidden_size
    main_sae, extra_sae = _saved_sae(tmp_path / "sae0", width, 0, 1), _saved_sae(tmp_path / "sae1", width, 1, 2)
    run_dir = _linked_run(src, tmp_path / "run", UPSTREAM[1:] + (artifacts.DATA,))
    cfg = cfg.model_copy(update={
        "sae": SaeConfig(release=main_sae, extra_sae_ids=[extra_sae], model="base_adapter", batch_size=32,
                         top_k_features=TOP_K),
        "predict": cfg.predict.model_copy(update={"model": "sae@1"})})
    config = tmp_path / "config.yaml"
    config.write_text(dump(cfg))
    assert main(["sae", "--config", str(config), "--run-dir", str(run_dir)]) == 0
    assert artifacts.load_manifest(run_dir / "sae").fields["extra_layers"] == {"1": "blocks.1.hook_resid_post"}
    for folder, (release, layer) in {"sae": (main_sae, 0), "sae/layer_1": (extra_sae, 1),
                                     "sae/candidates/layer_1": (extra_sae, 1)}.items():
        index = artifacts.load_features(run_dir / folder)[1]
        assert (index["release"], index["sae_id"], index["layer"]) == (release, None, layer), folder
    assert main(["predict", "--config", str(config), "--run-dir", str(run_dir)]) == 0
    assert artifacts.load_predictor(run_dir / "predict")["spec"]["release"] == extra_sae
    assert "sae@1" in artifacts.load_predictor_metrics(run_dir / "predict")["models"]
    rows_file = artifacts.split_path(run_dir / "data", "candidates")
    assert main(["rank", "--config", str(config), "--run-dir", str(run_dir), "--rows", str(rows_file)]) == 0
    ranked = {r["example_id"]: r["predicted"] for r in read_jsonl(run_dir / "rank_candidates" / "ranked.jsonl")}
    for row in read_jsonl(run_dir / "predict" / "candidate_scores.jsonl"):
        assert row["predicted"] == pytest.approx(ranked[row["example_id"]], rel=1e-6, abs=1e-9)
    assert artifacts.load_features(run_dir / "rank_candidates")[1]["release"] == extra_sae


def test_two_saes_on_one_block_and_a_missing_predictor_layer_are_named(sae_run, demo_run, tmp_path, caplog):
    cfg, src, _ = sae_run
    width = demo_run[0].model.tiny.hidden_size
    first, second = _saved_sae(tmp_path / "a", width, 0, 1), _saved_sae(tmp_path / "b", width, 0, 2)
    run_dir = _linked_run(src, tmp_path / "run", UPSTREAM[1:] + (artifacts.DATA,))
    config = tmp_path / "config.yaml"
    config.write_text(dump(cfg.model_copy(update={"sae": SaeConfig(release=first, extra_sae_ids=[second])})))
    assert main(["sae", "--config", str(config), "--run-dir", str(run_dir)]) == 2
    assert "sae: two SAEs read block 0" in caplog.text
    one = cfg.model_copy(update={"sae": SaeConfig(release=first, extra_sae_ids=[_saved_sae(tmp_path / "c", width, 1, 3)],
                                                  model="base_adapter"),
                                 "predict": cfg.predict.model_copy(update={"model": "sae@1"})})
    config.write_text(dump(one))
    assert main(["sae", "--config", str(config), "--run-dir", str(run_dir)]) == 0
    config.write_text(dump(one.model_copy(update={"predict": one.predict.model_copy(update={"model": "sae@2"})})))
    assert main(["predict", "--config", str(config), "--run-dir", str(run_dir)]) == 2
    assert "predict.model = 'sae@2', but" in caplog.text and "sae@1 only" in caplog.text
