"""The front door, end to end on one small run made through the CLI: `--set` overrides recorded, run.log,
TensorBoard event files per training, the training-loss plot, and `plan` (reuse / stale / build)."""

import pytest
import yaml
from helpers import small_demo_dict

from playpen_attribution.cli import main
from playpen_attribution.config import load_config
from playpen_attribution.log import logger
from playpen_attribution.pipeline import plan_experiment
from playpen_attribution.run import artifacts

SEEDS, ARMS = (1, 2), ("top_k", "matched_random_k")
OVERRIDES = ["--set", "tracking.backend=tensorboard", "--set", "select.k=20"]


def _small(tmp_path):
    data = small_demo_dict(
        data={"source": {"kind": "demo", "n_train": 160, "n_query": 12, "n_eval": 16, "n_targets": 12}},
        model={"base": "tiny", "tiny": {"hidden_size": 64, "intermediate_size": 128, "max_position_embeddings": 64,
                                        "pretrain_epochs": 1, "pretrain_rows_per_word": 5}},
        train={"epochs": 1}, arm_train={"epochs": 1},
        select={"k": 30, "arms": list(ARMS)}, sweep={"seeds": list(SEEDS)})
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """(config file, run folder) of `playpen-attribution run CONFIG --set ... --run-dir D`."""
    tmp = tmp_path_factory.mktemp("front")
    config, run_dir = _small(tmp), tmp / "run"
    assert main(["run", "--config", str(config), "--run-dir", str(run_dir), *OVERRIDES]) == 0
    return config, run_dir


def test_overrides_are_used_and_recorded(cli_run):
    config, run_dir = cli_run
    experiment = yaml.safe_load((run_dir / artifacts.EXPERIMENT_FILE).read_text())
    assert experiment["select"]["k"] == 20 and experiment["tracking"]["backend"] == "tensorboard"
    origin = yaml.safe_load((run_dir / artifacts.OVERRIDES_FILE).read_text())
    assert origin["config"] == str(config)
    assert origin["overrides"] == ["tracking.backend=tensorboard", "select.k=20"]
    assert origin["command"].startswith(f"playpen-attribution run --config {config} --run-dir {run_dir} --set")
    assert artifacts.load_stage_config(run_dir / "attribute")["k"] == 20


def test_the_run_log_holds_the_command_line_and_debug_records(cli_run):
    _, run_dir = cli_run
    log = (run_dir / artifacts.RUN_LOG).read_text()
    assert "DEBUG command: playpen-attribution run --config" in log
    assert "DEBUG [train_base] resolved config:" in log  # DEBUG reaches the file, not the console
    assert "INFO [report] done" in log


def test_tensorboard_writes_event_files_per_training(cli_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir = cli_run
    tracking = run_dir / artifacts.TRACKING
    trainings = {"train_base"} | {f"seed_{s}/train_{a}" for s in SEEDS for a in ARMS}
    assert {p.parent.relative_to(tracking).as_posix() for p in tracking.rglob("events.out.tfevents.*")} == trainings
    events = EventAccumulator(str(tracking / "seed_1" / "train_top_k"))
    events.Reload()
    assert "train/loss" in events.Tags()["scalars"]
    logged = artifacts.load_train_log(run_dir / "seed_1" / "train_top_k")
    assert [round(e.value, 4) for e in events.Scalars("train/loss")] == [round(e["loss"], 4) for e in logged]


def test_the_report_draws_the_training_loss_curves(cli_run):
    _, run_dir = cli_run
    report = yaml.safe_load((run_dir / artifacts.REPORT_JSON).read_text())
    assert artifacts.TRAINING_LOSS_PLOT in report["plots"]
    assert (run_dir / artifacts.TRAINING_LOSS_PLOT).read_bytes()[:4] == b"\x89PNG"


def _actions(cfg, run_dir) -> dict[str, tuple[str, str]]:
    return {d.folder.relative_to(run_dir).as_posix(): (d.action, d.why) for d in plan_experiment(cfg, run_dir)}


def test_plan_on_the_finished_run_says_reuse_for_every_stage(cli_run):
    config, run_dir = cli_run
    cfg = load_config(config, ["select.k=20"])  # tracking is in no fingerprint: without it, still reuse
    actions = _actions(cfg, run_dir)
    assert actions.pop("report") == ("build", "rebuilt on every run")
    assert set(actions) == {"data", "base_model", "eval_base", "train_base", "attribute", "eval_base_adapter"} | {
        f"seed_{s}/{kind}_{a}" for s in SEEDS for a in ARMS for kind in ("train", "eval")} | {
        f"seed_{s}/select" for s in SEEDS}
    assert {action for action, _ in actions.values()} == {"reuse"}
    before = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*"))
    _actions(load_config(config, ["select.k=10"]), run_dir)
    assert sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")) == before  # nothing written


def test_plan_after_an_edit_says_stale_downstream_and_why(cli_run):
    config, run_dir = cli_run
    actions = _actions(load_config(config, ["select.k=10", "sweep.seeds=[1, 2, 3]"]), run_dir)
    for name in ("data", "base_model", "eval_base", "train_base", "eval_base_adapter"):
        assert actions[name][0] == "reuse"
    assert actions["attribute"] == ("stale", "a different config or inputs (changed config fields: k)")
    assert actions["seed_1/select"] == ("stale", "upstream rebuilt first: attribute; config changed: select.k")
    assert actions["seed_2/train_top_k"] == ("stale", "upstream rebuilt first: select")
    assert actions["seed_2/eval_top_k"] == ("stale", "upstream rebuilt first: train")
    assert actions["seed_3/train_top_k"] == ("build", "no finished folder yet")


def test_plan_command_logs_the_table(cli_run, caplog):
    config, run_dir = cli_run
    logger.addHandler(caplog.handler)
    try:
        assert main(["plan", str(config), "--run-dir", str(run_dir), "--set", "select.k=10"]) == 0
    finally:
        logger.removeHandler(caplog.handler)
    assert "  reuse  data: same config and inputs" in caplog.text
    assert "  stale  attribute: a different config or inputs" in caplog.text
    assert "stale (run refuses stale folders; run --overwrite rebuilds them)" in caplog.text


def test_a_stage_command_defaults_its_run_dir_and_takes_arm(cli_run, tmp_path, monkeypatch):
    config, run_dir = cli_run
    assert main(["evaluate", str(config), "--run-dir", str(run_dir), "--arm", "top_k", "--seed", "2", *OVERRIDES]) == 0
    assert (run_dir / artifacts.RUN_LOG).read_text().count("command: playpen-attribution evaluate") == 1
    monkeypatch.chdir(tmp_path)
    assert main(["data", "--config", str(config), "--set", "name=here"]) == 0
    assert (tmp_path / "runs" / "here" / "data" / artifacts.MANIFEST_FILE).is_file()
    assert (tmp_path / "runs" / "here" / artifacts.RUN_LOG).is_file()
