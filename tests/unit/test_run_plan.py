"""`run.plan`: stages judged, not built, while a plan is made."""

from playpen_attribution.run.plan import planning
from playpen_attribution.run.stage_folder import run_stage as _run_stage


def run_stage(*args, **kwargs):
    return _run_stage(*args, command="playpen-attribution demo", **kwargs)


def _build(calls):
    def build(out):
        calls.append(out)
        (out / "rows.txt").write_text("a\n")
    return build


def _two_stages(tmp_path, up_config, down_config, calls):
    up = run_stage(tmp_path, "up", up_config, {}, _build(calls))
    run_stage(tmp_path, "down", down_config, {"up": up}, _build(calls))


def _plan(tmp_path, up_config, down_config):
    calls = []
    with planning() as plan:
        _two_stages(tmp_path, up_config, down_config, calls)
        run_stage(tmp_path, "report", {}, {}, _build(calls), reuse=False)
    assert calls == []  # nothing built
    return {d.folder.name: (d.action, d.why) for d in plan.decisions.values()}


def test_a_finished_folder_is_reused_and_nothing_is_built(tmp_path):
    _two_stages(tmp_path, {"k": 1}, {"n": 2}, [])
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert _plan(tmp_path, {"k": 1}, {"n": 2}) == {
        "up": ("reuse", "same config and inputs"), "down": ("reuse", "same config and inputs"),
        "report": ("build", "rebuilt on every run")}
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_changed_value_makes_its_stage_and_everything_downstream_stale(tmp_path):
    _two_stages(tmp_path, {"k": 1}, {"n": 2}, [])
    plan = _plan(tmp_path, {"k": 5}, {"n": 3})
    assert plan["up"] == ("stale", "a different config or inputs (changed config fields: k)")
    assert plan["down"] == ("stale", "upstream rebuilt first: up; config changed: n")


def test_edited_files_are_stale_and_missing_folders_are_built(tmp_path):
    _two_stages(tmp_path, {"k": 1}, {"n": 2}, [])
    (tmp_path / "down" / "rows.txt").write_text("edited\n")
    assert _plan(tmp_path, {"k": 1}, {"n": 2})["down"] == ("stale", "its files changed since it was built (rows.txt (changed))")
    plan = _plan(tmp_path / "fresh", {"k": 1}, {"n": 2})
    assert plan["up"] == plan["down"] == ("build", "no finished folder yet")
