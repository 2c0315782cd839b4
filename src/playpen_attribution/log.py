"""The package's one logger. The package never prints; the CLI configures this logger.

`setup_logging` also silences the third-party warnings we know to be harmless (each named below, with
why), so a run's output is our INFO lines, progress bars and real problems. Resolved stage configs go
to DEBUG (and to each stage folder's config.yaml), trainer metrics to train_log.json.
"""

from __future__ import annotations

import logging
import warnings

HARMLESS_WARNINGS = (
    # TRL's unwrap_model_for_generation reads the old property name; we never checkpoint activations
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    # torch's own TorchScript helpers, hit on import by libraries we do not call it through
    (DeprecationWarning, r"`torch.jit.script_method` is deprecated"),
)
"""(category, message regex) of third-party warnings that say nothing about our run."""

logger = logging.getLogger("playpen_attribution")


def setup_logging(level: int = logging.INFO) -> None:
    """Send the package's log records to stderr with a timestamp (called once by the CLI)."""
    if logger.handlers:
        return
    for category, message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # libraries that configure the root logger must not print our records twice
