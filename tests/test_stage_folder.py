import json

import pytest

from playpen_attribution import artifacts
from playpen_attribution.errors import UserError
from playpen_attribution.stage_folder import run_stage


def _writer(calls):
    def build(out):
        calls.append(out)
        (out / "rows.txt").write_text("a\nb\n")
        return {"rows": 2}
    return build


def test_writes_config_manifest_and_renames_part(tmp_path):
    calls = []
    final = run_stage(tmp_path, "demo_stage", {"x": 1}, {}, _writer(calls))
    assert calls[0].name == "demo_stage.part"
    assert final == tmp_path / "demo_stage" and not (tmp_path / "demo_stage.part").exists()
    assert sorted(p.name for p in final.iterdir()) == ["config.yaml", "manifest.json", "rows.txt"]
    manifest = json.loads((final / artifacts.MANIFEST_FILE).read_text())
    assert manifest["rows"] == 2 and set(manifest["produced"]) == {"config.yaml", "rows.txt"}
    for key in ("fingerprint", "content_hash", "versions", "started", "finished", "wall_seconds", "git_revision"):
        assert key in manifest
    assert (final / "config.yaml").read_text() == "x: 1\n"


def test_same_config_and_inputs_reuse(tmp_path, caplog):
    calls = []
    run_stage(tmp_path, "s", {"x": 1}, {}, _writer(calls))
    run_stage(tmp_path, "s", {"x": 1}, {}, _writer(calls))
    assert len(calls) == 1


def test_changed_config_refuses_without_overwrite(tmp_path):
    calls = []
    run_stage(tmp_path, "s", {"x": 1}, {}, _writer(calls))
    with pytest.raises(UserError, match="different config.*--overwrite"):
        run_stage(tmp_path, "s", {"x": 2}, {}, _writer(calls))
    run_stage(tmp_path, "s", {"x": 2}, {}, _writer(calls), overwrite=True)
    assert len(calls) == 2 and (tmp_path / "s" / "config.yaml").read_text() == "x: 2\n"


def test_changed_input_is_noticed(tmp_path):
    calls = []
    up = run_stage(tmp_path, "up", {"v": 1}, {}, _writer(calls))
    run_stage(tmp_path, "down", {}, {"up": up}, _writer(calls))
    run_stage(tmp_path, "up", {"v": 2}, {}, lambda out: (out / "rows.txt").write_text("other\n") and {}, overwrite=True)
    with pytest.raises(UserError, match="different config or inputs"):
        run_stage(tmp_path, "down", {}, {"up": up}, _writer(calls))


def test_failed_build_leaves_no_final_folder(tmp_path):
    def boom(out):
        (out / "half.txt").write_text("x")
        raise RuntimeError("crash")
    with pytest.raises(RuntimeError):
        run_stage(tmp_path, "s", {}, {}, boom)
    assert not (tmp_path / "s").exists() and (tmp_path / "s.part").exists()
    run_stage(tmp_path, "s", {}, {}, _writer([]))  # a rerun starts the .part afresh
    assert (tmp_path / "s" / "rows.txt").exists() and not (tmp_path / "s" / "half.txt").exists()


def test_input_that_is_not_a_stage_folder(tmp_path):
    (tmp_path / "loose").mkdir()
    with pytest.raises(UserError, match="not a finished stage folder"):
        run_stage(tmp_path, "s", {}, {"up": tmp_path / "loose"}, _writer([]))


@pytest.mark.parametrize("name, folder, expected", [
    ("data", "run", "data --config <config.yaml> --run-dir run"),
    ("base_model", "run", "model --config <config.yaml> --run-dir run"),
    ("train_base", "run", "train --config <config.yaml> --run-dir run"),
    ("train_base", "run/seed_2", "train --config <config.yaml> --run-dir run --seed 2"),
    ("train_top_k", "run/seed_1", "train --config <config.yaml> --run-dir run --arm top_k --seed 1"),
    ("eval_base", "run", "evaluate --config <config.yaml> --run-dir run --model base"),
    ("eval_top_k", "run/seed_3", "evaluate --config <config.yaml> --run-dir run --model top_k --seed 3"),
    ("select", "run/seed_3", "select --config <config.yaml> --run-dir run"),
    ("rank_new", "run", "predict --config <config.yaml> --run-dir run --rows <rows.jsonl> --name new"),
    ("attribute", "run/seed_1", "run <config.yaml> --run-dir run"),
    ("baselines", "run", "run <config.yaml> --run-dir run"),
    ("sae", "run", "sae --config <config.yaml> --run-dir run"),
])
def test_logged_command_line_rebuilds_that_folder(name, folder, expected):
    from playpen_attribution.stage_folder import _command_line

    assert _command_line(name, folder) == "playpen-attribution " + expected
