"""The Taboo rules as pure functions: parse `CLUE:` / `GUESS:` replies and judge clues and guesses.

A clue breaks the rules when one of its words is the target or a taboo (related) word, a form of
one (same stem: "apples", "baking", "happily"), or a compound built from one ("snowman" for "snow",
"ball" for "football"). Compounds are recognised only at a word boundary: the rest of the word must
be a suffix ("snowy") or at least three letters ("snow|man", "camp|fire"), so "train" stays legal
for "rain" and "street" for "tree". Words shorter than four letters ("art", "sun") only match whole
words and their inflections ("arts", "sunny", "sadly"), never substrings: "start", "party" and
"heart" are legal for "art" — and so, a known gap, is the closed compound "artwork".
"""

from __future__ import annotations

import re

CLUE_PREFIX = "CLUE:"
GUESS_PREFIX = "GUESS:"

MIN_STEM = 3
"""A suffix is stripped only if at least this many letters remain ("sing" stays "sing")."""
MIN_COMPOUND = 4
"""Words at least this long also count inside compounds; shorter ones only as whole words."""

_STOPWORDS = frozenset({"a", "an", "the", "of", "and", "or", "to", "in", "on", "for", "with", "at", "by"})
_INFLECTIONS = frozenset({
    "s", "es", "d", "ed", "er", "ers", "est", "ing", "ings", "ly", "y", "ies", "ier", "iest", "ily",
    "ish", "ist", "ists", "ness", "ful", "less", "ment", "able",
})
_DERIVATIONAL = ("ness", "less", "ment", "able", "ful", "ist", "ism")
_INFLECTIONAL = ("ings", "ing", "est", "ers", "er", "ed", "ly")
_PLURAL_ES = ("sses", "shes", "ches", "xes", "zes")
_NOT_PLURAL = ("ss", "us", "is")
_PLACEHOLDERS = frozenset({"word", "guess", "yourguess", "answer", "targetword", "guessword"})
_WORD_RE = re.compile(r"[a-z0-9]+")


def words_of(text: str) -> list[str]:
    """Lowercase word tokens of a text (letters and digits; punctuation and hyphens split words)."""
    return _WORD_RE.findall(text.lower())


def normalize_word(text: str) -> str:
    """Lowercase, punctuation removed, words joined by single spaces ("Ice-Cream!" -> "ice cream")."""
    return " ".join(words_of(text))


def _strip_once(word: str) -> str:
    """Remove one suffix from a lowercase word, or return it unchanged."""
    for suffix in ("ies", "ied"):
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            return word[: -len(suffix)] + "y"
    for suffix in _DERIVATIONAL + _INFLECTIONAL:
        if word.endswith(suffix) and len(word) - len(suffix) >= MIN_STEM:
            return word[: -len(suffix)]
    if word.endswith(_PLURAL_ES) and len(word) - 2 >= MIN_STEM:
        return word[:-2]
    if word.endswith("s") and not word.endswith(_NOT_PLURAL) and len(word) - 1 >= MIN_STEM:
        return word[:-1]
    return word


def strip_suffixes(word: str) -> str:
    """The word with up to two suffixes removed ("players" -> "play", "berries" -> "berry")."""
    word = word.lower()
    for _ in range(2):
        shorter = _strip_once(word)
        if shorter == word:
            break
        word = shorter
    return word


def stem(word: str) -> str:
    """A crude stem for comparing word forms: suffixes stripped, then a final -e dropped, a doubled
    final consonant undoubled and a final -i turned into -y ("making"/"make" -> "mak",
    "running"/"run" -> "run", "happiness"/"happy" -> "happy")."""
    word = strip_suffixes(word)
    if word.endswith("e") and len(word) - 1 >= MIN_STEM:
        word = word[:-1]
    if len(word) > MIN_STEM and word[-1] == word[-2] and word[-1] not in "aeiou":
        word = word[:-1]
    if word.endswith("i") and len(word) > MIN_STEM:
        word = word[:-1] + "y"
    return word


def _is_suffix(base: str, rest: str) -> bool:
    """True when `rest` is a suffix that can follow `base` ("-d" only after "-e": "iced", not "card")."""
    return rest in _INFLECTIONS and (rest != "d" or base.endswith("e"))


def _is_inflection(short: str, word: str) -> bool:
    """True when `word` is `short` plus a suffix, with the last letter maybe doubled ("sun"->"sunny")."""
    if not word.startswith(short) or word == short:
        return False
    rest = word[len(short):]
    if _is_suffix(short, rest):
        return True
    return rest[0] == short[-1] and _is_suffix(short, rest[1:])


def _in_compound(part: str, word: str, whole_words: bool = True) -> bool:
    """True when `part` sits in `word` at a compound boundary: what is left on each side is empty,
    a suffix (right side only) or, if `whole_words`, at least three letters ("snow" in "snowman",
    not "rain" in "train")."""
    start = word.find(part)
    while start != -1:
        left, right = word[:start], word[start + len(part):]
        left_ok = left == "" or (whole_words and len(left) >= 3)
        right_ok = right == "" or (whole_words and len(right) >= 3) or _is_suffix(part, right)
        if left_ok and right_ok:
            return True
        start = word.find(part, start + 1)
    return False


def _contains_part(word: str, part: str) -> bool:
    """True when a form of `part` (four letters or more) is a compound piece of `word`. The word is
    split only after its suffixes are stripped ("painting" -> "paint" does not hold "pain"); the raw
    word counts when the rest is a suffix ("snowiest" holds "snow")."""
    bare = strip_suffixes(word)
    for piece in {part, strip_suffixes(part)}:
        if len(piece) >= MIN_COMPOUND and (
            _in_compound(piece, bare) or _in_compound(piece, word, whole_words=False)
        ):
            return True
    return False


def _related_pair(clue_word: str, taboo: str) -> bool:
    """True when a clue word is the taboo word, a form of it, or a compound with it (either way)."""
    if clue_word == taboo or stem(clue_word) == stem(taboo):
        return True
    if len(taboo) < MIN_COMPOUND and _is_inflection(taboo, clue_word):
        return True
    if MIN_STEM <= len(clue_word) < MIN_COMPOUND and _is_inflection(clue_word, taboo):
        return True
    return _contains_part(clue_word, taboo) or _contains_part(taboo, clue_word)


def taboo_words(target: str, related: list[str] | tuple[str, ...]) -> list[str]:
    """The words a clue must avoid: every word of the target, and every word of the related words
    except short function words ("the", "of")."""
    found = list(words_of(target))
    for phrase in related:
        found += [w for w in words_of(phrase) if w not in _STOPWORDS and w not in found]
    return found


def clue_violation(clue: str, target: str, related: list[str] | tuple[str, ...]) -> str | None:
    """Why a clue breaks the rules (naming the offending word), or None when it is legal."""
    if not words_of(clue):
        return "the clue is empty"
    target_words = set(words_of(target))
    for clue_word in words_of(clue):
        for taboo in taboo_words(target, related):
            if not _related_pair(clue_word, taboo):
                continue
            kind = "target word" if taboo in target_words else "taboo word"
            if clue_word == taboo:
                return f"the clue uses the {kind} '{taboo}'"
            return f"the clue word '{clue_word}' is a form or part of the {kind} '{taboo}'"
    return None


def _tagged_line(reply: str, prefix: str) -> str | None:
    """The text after the first line starting with `prefix` (case-insensitive), or None."""
    pattern = re.compile(rf"^[\s*_`>#-]*{re.escape(prefix)}[\s*_`]*(.*)$", re.IGNORECASE | re.MULTILINE)
    match = pattern.search(reply or "")
    return None if match is None else match.group(1).strip().strip("*_`").strip()


def parse_clue(reply: str) -> tuple[str | None, str | None]:
    """(clue, None) for a reply with a `CLUE:` line, else (None, what is wrong with the reply)."""
    clue = _tagged_line(reply, CLUE_PREFIX)
    if clue is None:
        return None, f"the reply has no line starting with '{CLUE_PREFIX}'"
    if not words_of(clue):
        return None, "the clue is empty"
    return clue, None


def is_placeholder(guess: str) -> bool:
    """True for a template left unfilled: `<word>`, `word`, `guess`, `...`, `???` (a filled-in
    template such as `<apple>` is a real guess)."""
    joined = "".join(words_of(guess))
    return not joined or joined in _PLACEHOLDERS


def parse_guess(reply: str, max_words: int = 1) -> tuple[str | None, str | None]:
    """(guess, None) for a reply with a usable `GUESS:` line, else (None, what is wrong with it).

    The guess is normalized (lowercase, no punctuation) and may have at most `max_words` words.
    Stricter than the eval metric's `taboo.guess.extract_guess` on purpose: this judges an LLM's
    move in a game (a line of its own, no placeholder), the metric reads a word out of free text.
    """
    raw = _tagged_line(reply, GUESS_PREFIX)
    if raw is None:
        return None, f"the reply has no line starting with '{GUESS_PREFIX}'"
    if not raw:
        return None, "the guess is empty"
    if is_placeholder(raw):
        return None, f"the guess '{raw}' is a placeholder, not a word"
    guess = normalize_word(raw)
    if len(guess.split()) > max_words:
        expected = "one word" if max_words == 1 else f"at most {max_words} words"
        return None, f"the guess '{raw}' has more than {expected}"
    return guess, None


def is_correct(guess: str, target: str) -> bool:
    """True when the guess names the target (case and punctuation ignored)."""
    return normalize_word(guess) == normalize_word(target) != ""
