"""Attribution methods on the tiny model (40 pool rows, 6 query rows): TrackStar, EK-FAC and TRAK through
Bergson's own pipelines each write the scores artifact of gradient cosine (one row per pool example_id);
several methods in one run write one scores file per method, their costs in the manifest, and select
builds top_k@<method> with its own matched control; magic is refused through the CLI in one line, exit 2."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import small_demo_dict

from playpen_attribution.cli import main
from playpen_attribution.core.jsonl import read_jsonl
from playpen_attribution.log import logger
from playpen_attribution.report.methods import method_table
from playpen_attribution.run import artifacts
from playpen_attribution.run.seeds import seed_folder
from playpen_attribution.stages import attribute, select

POOL_ROWS, QUERY_ROWS = 40, 6
REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one intra-op thread (tests/conftest.py)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Data, the tiny base model and a base adapter trained one epoch on a 40-row pool."""
    from playpen_attribution.config import parse_config
    from playpen_attribution.stages import base_model, data, train

    cfg = parse_config(small_demo_dict(
        data={"source": {"kind": "demo", "n_train": POOL_ROWS, "n_query": QUERY_ROWS, "n_eval": 10,
                         "n_targets": 20, "aborted_fraction": 0.0}},
        train={**small_demo_dict()["train"], "epochs": 1},
        select={**small_demo_dict()["select"], "k": 10, "arms": ["top_k", "matched_random_k"]},
    ))
    root = tmp_path_factory.mktemp("attr_methods")
    base = root / "base"
    data.run(cfg, base)
    base_model.run(cfg, base)
    train.run(cfg, base)
    pool_ids = [r["example_id"] for r in artifacts.load_split(base / artifacts.DATA, "train_base")]
    return {"cfg": cfg, "root": root, "base": base, "pool_ids": pool_ids}


def _run_dir(small, name: str):
    run_dir = small["root"] / name
    shutil.copytree(small["base"], run_dir, ignore=shutil.ignore_patterns(artifacts.BASE_MODEL))
    (run_dir / artifacts.BASE_MODEL).symlink_to(small["base"] / artifacts.BASE_MODEL, target_is_directory=True)
    return run_dir


def _cfg(small, **fields):
    cfg = small["cfg"]
    fields = {"cache_dir": str(small["root"] / "cache"), **fields}
    return cfg.model_copy(update={"attribute": cfg.attribute.model_copy(update=fields)})


def _scores(folder):
    return read_jsonl(folder / artifacts.SCORES_FILE)


@pytest.mark.parametrize("method", ["trackstar", "ekfac", "trak"])
def test_each_method_writes_one_finite_score_per_pool_row(small, method):
    run_dir = _run_dir(small, method)
    out = attribute.run(_cfg(small, method=method), run_dir)
    rows = _scores(out)
    assert [r["example_id"] for r in rows] == small["pool_ids"]
    assert all(r["score"] is not None and math.isfinite(r["score"]) for r in rows)
    assert sorted(r["rank"] for r in rows) == list(range(1, POOL_ROWS + 1))
    assert len({r["score"] for r in rows}) > POOL_ROWS // 2  # a ranking, not a constant
    manifest = json.loads((out / artifacts.MANIFEST_FILE).read_text())
    assert manifest["method"] == method and manifest["scores"]["finite"] == POOL_ROWS
    assert yaml.safe_load((out / artifacts.CONFIG_FILE).read_text())["attribute"]["method"] == method
    assert (out / artifacts.BERGSON_DIR / "run" / "scores").is_dir()  # Bergson's own pipeline folder
    losses = [r["loss"] for r in read_jsonl(out / artifacts.ROW_DIAGNOSTICS_FILE)]
    assert all(v is not None and v > 0 for v in losses)


def test_several_methods_score_once_each_and_select_builds_an_arm_and_control_per_method(small):
    run_dir = _run_dir(small, "several")
    methods = ["gradient_cosine", "trak"]
    cfg = _cfg(small, methods=methods, method="gradient_cosine")
    out = attribute.run(cfg, run_dir)
    manifest = json.loads((out / artifacts.MANIFEST_FILE).read_text())
    assert list(manifest["methods"]) == methods and "part_peaks" not in manifest
    assert all(manifest["methods"][m]["seconds"] > 0 and manifest["methods"][m]["peak_rss_mb"] > 0 for m in methods)
    assert manifest["peak_rss_mb"] >= max(manifest["methods"][m]["peak_rss_mb"] for m in methods)
    for method in methods:
        rows = _scores(artifacts.method_dir(out, method))
        assert [r["example_id"] for r in rows] == small["pool_ids"]
        assert artifacts.load_attribution_summary(artifacts.method_dir(out, method))["method"] == method
    assert _scores(out) == _scores(artifacts.method_dir(out, "gradient_cosine"))  # the main ranking
    assert _scores(out) != _scores(artifacts.method_dir(out, "trak"))
    printed = subprocess.run([sys.executable, str(REPO / "benchmarks" / "methods.py"), "--run-dir", str(run_dir),
                              "--ks", "5,10"], capture_output=True, text=True, check=True).stdout
    assert "| gradient_cosine |" in printed and "| trak |" in printed and "gradient_cosine vs trak:" in printed
    lines = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    assert [r["method"] for r in lines] == methods and lines[0]["relative_seconds"] == 1.0
    table = method_table(run_dir, [])  # the report's section, before any arm ran
    assert list(table["methods"]) == methods and table["methods"]["gradient_cosine"]["relative_seconds"] == 1.0
    assert table["methods"]["trak"]["top_k"] is None and list(table["spearman"]) == ["gradient_cosine vs trak"]

    seed_cfg = cfg.for_seed(cfg.seeds[0])
    selections = json.loads((select.run(seed_cfg, seed_folder(run_dir, cfg.seeds[0], False))
                             / artifacts.SELECTIONS_FILE).read_text())
    assert sorted(selections) == sorted(f"{a}@{m}" for a in ("top_k", "matched_random_k") for m in methods)
    for method in methods:
        ranked = [r["example_id"] for r in sorted(_scores(artifacts.method_dir(out, method)), key=lambda r: r["rank"])]
        assert selections[f"top_k@{method}"]["example_ids"] == ranked[:10]
        assert selections[f"top_k@{method}"]["versus"] == [f"matched_random_k@{method}"]
        assert selections[f"matched_random_k@{method}"]["ranking"] == f"attribution@{method}"


def test_gradient_cosine_alone_records_its_method_and_no_other_methods_options(small):
    run_dir = _run_dir(small, "default")
    out = attribute.run(_cfg(small), run_dir)
    written = yaml.safe_load((out / artifacts.CONFIG_FILE).read_text())["attribute"]
    assert (written["method"], written["methods"]) == ("gradient_cosine", [])
    assert not {"trackstar", "ekfac", "trak"} & set(written)
    assert "methods" not in json.loads((out / artifacts.MANIFEST_FILE).read_text())


def test_magic_is_refused_through_the_cli_in_one_line_exit_2(tmp_path, caplog):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(small_demo_dict(attribute={"method": "magic"})))
    logger.addHandler(caplog.handler)
    try:
        assert main(["plan", str(path), "--run-dir", str(tmp_path / "r")]) == 2
    finally:
        logger.removeHandler(caplog.handler)
    errors = {r.getMessage() for r in caplog.records if r.levelname == "ERROR"}
    assert len(errors) == 1
    error = errors.pop()
    assert "\n" not in error and "field 'attribute.method' = 'magic'" in error
    assert "cannot follow the LoRA fine-tune TRL's SFTTrainer ran" in error and "Traceback" not in caplog.text
