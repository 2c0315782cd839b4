"""Every stage of a run in one table: the folder it builds, the command that builds it, where that
folder lives and which stages it reads.

A row is one kind of stage folder, so a stage that builds several kinds has a row for each: `train`
builds the base adapter (`train_base/`) and each arm (`train_<arm>/`), `evaluate` the base model, the
base adapter and each arm. Where a folder lives is one of
- RUN: the run directory, once per run;
- SEED: each sweep seed's folder `seed_<s>/` (`run.seeds`);
- BASE: beside the base adapter: the run directory, or each seed's folder with `sweep.retrain_base`.

The pipeline, the CLI (its stage commands, which take `--seed`, the folder a command works in) and
each stage's command line (`command_line`, recorded in its manifest) read this table, so where a stage
runs is decided here only. The rows are in an order the data can flow (every row after those it reads);
the pipeline runs them in one such order (`pipeline.py`). This module imports nothing heavy: the CLI
builds its parser from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playpen_attribution.config import ExperimentConfig

RUN, SEED, BASE = "run", "seed", "base"
ARM = "<arm>"
"""`Stage.arm` of the rows built once per arm: the command line's `--arm` is then the arm's name."""


@dataclass(frozen=True)
class Stage:
    """One kind of stage folder and the command that builds it."""

    name: str               # the folder's name (train_<arm>, eval_<arm>, rank_<name>: one per arm or ranking)
    command: str            # the CLI subcommand that builds it
    module: str             # the module in stages/ whose `run` builds it
    where: str              # RUN, SEED or BASE
    reads: tuple[str, ...]  # the rows whose folders it may read
    arm: str | None = None  # the command's --arm: base, base_adapter, ARM (an arm's name), or None for none
    config: bool = True     # whether its command line names the config (report reads the run folder's own)


DATA = Stage("data", "data", "data", RUN, ())
BASE_MODEL = Stage("base_model", "model", "base_model", RUN, ("data",))
TRAIN_BASE = Stage("train_base", "train", "train", BASE, ("data", "base_model"))
ATTRIBUTE = Stage("attribute", "attribute", "attribute", BASE, ("data", "base_model", "train_base"))
BASELINES = Stage("baselines", "baselines", "baselines", BASE, ("data", "base_model", "train_base"))
SAE = Stage("sae", "sae", "sae", BASE, ("data", "base_model", "train_base"))
PREDICT = Stage("predict", "predict", "predict", BASE, ("data", "attribute", "sae"))
SELECT = Stage("select", "select", "select", SEED, ("data", "attribute", "baselines", "predict"))
TRAIN_ARM = Stage("train_<arm>", "train", "train", SEED, ("data", "base_model", "select", "train_base"), arm=ARM)
EVAL_BASE = Stage("eval_base", "evaluate", "evaluate", RUN, ("data", "base_model"), arm="base")
EVAL_BASE_ADAPTER = Stage("eval_base_adapter", "evaluate", "evaluate", BASE, ("data", "base_model", "train_base"),
                          arm="base_adapter")
EVAL_ARM = Stage("eval_<arm>", "evaluate", "evaluate", SEED, ("data", "base_model", "train_<arm>"), arm=ARM)
RANK = Stage("rank_<name>", "rank", "rank", BASE, ("base_model", "train_base", "predict"))
REPORT = Stage("report", "report", "report", RUN,
               ("data", "base_model", "train_base", "attribute", "baselines", "sae", "predict", "select", "train_<arm>",
                "eval_base", "eval_base_adapter", "eval_<arm>", "rank_<name>"), config=False)

STAGES = (DATA, BASE_MODEL, TRAIN_BASE, ATTRIBUTE, BASELINES, SAE, PREDICT, SELECT, TRAIN_ARM, EVAL_BASE,
          EVAL_BASE_ADAPTER, EVAL_ARM, RANK, REPORT)
"""Every kind of stage folder, each after the rows it reads."""

COMMANDS = tuple(dict.fromkeys(stage.command for stage in STAGES))
"""The CLI's stage commands, in the table's order."""

HELP = {
    "data": "build the splits. Reads: data.source (and data.synthetic, data.candidates). Writes: data/",
    "model": "build the tiny base model (model.base: tiny; nothing for a named model). Reads: data/. "
             "Writes: base_model/",
    "train": "train the base adapter, or one arm (--arm) of one seed. Reads: data/ (and select/ for an arm). "
             "Writes: train_base/ or seed_<S>/train_<arm>/ (adapter/, train_log.json)",
    "attribute": "score every pool row with Bergson. Reads: data/, train_base/. Writes: attribute/",
    "baselines": "loss and embedding rankings. Reads: data/, train_base/. Writes: baselines/",
    "sae": "SAE features per row. Reads: data/ (and train_base/ with sae.model: base_adapter). Writes: sae/",
    "predict": "fit the attribution predictor on SAE features. Reads: data/, attribute/, sae/. Writes: predict/",
    "select": "draw every arm's rows per seed. Reads: data/ and the rankings the arms use. "
              "Writes: seed_<S>/select/",
    "evaluate": "eval loss and word accuracy of one model (--arm). Reads: data/ and its adapter. "
                "Writes: eval_<arm>/ (in seed_<S>/ for an arm)",
    "rank": "rank new rows with the saved predictor, no gradients. Reads: --rows, predict/. Writes: rank_<name>/",
    "report": "the report of a run. Reads: every stage folder. Writes: report/, and report.md with its plots in "
              "the run folder",
}
"""Each stage command's `--help`: what it does, reads and writes."""


def find(command: str, arm: str | None = None) -> Stage:
    """The row `playpen-attribution COMMAND [--arm ARM]` builds; `arm` None for a command without --arm
    (`train` of the base adapter)."""
    rows = [stage for stage in STAGES if stage.command == command]
    exact = [stage for stage in rows if stage.arm == arm]
    if exact:
        return exact[0]
    per_arm = [stage for stage in rows if stage.arm == ARM]
    if arm is None or not per_arm:
        raise KeyError(f"no stage is built by {command!r} with --arm {arm!r}")
    return per_arm[0]


def per_seed(stage: Stage, retrain_base: bool) -> bool:
    """Whether `stage`'s folder lives in a seed's folder (else in the run directory)."""
    return stage.where == SEED or (stage.where == BASE and retrain_base)


def takes_seed(command: str) -> bool:
    """Whether the CLI command takes `--seed`: some folder it builds can live in a seed's folder."""
    return any(stage.where != RUN for stage in STAGES if stage.command == command)


def seed_of(stage: Stage, cfg: ExperimentConfig | None) -> int | None:
    """The sweep seed whose folder `stage` works in (`cfg` is then that seed's, `for_seed`); None in the run
    directory."""
    if cfg is None or not per_seed(stage, cfg.sweep.retrain_base):
        return None
    return cfg.run_seed


def command_line(stage: Stage, cfg: ExperimentConfig | None, folder: Path, **options) -> str:
    """The CLI call that rebuilds one `stage` folder, built in `folder` (the run directory, or a seed's
    folder, whose parent is the run directory): `playpen-attribution <command> --config <config.yaml>
    --run-dir D [--opt value ...] [--seed S]`. Options whose value is None are left out, True gives a bare
    flag."""
    seed = seed_of(stage, cfg)
    run_dir = Path(folder).parent if seed is not None else Path(folder)
    parts = ["playpen-attribution", stage.command, *(["--config", "<config.yaml>"] if stage.config else []),
             "--run-dir", str(run_dir)]
    for key, value in {**options, "seed": seed}.items():
        if value is None or value is False:
            continue
        parts.append("--" + key.replace("_", "-"))
        if value is not True:
            parts.append(str(value))
    return " ".join(parts)
