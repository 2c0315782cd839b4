"""Reading a guess out of a WordGuesser reply, the way the published metric does."""

from __future__ import annotations

import re

_GUESS = re.compile(r"GUESS\s*:\s*([A-Za-z][A-Za-z'\-]*)", re.IGNORECASE)
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
