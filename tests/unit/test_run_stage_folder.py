import json

import pytest

from playpen_attribution.errors import UserError
from playpen_attribution.run import artifacts
from playpen_attribution.run.stage_folder import run_stage as _run_stage


def run_stage(*args, **kwargs):
    return _run_stage(*args, command="playpen-attribution demo", **kwargs)


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
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.part").exists()  # no litter
    run_stage(tmp_path, "s", {}, {}, _writer([]))
    assert (tmp_path / "s" / "rows.txt").exists() and not (tmp_path / "s" / "half.txt").exists()


def test_failed_overwrite_keeps_the_old_folder_and_leaves_no_part(tmp_path):
    run_stage(tmp_path, "s", {"x": 1}, {}, _writer([]))
    before = (tmp_path / "s" / artifacts.MANIFEST_FILE).read_text()

    def boom(out):
        (out / "half.txt").write_text("x")
        raise UserError("k larger than the pool")
    with pytest.raises(UserError):
        run_stage(tmp_path, "s", {"x": 2}, {}, boom, overwrite=True)
    assert (tmp_path / "s" / artifacts.MANIFEST_FILE).read_text() == before
    assert (tmp_path / "s" / "config.yaml").read_text() == "x: 1\n"
    assert not (tmp_path / "s.part").exists()


def test_part_left_by_a_killed_build_is_removed_and_logged(tmp_path, caplog):
    (tmp_path / "s.part").mkdir()
    (tmp_path / "s.part" / "half.txt").write_text("x")
    with caplog.at_level("INFO", logger="playpen_attribution"):
        final = run_stage(tmp_path, "s", {}, {}, _writer([]))
    assert "removed" in caplog.text and "s.part" in caplog.text
    assert not (final / "half.txt").exists()


def test_resumable_subfolder_survives_a_failure_with_the_same_fingerprint(tmp_path):
    def crash(out):
        (out / "ckpt").mkdir(exist_ok=True)
        (out / "ckpt" / "step").write_text("5")
        (out / "junk.txt").write_text("x")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        run_stage(tmp_path, "s", {"x": 1}, {}, crash, resumable=("ckpt",))
    assert (tmp_path / "s.part" / "ckpt" / "step").exists()
    seen = []

    def resume(out):
        seen.append(sorted(p.name for p in out.iterdir()))
        (out / "ckpt" / "step").unlink()
        (out / "ckpt").rmdir()
        return {}
    run_stage(tmp_path, "s", {"x": 1}, {}, resume, resumable=("ckpt",))
    assert seen == [[".building", "ckpt", "config.yaml"]]
    with pytest.raises(RuntimeError):  # a different config never inherits another build's checkpoints
        run_stage(tmp_path, "t", {"x": 1}, {}, crash, resumable=("ckpt",))
    run_stage(tmp_path, "t", {"x": 2}, {}, lambda out: seen.append(sorted(p.name for p in out.iterdir())) or {},
              resumable=("ckpt",))
    assert seen[-1] == [".building", "config.yaml"]


def test_tampered_folder_is_refused_not_reused_and_rebuilt_with_overwrite(tmp_path):
    calls = []
    final = run_stage(tmp_path, "s", {"x": 1}, {}, _writer(calls))
    (final / "rows.txt").write_text("a\n")
    with pytest.raises(UserError, match=r"rows.txt \(changed\).*--overwrite"):
        run_stage(tmp_path, "s", {"x": 1}, {}, _writer(calls))
    run_stage(tmp_path, "s", {"x": 1}, {}, _writer(calls), overwrite=True)
    assert len(calls) == 2 and (final / "rows.txt").read_text() == "a\nb\n"


def test_tampered_input_is_refused(tmp_path):
    up = run_stage(tmp_path, "up", {"v": 1}, {}, _writer([]))
    (up / "rows.txt").unlink()
    with pytest.raises(UserError, match=r"input 'up'.*rows.txt \(missing\)"):
        run_stage(tmp_path, "down", {}, {"up": up}, _writer([]))


def test_refusal_names_the_changed_config_fields(tmp_path):
    run_stage(tmp_path, "s", {"train": {"epochs": 1, "lr": 0.1}, "k": 3}, {}, _writer([]))
    with pytest.raises(UserError, match=r"changed config fields: train\.epochs\b"):
        run_stage(tmp_path, "s", {"train": {"epochs": 2, "lr": 0.1}, "k": 3}, {}, _writer([]))


def test_input_that_is_not_a_stage_folder(tmp_path):
    (tmp_path / "loose").mkdir()
    with pytest.raises(UserError, match="not a finished stage folder"):
        run_stage(tmp_path, "s", {}, {"up": tmp_path / "loose"}, _writer([]))


def test_manifest_records_the_command_that_rebuilds_the_folder(tmp_path):
    final = run_stage(tmp_path, "s", {}, {}, _writer([]))
    assert artifacts.load_manifest(final).fields["command"] == "playpen-attribution demo"


def test_a_failed_overwrite_keeps_the_old_folder(tmp_path):
    run_stage(tmp_path, "s", {"x": 1}, {}, _writer([]))

    def boom(out):
        raise RuntimeError("crash")
    with pytest.raises(RuntimeError):
        run_stage(tmp_path, "s", {"x": 2}, {}, boom, overwrite=True)
    assert (tmp_path / "s" / "config.yaml").read_text() == "x: 1\n" and (tmp_path / "s" / "rows.txt").exists()


PEAK_SCRIPT = """
import json, sys
from pathlib import Path
import numpy as np
from playpen_attribution.run import artifacts
from playpen_attribution.run.stage_folder import run_stage

def big(out):
    block = np.ones(40_000_000)  # 305 MB, touched
    return {"tokens_processed": 1000, "sum": float(block[::1_000_000].sum())}

root = Path(sys.argv[1])
first = artifacts.load_manifest(run_stage(root, "big", {"x": 1}, {}, big, command="test")).fields
second = artifacts.load_manifest(run_stage(root, "small", {"x": 1}, {}, lambda out: {}, command="test")).fields
print(json.dumps([first, second]))
"""


def test_each_stage_records_its_own_peak_memory_and_its_tokens_per_second(tmp_path):
    # in a fresh process, as a stage runs: inside a long test session the process already holds gigabytes
    # that earlier tests left mapped, and those, not the stage, set its peak
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          check=True)
    first, second = json.loads(done.stdout.strip().splitlines()[-1])
    assert first["tokens_per_s"] == pytest.approx(1000 / first["wall_seconds"], rel=0.05)
    assert "tokens_per_s" not in second  # a stage that counts no tokens claims no rate
    assert first["peak_rss_mb"] > 300 and second["peak_rss_mb"] > 0
    if first["peak_rss_scope"] == "stage":  # Linux: the peak is reset per stage, so the later stage's is its own
        assert first["peak_rss_mb"] - second["peak_rss_mb"] > 250


def _as_older_format(folder, version=None):
    """Rewrite a finished folder's manifest as a folder of an earlier stage-folder format would have it."""
    path = folder / artifacts.MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.pop("format_version")
    if version is not None:
        manifest["format_version"] = version
    path.write_text(json.dumps(manifest))


def test_manifest_records_the_stage_folder_format(tmp_path):
    final = run_stage(tmp_path, "s", {"x": 1}, {}, _writer([]))
    assert json.loads((final / artifacts.MANIFEST_FILE).read_text())["format_version"] == artifacts.FORMAT_VERSION
    assert artifacts.load_manifest(final).format_version == artifacts.FORMAT_VERSION == 2


@pytest.mark.parametrize("version", [None, 1])
def test_folder_of_an_older_format_is_refused_in_one_line_and_rebuilt_with_overwrite(tmp_path, version):
    calls = []
    final = run_stage(tmp_path, "s", {"x": 1}, {}, _writer(calls))
    _as_older_format(final, version)
    with pytest.raises(UserError) as refused:
        run_stage(tmp_path, "s", {"x": 1}, {}, _writer(calls))  # same config: still refused, never reused
    message = str(refused.value)
    assert "\n" not in message and str(final) in message and "format 1" in message and "--overwrite" in message
    assert len(calls) == 1
    run_stage(tmp_path, "s", {"x": 1}, {}, _writer(calls), overwrite=True)
    assert len(calls) == 2 and artifacts.load_manifest(final).format_version == artifacts.FORMAT_VERSION


def test_input_of_an_older_format_is_refused_and_judged_stale(tmp_path):
    from playpen_attribution.run.stage_folder import judge

    up = run_stage(tmp_path, "up", {"v": 1}, {}, _writer([]))
    _as_older_format(up)
    with pytest.raises(UserError, match=r"up: a stage folder of format 1.*rebuild it with --overwrite"):
        run_stage(tmp_path, "down", {}, {"up": up}, _writer([]))
    decision, why = judge(up, {"v": 1}, {})
    assert decision == "stale" and "format 1" in why
