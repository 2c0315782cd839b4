"""Reading a guess out of a WordGuesser reply, the way the published metric does."""

from __future__ import annotations

import re

_GUESS = re.compile(r"GUESS\s*:\s*([A-Za-z][A-Za-z'\-]*)", re.IGNORECASE)
# Lenient on purpose: the metric reads the first word after any `GUESS:` in free generation text. Two
# other readers differ for a reason: `synth.rules.parse_guess` enforces the game's strict rules on an
# LLM's reply (one `GUESS:` line, placeholders refused), and `sources.synthetic.guess_word` keeps the
# whole guess line so a placeholder such as `<word>` can be recognised and counted.
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")


def extract_guess(text: str) -> str | None:
    """The word after the first `GUESS:` (lower-cased), or None when the reply has no guess."""
    match = _GUESS.search(text or "")
    return match.group(1).strip("'-").lower() if match else None


def gold_word(completion: str) -> str | None:
    """The word a gold completion guesses (`GUESS: word`), falling back to its first word."""
    guess = extract_guess(completion)
    if guess is not None:
        return guess
    match = _WORD.search(completion or "")
    return match.group(0).lower() if match else None


def with_guess(completion: str, word: str) -> str | None:
    """`completion` with the word after its first `GUESS:` replaced by `word` (the rest of the text kept), or
    None when it has no guess: the alternative answers the choice metric scores."""
    match = _GUESS.search(completion or "")
    if match is None:
        return None
    return completion[: match.start(1)] + word + completion[match.end(1):]


def choice_words(rows: list[dict]) -> list[str]:
    """The answers the choice metric ranks a row's target among: every distinct target word (lower-cased) of
    the rows whose completion holds a guess, sorted."""
    return sorted({str(r["target_word"]).lower() for r in rows
                   if r.get("target_word") and extract_guess(r.get("completion") or "") is not None})


def row_choices(row: dict, words: list[str], n: int | None) -> list[str] | None:
    """A row's choices, its target word first: every word of `words` (n None), or the target and n - 1 others
    drawn with the row's example_id as the seed (the same draw for every model, so models are compared on
    the same choices). None when the row has no target word or no guess to substitute."""
    import random

    target = str(row.get("target_word") or "").lower()
    if not target or extract_guess(row.get("completion") or "") is None:
        return None
    others = [w for w in words if w != target]
    if n is not None and n - 1 < len(others):
        others = random.Random(row["example_id"]).sample(others, n - 1)
    return [target, *others]
