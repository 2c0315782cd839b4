import subprocess
import sys

import yaml
from helpers import small_demo_dict

from playpen_attribution.cli import build_parser, demo_config_path, main
from playpen_attribution.log import logger


def test_default_run_uses_the_shipped_demo_config():
    assert demo_config_path().is_file() and demo_config_path().name == "demo.yaml"
    args = build_parser().parse_args(["run"])
    assert args.config is None and args.run_dir is None


def test_bad_config_field_exits_2_with_one_clear_line(tmp_path, caplog):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"train": {"epoch": 3}}))
    logger.addHandler(caplog.handler)
    try:
        assert main(["run", str(path), "--run-dir", str(tmp_path / "r")]) == 2
    finally:
        logger.removeHandler(caplog.handler)
    assert f"{path}: unknown field 'train.epoch'" in caplog.text


def test_stage_commands_run_alone(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(small_demo_dict()))
    run_dir = tmp_path / "run"
    assert main(["data", "--config", str(cfg), "--run-dir", str(run_dir)]) == 0
    assert main(["model", "--config", str(cfg), "--run-dir", str(run_dir)]) == 0
    assert (run_dir / "data" / "splits" / "eval.jsonl").is_file()
    assert (run_dir / "base_model" / "model" / "config.json").is_file()
    assert main(["evaluate", "--config", str(cfg), "--run-dir", str(run_dir), "--model", "base"]) == 0
    assert (run_dir / "eval_base" / "metrics.json").is_file()


def test_python_dash_m_is_the_same_command():
    out = subprocess.run([sys.executable, "-m", "playpen_attribution", "--help"], capture_output=True, text=True, check=False)
    assert out.returncode == 0
    for word in ("run", "data", "train", "attribute", "select", "evaluate", "report", "synth"):
        assert word in out.stdout
