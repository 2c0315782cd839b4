"""The package's one logger. The package never prints; the CLI configures this logger."""

from __future__ import annotations

import logging

logger = logging.getLogger("playpen_attribution")


def setup_logging(level: int = logging.INFO) -> None:
    """Send the package's log records to stderr with a timestamp (called once by the CLI)."""
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # libraries that configure the root logger must not print our records twice
