"""The row schema every source produces and every stage joins on, and what a source returns.

A row is a plain dict with at least the columns in ``ROW_COLUMNS``. Sources may carry extra
metadata columns (``model``, ``category``, ``reward_model_score``, ``related_words``, ...); stages
keep them and join on ``example_id`` only, never on row position. A source hands the data stage a
``SourceRows``: its rows already split, and the count of every row its filters removed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

ROW_COLUMNS: tuple[str, ...] = (
    "example_id",
    "prompt",
    "completion",
    "game",
    "game_role",
    "outcome",
    "experiment",
    "task_id",
    "group_id",
    "target_word",
)
"""Columns every row carries (``target_word`` may be None for non-Taboo data)."""

OUTCOMES: tuple[str, ...] = ("success", "failure", "aborted")
"""Allowed values of ``outcome`` (clembench's won/lost/aborted map onto these)."""

SPLITS: tuple[str, ...] = ("train_base", "attr_query", "eval")
"""The three splits the data stage writes: the training pool, the attribution query set, the eval set."""

CANDIDATES = "candidates"
"""The optional fourth split (`data.candidates`): new rows never scored by gradients, which the
predictor ranks and the predictor arms (sae_top_k, probe_top_k) are drawn from."""
VALIDATION = "validation"
"""The optional split held out of eval by group (`data.validation_fraction`): what `train.keep_best:
validation` selects a checkpoint on, never reported."""


def make_example_id(*parts: object) -> str:
    """A stable id from the parts that identify a row (source name, experiment, task, turn, text...).

    The same parts always give the same id, across machines and Python versions.
    """
    text = "\x1f".join(str(p) for p in parts)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def group_id_for(experiment: str, task_id: object) -> str:
    """The group key used to keep games of one task on one side of a split."""
    return f"{experiment}::{task_id}"


@dataclass
class SourceRows:
    """Rows of one source, already split, plus the counts of rows its filters removed."""

    splits: dict[str, list[dict]]
    """Split name (one of SPLITS) -> rows with at least ROW_COLUMNS."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Filter reason -> number of rows removed for it (recorded in the manifest)."""
    info: dict = field(default_factory=dict)
    """Anything else worth recording in the manifest (paths read, hub ids, counts per outcome)."""
