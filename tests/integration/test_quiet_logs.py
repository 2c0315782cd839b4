"""Quiet logs: a demo run through the CLI prints a line or two per stage folder and a few progress bars,
nothing else (no metric dicts, no YAML configs, no third-party warnings or chatter).

The demo is shrunk (fewer rows, two seeds, one epoch) but keeps configs/demo.yaml's stages and arms, and
adds what the SmolTalk configs run: a (random) SAE with its predictor, and the local lm-eval task on every
model. Importing SAELens raises the transformers log level, after which a trainer left to its defaults
prints every metric dict; the harness warns about things we do on purpose and prints its batch-size
search. The run's output is read the way a terminal shows it: one line per newline, a progress bar's `\\r` redraws on
the line they belong to.
"""

import re
import subprocess
import sys

import yaml
from helpers import REPO

from playpen_attribution.attribution.arms import plan_arms
from playpen_attribution.config import parse_config
from playpen_attribution.stages import baselines

SHRINK = {
    "data": {"source": {"n_train": 160, "n_query": 12, "n_eval": 16, "n_targets": 12}},
    "model": {"tiny": {"pretrain_epochs": 1, "pretrain_rows_per_word": 5}},
    "train": {"epochs": 1}, "arm_train": {"epochs": 1},
    "select": {"k": 20},
    "sweep": {"seeds": [1, 2]},
    "sae": {"release": "random", "layer": 1, "d_sae": 64, "model": "base_adapter"},
    "predict": {"cv_folds": 3},
    "evaluate": {"benchmarks": ["lexicon_choice"], "benchmark_include_path": "configs/lm_eval_tasks"},
    "report": {"expect": None},  # shrunk this far it is no control: a failed one would end the run with status 1
}
HARNESS_BARS = 3
"""lm-eval's bars per evaluation: building the task's requests, tokenizing them, running them."""

LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
BAR = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")
"""A tqdm bar as it ends: `desc: 100%|█████| 12/12 [00:01<00:00, 9.1it/s]`."""
FORBIDDEN = {"metric dict": re.compile(r"\{'(loss|train_runtime|eval_loss|grad_norm)'"),
             "warning": re.compile(r"Warning\b|warnings\.warn"),
             "YAML config": re.compile(r"^\s*[a-z_]+:( |$)")}


def _merge(base: dict, update: dict) -> dict:
    return {**base, **{k: _merge(base.get(k, {}), v) if isinstance(v, dict) else v for k, v in update.items()}}


def terminal_lines(text: str) -> list[str]:
    """What a terminal keeps of `text`: one line per newline, each showing what was drawn after its last `\\r`."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    shown = []
    for line in lines:
        drawn = [part for part in line.split("\r") if part.strip()]
        shown.append(drawn[-1] if drawn else "")
    return shown


def test_terminal_lines_count_newlines_and_keep_the_last_redraw():
    text = "a\rbar  0%|\rbar 100%|##| 2/2 [00:00<00:00]\n12:00:00 INFO x\n\rtail\r\n"
    assert terminal_lines(text) == ["bar 100%|##| 2/2 [00:00<00:00]", "12:00:00 INFO x", "tail"]


def test_a_demo_run_prints_a_line_or_two_per_stage(tmp_path):
    config = _merge(yaml.safe_load((REPO / "configs" / "demo.yaml").read_text()), SHRINK)
    path = tmp_path / "demo_small.yaml"
    path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "playpen_attribution", "run", str(path), "--run-dir", str(run_dir)],
                         cwd=REPO, capture_output=True, check=False, timeout=1800)  # bytes: keep the \r as sent
    stdout, stderr = out.stdout.decode("utf-8", "replace"), out.stderr.decode("utf-8", "replace")
    (tmp_path / "printed.txt").write_text(stdout + stderr)  # to look at when it fails
    assert out.returncode == 0, stderr[-3000:]
    lines = terminal_lines(stdout) + terminal_lines(stderr)

    cfg = parse_config(config, str(path))
    units = len(cfg.seeds) * len(plan_arms(cfg.select))
    built = [m.parent for m in [*run_dir.glob("*/manifest.json"), *run_dir.glob("seed_*/*/manifest.json")]
             if not m.parent.is_symlink()]  # a seed folder links the shared stages
    folders = len(built)
    shared = 9 + baselines.needed(cfg)  # data, base_model, eval_base, train_base, eval_base_adapter, attribute, sae,
    # predict, report, and baselines when an arm ranks by loss or embedding
    assert folders == shared + len(cfg.seeds) * (1 + 2 * len(plan_arms(cfg.select)))  # every stage folder was built

    logged = [line for line in lines if LOG_LINE.match(line)]
    bars = [line for line in lines if not LOG_LINE.match(line) and BAR.search(line)]
    other = [line for line in lines if line.strip() and line not in logged and line not in bars]
    assert not other, f"lines that are neither our log nor a progress bar: {other[:5]}"
    for what, pattern in FORBIDDEN.items():
        found = [line for line in logged + bars if pattern.search(line)]
        assert not found, f"{what} in the output: {found[:3]}"
    evaluations = 2 + units  # base, base adapter, every (arm, seed)
    # a built stage: 'start' and 'done'; the inline sweep adds a progress line per (arm, seed) unit, the
    # attribute stage one about its query cache, each evaluation one naming its lm-eval tasks, the run one
    # at the end
    assert len(logged) <= 2 * folders + units + evaluations + 2, "\n".join(logged)
    assert all(" INFO " in line for line in logged), [line for line in logged if " INFO " not in line]
    # the package's bars are cleared when done; what stays is Bergson's, a few in the attribute stage, and
    # the harness's
    assert len(bars) <= 5 + HARNESS_BARS * evaluations, "\n".join(bars)
    assert len(lines) - lines.count("") < 150 + (1 + HARNESS_BARS) * evaluations
