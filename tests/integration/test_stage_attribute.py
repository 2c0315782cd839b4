"""The attribute stage on a small run of its own (80 pool rows, 12 query rows in 3 groups): every
mode and preconditioner, the files it writes, diagnostics, the stage path against Bergson's own
gradients, the query-index cache, clear errors. (Its own run, not the session's demo_run: only
data, base model and base adapter are needed, so it stays small and does not wait for the sweep.)"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from helpers import rerecord, small_demo_dict

from playpen_attribution.attribution import bergson_runs as runs
from playpen_attribution.core.jsonl import read_jsonl, write_jsonl
from playpen_attribution.core.modeling import load_tokenizer
from playpen_attribution.core.tokenization import tokenize_rows
from playpen_attribution.errors import UserError
from playpen_attribution.run import artifacts
from playpen_attribution.stages import attribute

POOL_ROWS, QUERY_ROWS, N_GROUPS = 80, 12, 3
COMMON = {"config.yaml", "manifest.json", "scores.jsonl", "summary.json", "row_diagnostics.jsonl",
          "score_histogram.png", "score_vs_length.png"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one intra-op thread (tests/conftest.py)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A run folder with a small pool, a query in N_GROUPS groups, the tiny base model and an adapter."""
    from playpen_attribution.config import parse_config
    from playpen_attribution.run.model_paths import model_path as base_model_path
    from playpen_attribution.stages import base_model, data, train

    cfg = parse_config(small_demo_dict(
        data={"source": {"kind": "demo", "n_train": POOL_ROWS, "n_query": QUERY_ROWS, "n_eval": 10,
                         "n_targets": 20, "aborted_fraction": 0.0}},
        train={**small_demo_dict()["train"], "epochs": 1},
        select={**small_demo_dict()["select"], "k": 20},  # the data stage checks k against the 80-row pool
    ))
    root = tmp_path_factory.mktemp("attr_stage")
    base = root / "base"
    data.run(cfg, base)
    query = artifacts.load_split(base / artifacts.DATA, "attr_query")
    query = [dict(r, group_id=f"group{i % N_GROUPS}") for i, r in enumerate(query)]
    write_jsonl(artifacts.split_path(base / artifacts.DATA, "attr_query"), query)
    rerecord(base / artifacts.DATA)  # the regrouped query is now what the data stage holds
    base_model.run(cfg, base)
    model_path = base_model_path(cfg.model.base, base)
    train.run(cfg, base)
    pool = artifacts.load_split(base / artifacts.DATA, "train_base")
    assert len(pool) == POOL_ROWS and {r["outcome"] for r in pool} == {"success", "failure"}
    return {"cfg": cfg, "base": base, "root": root, "model": model_path, "cache": root / "cache",
            "pool": pool, "query": query, "runs": {}}


def _config(small, **attribute_fields):
    cfg = small["cfg"]
    fields = {"cache_dir": str(small["cache"]), "preconditioning": "none", **attribute_fields}
    return cfg.model_copy(update={"attribute": cfg.attribute.model_copy(update=fields),
                                  "select": cfg.select.model_copy(update={"k": 20})})


def _copy_run(small, name: str):
    """A copy of the small run folder whose base_model/ links to the original (the adapter names that base)."""
    run_dir = small["root"] / name
    shutil.copytree(small["base"], run_dir, ignore=shutil.ignore_patterns(artifacts.BASE_MODEL))
    (run_dir / artifacts.BASE_MODEL).symlink_to(small["base"] / artifacts.BASE_MODEL, target_is_directory=True)
    return run_dir


def _run(small, name: str, **attribute_fields):
    """The attribute stage folder for these settings (each run once per module)."""
    if name not in small["runs"]:
        small["runs"][name] = attribute.run(_config(small, **attribute_fields), _copy_run(small, name))
    return small["runs"][name]


CASES = {
    "mean_none": {"mode": "mean"},
    "nearest_none": {"mode": "nearest"},
    "individual_none": {"mode": "individual"},
    "group_mean_max_none": {"mode": "group_mean_max"},
    "mean_query": {"mode": "mean", "preconditioning": "query"},
    "mean_mixed": {"mode": "mean", "preconditioning": "mixed", "mixing_coefficient": 0.9},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_mode_and_preconditioner_gives_one_finite_score_per_pool_row(small, name):
    out = _run(small, name, **CASES[name])
    scores = artifacts.load_scores(out)
    assert set(scores) == {r["example_id"] for r in small["pool"]}
    assert all(math.isfinite(s) for s in scores.values())
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
             and not p.relative_to(out).as_posix().startswith(artifacts.BERGSON_DIR + "/")}
    keeps_matrix = CASES[name]["mode"] in ("individual", "group_mean_max")
    assert files == COMMON | ({artifacts.INDIVIDUAL_SCORES_FILE} if keeps_matrix else set())
    summary = json.loads((out / artifacts.ATTRIBUTION_SUMMARY).read_text())
    assert summary["mode"] == CASES[name]["mode"] and summary["rows"] == summary["finite"] == POOL_ROWS
    assert {"precision_success_at_k", "pool_success_fraction", "k", "non_finite", "top_k_composition",
            "finite_coverage", "min", "max", "mean", "score_vs_length", "score_vs_loss"} <= set(summary)
    assert set(summary["top_k_composition"]) == {"20", "50"}  # 100 and 200 exceed the 80-row pool
    assert summary["score_vs_loss"]["n"] == POOL_ROWS and -1 <= summary["score_vs_loss"]["spearman"] <= 1


def test_row_diagnostics_hold_score_loss_length_outcome_group(small):
    out = _run(small, "mean_none", **CASES["mean_none"])
    rows = read_jsonl(out / artifacts.ROW_DIAGNOSTICS_FILE)
    pool = {r["example_id"]: r for r in small["pool"]}
    assert len(rows) == POOL_ROWS and {r["example_id"] for r in rows} == set(pool)
    assert [r["rank"] for r in rows] == list(range(1, POOL_ROWS + 1))
    scores = artifacts.load_scores(out)
    for r in rows:
        assert r["score"] == scores[r["example_id"]] and r["loss"] > 0 and r["length"] > 2
        assert (r["outcome"], r["group_id"]) == (pool[r["example_id"]]["outcome"], pool[r["example_id"]]["group_id"])


def _matrix(out):
    with np.load(out / artifacts.INDIVIDUAL_SCORES_FILE) as npz:
        return list(npz["example_ids"]), list(npz["query_ids"]), npz["scores"]


def test_nearest_and_group_mean_max_agree_with_the_individual_matrix(small):
    ids, query_ids, matrix = _matrix(_run(small, "individual_none", **CASES["individual_none"]))
    assert query_ids == [r["example_id"] for r in small["query"]] and matrix.shape == (POOL_ROWS, QUERY_ROWS)
    nearest = artifacts.load_scores(_run(small, "nearest_none", **CASES["nearest_none"]))
    np.testing.assert_allclose([nearest[e] for e in ids], matrix.max(axis=1), rtol=1e-5, atol=1e-6)
    individual = artifacts.load_scores(_run(small, "individual_none", **CASES["individual_none"]))
    np.testing.assert_allclose([individual[e] for e in ids], matrix.mean(axis=1), rtol=1e-6)
    grouped = artifacts.load_scores(_run(small, "group_mean_max_none", **CASES["group_mean_max_none"]))
    groups = np.array([i % N_GROUPS for i in range(QUERY_ROWS)])
    expected = np.max([matrix[:, groups == g].mean(axis=1) for g in range(N_GROUPS)], axis=0)
    np.testing.assert_allclose([grouped[e] for e in ids], expected, rtol=1e-5, atol=1e-6)


def test_stage_mean_scores_are_cosines_with_the_mean_query_gradient(small):
    """Recomputed from Bergson's stored per-row gradients of the same tokenized rows."""
    from bergson import load_gradients

    cfg = _config(small, mode="mean", unit_normalize=True)
    out = _run(small, "mean_none", **CASES["mean_none"])
    tokenizer = load_tokenizer(small["model"])
    pool = tokenize_rows(tokenizer, small["pool"], cfg.tokenize)
    query = tokenize_rows(tokenizer, small["query"], cfg.tokenize)
    settings = attribute.scoring_for(cfg, small["model"])
    adapter = small["base"] / artifacts.TRAIN_BASE / artifacts.ADAPTER_DIR
    g_dir = runs.build_gradient_index(small["model"], adapter, pool, small["root"] / "grads_pool", settings)
    q_dir = runs.build_gradient_index(small["model"], adapter, query, small["root"] / "grads_query", settings)
    g = np.asarray(load_gradients(g_dir), dtype=np.float64)
    q = np.asarray(load_gradients(q_dir), dtype=np.float64)
    target = (q / np.linalg.norm(q, axis=1, keepdims=True)).mean(axis=0)
    expected = (g / np.linalg.norm(g, axis=1, keepdims=True)) @ target
    scores = artifacts.load_scores(out)
    np.testing.assert_allclose([scores[e] for e in runs.consumed_ids(g_dir)], expected, rtol=1e-3, atol=1e-5)


def test_second_run_reuses_the_cached_query_index(small, caplog):
    _run(small, "mean_none", **CASES["mean_none"])
    with caplog.at_level("INFO", logger="playpen_attribution"):
        out = _run(small, "mean_none_again", mode="mean")
    assert "reused query index" in caplog.text
    manifest = artifacts.load_manifest(out)
    assert manifest.fields["query_index"]["reused"] is True
    assert artifacts.load_scores(out) == pytest.approx(artifacts.load_scores(small["runs"]["mean_none"]))


def test_empty_query_split_is_a_user_error(small):
    run_dir = _copy_run(small, "empty_query")
    write_jsonl(artifacts.split_path(run_dir / artifacts.DATA, "attr_query"), [])
    rerecord(run_dir / artifacts.DATA)
    with pytest.raises(UserError, match="attr_query.jsonl: the attr_query split is empty"):
        attribute.run(_config(small, mode="mean"), run_dir)


def test_k_larger_than_the_pool_is_a_user_error(small):
    run_dir = _copy_run(small, "big_k")
    cfg = _config(small)
    cfg = cfg.model_copy(update={"select": cfg.select.model_copy(update={"k": POOL_ROWS + 1})})
    with pytest.raises(UserError, match=rf"select.k = {POOL_ROWS + 1} is larger than the pool \({POOL_ROWS} rows"):
        attribute.run(cfg, run_dir)


@pytest.fixture(scope="module")
def with_saved_modules(small):
    """A copy of the small run whose base adapter also trains lm_head in full (modules_to_save)."""
    from playpen_attribution.stages import train

    run_dir = _copy_run(small, "modules_to_save")
    shutil.rmtree(run_dir / artifacts.TRAIN_BASE)
    cfg = small["cfg"]
    lora = cfg.train.lora.model_copy(update={"modules_to_save": ["lm_head"]})
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lora": lora})})
    train.run(cfg, run_dir)
    return cfg, run_dir


def test_an_adapter_with_untracked_modules_is_refused_naming_them(small, with_saved_modules):
    cfg, run_dir = with_saved_modules
    cfg = cfg.model_copy(update={"attribute": _config(small).attribute, "select": _config(small).select})
    with pytest.raises(UserError, match=r"trains \['lm_head'\] in full \(modules_to_save\).*Bergson tracks only "
                                        r"LoRA modules.*allow_untracked_modules"):
        attribute.run(cfg, run_dir)
    assert not (run_dir / artifacts.ATTRIBUTE).exists()


def test_untracked_modules_allowed_explicitly_are_recorded_and_bergson_is_heard(small, with_saved_modules, caplog):
    from playpen_attribution.log import logger

    cfg, run_dir = with_saved_modules
    allowed = _config(small, allow_untracked_modules=True)
    cfg = cfg.model_copy(update={"attribute": allowed.attribute, "select": allowed.select})
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("WARNING", logger="playpen_attribution"):
            folder = attribute.run(cfg, run_dir)
    finally:
        logger.removeHandler(caplog.handler)
    assert artifacts.load_manifest(folder).fields["untracked_modules"] == ["lm_head"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("allow_untracked_modules" in w for w in warnings)
    assert any("Adapter parameter" in w and "lm_head" in w and "not found" in w for w in warnings)  # Bergson's line


def test_bergson_width_is_recorded_but_not_fingerprinted(small):
    """How many Bergson processes scored changes speed, not scores (to float tolerance): a finished attribute/
    is reused at another width, and its manifest says which width built it."""
    out = _run(small, "mean_none", **CASES["mean_none"])
    manifest = artifacts.load_manifest(out)
    assert manifest.fields["bergson_processes"] == {"nproc_per_node": 1, "nnode": 1}
    wider = _config(small, **CASES["mean_none"]).attribute.model_copy(update={"nproc_per_node": 2, "nnode": 1})
    cfg = _config(small, **CASES["mean_none"]).model_copy(update={"attribute": wider})
    assert attribute.run(cfg, out.parent) == out
    assert artifacts.load_manifest(out).fields["finished"] == manifest.fields["finished"]  # reused, not rebuilt
    assert "nproc_per_node" not in artifacts.load_stage_config(out)["attribute"]
