"""Append synthetic Taboo games (written by the synth generator) to a source's training pool.

The file is a JSONL file or a folder saved with `save_to_disk`, in the row schema plus the columns
`related_words`, `describer_model`, `guesser_model`. Rows are dropped and counted when the game was
aborted (`aborted`), when the guess is a placeholder such as `<word>` (`placeholder_guess`), or
when the target or guessed word is one of the eval set's words (`eval_word_overlap`).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from pydantic import Field

from playpen_attribution.core.rows import OUTCOMES, ROW_COLUMNS
from playpen_attribution.core.section import Section
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger
from playpen_attribution.sources.generic import numbered_table

GUESS_RE = re.compile(r"GUESS:\s*([^\n]*)", re.IGNORECASE)
# The whole line after `GUESS:`, not `taboo.guess.extract_guess`'s first word: a placeholder guess such
# as `<word>` or `...` must be seen as written to be dropped and counted.


class SyntheticAppend(Section):
    """Synthetic rows appended to the training pool (train_base) after the source is loaded."""

    path: Path = Field(description="The synth generator's output: a .jsonl file or a save_to_disk folder.")
    allow_eval_word_overlap: bool = Field(
        False, description="Keep rows whose target or guess is an eval target or gold guess."
    )
    placeholder_words: list[str] = Field(
        default_factory=lambda: ["guess", "word", "<word>", "<a word>", "..."],
        description="Guesses treated as placeholders (an empty guess always is), unless equal to the target.",
    )


def guess_word(completion: str) -> str:
    """The normalised word after `GUESS:` (lower-cased, quotes and end punctuation removed; '' if none)."""
    match = GUESS_RE.search(completion or "")
    if match is None:
        return ""
    return match.group(1).strip().strip("\"'*`").rstrip(".!?,;:").strip().lower()


def eval_words(eval_rows: list[dict]) -> set[str]:
    """Eval targets plus the guesses of successful eval rows (the gold guesses), lower-cased."""
    words = {str(r["target_word"]).lower() for r in eval_rows if r.get("target_word")}
    words |= {guess_word(r["completion"]) for r in eval_rows if r.get("outcome") == "success"}
    return words - {""}


def read_synthetic(path: Path) -> list[dict]:
    """Synthetic rows, checked for the row columns and allowed outcomes (a message names the 1-based
    line of a JSONL file, the 1-based row of a saved folder)."""
    numbered = numbered_table(Path(path))
    for where, row in numbered:
        for column in ROW_COLUMNS:
            if column not in row:
                raise UserError(f"{path} {where}: missing column {column!r}")
        if row["outcome"] not in OUTCOMES:
            raise UserError(f"{path} {where}: outcome {row['outcome']!r} is not one of {list(OUTCOMES)}")
    return [row for _, row in numbered]


def append_synthetic(
    pool_rows: list[dict], cfg: SyntheticAppend, eval_rows: list[dict]
) -> tuple[list[dict], dict[str, int]]:
    """(pool + kept synthetic rows, dropped counts); every row gets the union of all columns."""
    placeholders = {w.lower() for w in cfg.placeholder_words}
    banned = set() if cfg.allow_eval_word_overlap else eval_words(eval_rows)
    pool_ids = {r["example_id"] for r in pool_rows}
    dropped: Counter = Counter()
    kept: list[dict] = []
    for row in read_synthetic(cfg.path):
        if row["example_id"] in pool_ids:
            raise UserError(f"{cfg.path}: example_id {row['example_id']!r} already in the pool (or repeated)")
        pool_ids.add(row["example_id"])
        guess = guess_word(row["completion"])
        target = str(row.get("target_word") or "").lower()
        if row["outcome"] == "aborted":
            dropped["aborted"] += 1
        elif guess == "" or (guess in placeholders and guess != target):
            dropped["placeholder_guess"] += 1
        elif target in banned or guess in banned:
            dropped["eval_word_overlap"] += 1
        else:
            kept.append(row)
    logger.info("synthetic: %d rows appended from %s, dropped %s", len(kept), cfg.path, dict(dropped))
    combined = list(pool_rows) + kept
    columns = list(dict.fromkeys(key for row in combined for key in row))
    return [{c: row.get(c) for c in columns} for row in combined], dict(dropped)
