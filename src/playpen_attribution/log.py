"""The package's one logger. The package never prints; the CLI configures this logger: stderr at the
chosen level (`setup_logging`), and every record at DEBUG appended to the run folder's run.log
(`run_log`).

`setup_logging` also silences the third-party warnings and log records we know to be harmless (each
named below, with why), so a run's output is our INFO lines, progress bars and real problems. Resolved
stage configs go to DEBUG (and to each stage folder's config.yaml), trainer metrics to train_log.json,
Bergson's own log lines to DEBUG (`attribution.bergson_runs.run_command`); the package's per-stage
progress bars are cleared when done (the stage's 'done' line follows) and the libraries' short ones are
off (`quiet_library_bars`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

HARMLESS_WARNINGS = (
    # TRL's unwrap_model_for_generation reads the old property name; we never checkpoint activations
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    # torch's own TorchScript helpers, hit on import by libraries we do not call it through
    (DeprecationWarning, r"`torch.jit.script_method` is deprecated"),
)
"""(category, message regex) of third-party warnings that say nothing about our run."""

HARMLESS_LOGGERS = {
    # bitsandbytes (a PEFT dependency) warns on import, on CPUs with AVX512-BF16, that its optional 4-bit CPU
    # kernel package is missing; nothing here quantizes to 4 bits
    "bitsandbytes.backends.cpu.ops": logging.ERROR,
    # matplotlib says once per machine that it built its font cache (the first plot of a fresh install)
    "matplotlib.font_manager": logging.WARNING,
}
"""Third-party logger -> the lowest level of its records that is still shown."""

HARMLESS_RECORDS = {
    # we hand lm-eval the model we loaded, in this one process, on purpose (core/benchmarks.py); the
    # kwargs it says may be ignored are ones we do not pass
    "lm_eval.models.huggingface": r"Passed an already-initialized model through `pretrained`"
                                  r"|`pretrained` model kwarg is not of type `str`",
    # a generic hint, per task, on how to pass task kwargs from lm-eval's own command line
    "lm_eval.api.task": r"Custom kwargs can be passed to `--metadata`",
}
"""Third-party logger -> a regex of the messages of it that are dropped (everything else it says stays)."""


class _DropMessage(logging.Filter):
    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())

logger = logging.getLogger("playpen_attribution")


def quiet_library_bars() -> None:
    """No progress bars from datasets (Map, Saving the dataset, Flattening the indices: milliseconds each,
    several per stage; also in job and Bergson worker processes, which inherit the environment) or from
    transformers' own loops (Loading weights, Writing model shards: one per model load); the package's and
    the trainer's bars, and huggingface_hub's download bars, stay."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # read when datasets is imported
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


_CONSOLE = "playpen_attribution.console"
"""Name of the stderr handler `setup_logging` adds (so a second call only changes its level)."""
_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """Send the package's log records at `level` and above to stderr with a timestamp (the CLI's `-v` /
    `--log-level`); the library filters are installed once."""
    logger.setLevel(level)
    for handler in logger.handlers:
        if handler.get_name() == _CONSOLE:
            handler.setLevel(level)
            return
    for category, message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, lowest in HARMLESS_LOGGERS.items():
        logging.getLogger(name).setLevel(lowest)
    for name, pattern in HARMLESS_RECORDS.items():
        logging.getLogger(name).addFilter(_DropMessage(pattern))
    quiet_library_bars()
    handler = logging.StreamHandler()
    handler.set_name(_CONSOLE)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
    logger.addHandler(handler)
    logger.propagate = False  # libraries that configure the root logger must not print our records twice


@contextmanager
def run_log(path) -> Iterator[None]:
    """While the block runs, also append every record, DEBUG included, to the file `path` (a run folder's
    run.log, with the date in each line); the console keeps its own level."""
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(_FORMAT))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(previous)
