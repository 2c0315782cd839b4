import argparse
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
    assert main(["evaluate", "--config", str(cfg), "--run-dir", str(run_dir), "--arm", "base"]) == 0
    assert (run_dir / "eval_base" / "metrics.json").is_file()


def test_python_dash_m_is_the_same_command():
    out = subprocess.run([sys.executable, "-m", "playpen_attribution", "--help"], capture_output=True, text=True, check=False)
    assert out.returncode == 0
    for word in ("run", "data", "train", "attribute", "select", "evaluate", "report", "synth"):
        assert word in out.stdout


def test_run_takes_the_config_as_positional_or_option_and_every_command_a_log_level():
    parser = build_parser()
    assert parser.parse_args(["run", "--config", "c.yaml"]).config_option.name == "c.yaml"
    assert parser.parse_args(["run", "c.yaml"]).config.name == "c.yaml"
    assert parser.parse_args(["train", "c.yaml", "-v"]).log_level == "DEBUG"
    assert parser.parse_args(["plan", "--log-level", "warning"]).log_level == "WARNING"
    assert parser.parse_args(["run", "--set", "a=1", "--set", "b.c=[2]"]).overrides == ["a=1", "b.c=[2]"]
    assert parser.parse_args(["evaluate"]).arm == "base_adapter" and parser.parse_args(["train"]).arm is None


def test_version_and_help_import_nothing_heavy():
    out = subprocess.run([sys.executable, "-m", "playpen_attribution", "--version"], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0 and out.stdout.startswith("playpen-attribution ")
    code = ("import sys; from playpen_attribution.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers', 'openai', 'pydantic', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "[]"


def test_each_stage_help_says_what_it_reads_and_writes():
    from playpen_attribution.cli import STAGES

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for stage in STAGES:
        assert "Reads:" in sub.choices[stage].description and "Writes:" in sub.choices[stage].description
