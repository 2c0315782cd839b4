"""The `synth` subcommand: flags, optional YAML config, API settings, then `runner.run_synth`.

Adding the flags imports nothing heavy (the CLI builds every subcommand's parser for `--help`); the
API client (`openai`), the config and the runner are imported when the command runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from playpen_attribution.errors import UserError
from playpen_attribution.log import logger, setup_logging

if TYPE_CHECKING:
    from playpen_attribution.synth.config import SynthConfig

_CONFIG_DEST = "synth_config_file"


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the synth flags to a (sub)parser; every flag defaults to None so --config values show
    through, and the defaults documented on SynthConfig apply last."""
    add = parser.add_argument
    add("--config", dest=_CONFIG_DEST, type=Path, help="YAML file with the same fields (flags override)")
    add("--output-dir", type=Path, help="folder for the outputs; rerunning into it resumes")
    add("--describer-model", help="model that gives the clues")
    add("--guesser-models", nargs="+", help="models that guess (one or more)")
    add("--games-per-guesser", type=int, help="games each guesser model plays")
    add("--max-turns", type=int, help="clue/guess rounds per game (default 3)")
    add("--max-repairs", type=int, help="re-asks after a rule-breaking reply (default 2)")
    add("--seed", type=int, help="shuffles the target order (default 0)")
    add("--targets-file", type=Path, help="clembench instances JSON or JSON list of targets")
    add("--exclude-words-file", type=Path, help="eval words to leave out (text or JSONL)")
    add("--experiment", help="experiment name written into rows (default 'synthetic')")
    add("--concurrency", type=int, help="games played at once (default 4)")
    add("--timeout", type=float, help="seconds per API request (default 60)")
    add("--max-retries", type=int, help="retries per request on 429/5xx/timeouts (default 5)")
    add("--backoff-base", type=float, help="seconds before the first retry, doubling (default 1)")
    add("--save-hf-dataset", action="store_const", const=True, help="also save a datasets folder")


def _read_yaml(path: Path) -> dict:
    from playpen_attribution.core.yaml_config import read_mapping

    data = read_mapping(path, "synth config") or {}
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def _config_from_args(args: argparse.Namespace) -> SynthConfig:
    """The SynthConfig of parsed flags: the --config file's values, overridden by given flags."""
    from playpen_attribution.synth.config import SynthConfig, build_config

    config_file = getattr(args, _CONFIG_DEST, None)
    values = _read_yaml(config_file) if config_file else {}
    for name in SynthConfig.model_fields:
        flag_value = getattr(args, name, None)
        if flag_value is not None:
            values[name] = flag_value
    return build_config(values, str(config_file) if config_file else "synth flags")


def _equivalent_command(cfg: SynthConfig) -> str:
    """The command line that replays this config without a --config file."""
    parts = ["playpen-attribution", "synth"]
    for name, value in cfg.model_dump(mode="json").items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            parts += [flag, *map(str, value)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def run_synth_command(args: argparse.Namespace) -> int:
    """Run `synth` from parsed flags; returns 0, raises UserError on a mistake or a failed call."""
    from playpen_attribution.synth.client import ChatClient, RetryPolicy, api_settings_from_env
    from playpen_attribution.synth.runner import run_synth

    cfg = _config_from_args(args)
    settings = api_settings_from_env()
    logger.info("synth config: %s", cfg.model_dump(mode="json"))
    logger.info("equivalent command: %s", _equivalent_command(cfg))
    logger.info("synth API: %s", settings.describe())
    policy = RetryPolicy(timeout_s=cfg.timeout, max_retries=cfg.max_retries, backoff_base_s=cfg.backoff_base)
    summary = run_synth(cfg, ChatClient(settings, policy))
    logger.info(
        "synth done: %d games, success rate %s, %d aborted, %d rows in %s",
        summary["games"], summary["success_rate"], summary["aborts"], summary["rows"], cfg.output_dir,
    )
    return 0


def _main(argv: list[str] | None = None) -> int:
    """`python -m playpen_attribution.synth.command ...`: the synth subcommand on its own."""
    parser = argparse.ArgumentParser(prog="playpen-attribution synth", description=__doc__)
    add_synth_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        return run_synth_command(args)
    except UserError as err:
        logger.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(_main())
