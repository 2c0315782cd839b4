"""Integration: the sae and predict stages (and ranking a new file) on the small demo run, through the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from playpen_attribution.cli import main
from playpen_attribution.core.jsonl import read_jsonl, write_jsonl
from playpen_attribution.core.modeling import load_tokenizer
from playpen_attribution.core.tokenization import tokenize_rows
from playpen_attribution.core.yaml_config import dump
from playpen_attribution.errors import UserError
from playpen_attribution.run import artifacts
from playpen_attribution.sae.config import PredictConfig, SaeConfig
from playpen_attribution.sae.features import STAT_NAMES
from playpen_attribution.stages import predict, rank

UPSTREAM = (artifacts.DATA, artifacts.BASE_MODEL, artifacts.TRAIN_BASE, artifacts.ATTRIBUTE)
D_SAE = 64


def _linked_run(src, dst, names=UPSTREAM):
    """A fresh run folder whose upstream stage folders are links to the demo run's (never written to)."""
    dst.mkdir(parents=True)
    for name in names:
        (dst / name).symlink_to(src / name, target_is_directory=True)
    return dst


@pytest.fixture(scope="module")
def sae_run(demo_run, tmp_path_factory):
    """(cfg, run_dir, config_path) after `sae` and `predict` ran through the CLI on the demo run's folders."""
    cfg, src = demo_run
    tmp = tmp_path_factory.mktemp("sae_stage")
    run_dir = _linked_run(src, tmp / "run")
    cfg = cfg.model_copy(update={
        "sae": SaeConfig(layer=0, d_sae=D_SAE, model="base_adapter", batch_size=32),
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
    assert _files(run_dir / "sae") == common | {"features.npz", "index.json"}
    assert _files(run_dir / "predict") == common | {"predictor.joblib", "metrics.json", "predicted_scores.jsonl"}
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
    lengths = [len(ids) for ids in tokenize_rows(tokenizer, pool, "raw", cfg.tokenize.max_length)["input_ids"]]
    np.testing.assert_array_equal(features.stats[:, 0], lengths)
    assert ((features.feature_presence >= 0) & (features.feature_presence <= 1)).all()
    recorded = artifacts.load_manifest(run_dir / "sae").fields["sae"]
    assert (recorded["release"], recorded["hook_name"], recorded["layer"], recorded["d_sae"]) == (
        "random", "blocks.0.hook_resid_post", 0, D_SAE)


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
    assert set(metrics["models"]) == {"sae", "length", "residual"}
    for model in metrics["models"].values():
        assert {"spearman", "pearson", "r2", "top_k", "top_k_overlap", "auroc", "alpha"} <= set(model)
        assert model["top_k"] == round(0.2 * metrics["scored_rows"])
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
