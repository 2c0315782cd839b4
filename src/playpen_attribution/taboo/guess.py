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
