"""Target words and their taboo (related) words, from clembench instance files or a JSON list.

Accepted word sources:
- a clembench Taboo instances file: `{"experiments": [{"name", "game_instances": [{"target_word",
  "related_word": [...]}]}]}`;
- a JSON list: `[{"target_word": ..., "related_words": [...]}, ...]`;
- nothing: the small list shipped with the package (`default_targets.json`).

Words of an eval set (a text file with one word per line, or a JSONL of rows with `target_word`) can
be excluded so synthetic games never teach the eval targets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from playpen_attribution.errors import UserError
from playpen_attribution.log import logger
from playpen_attribution.synth.rules import normalize_word

DEFAULT_TARGETS_FILE = Path(__file__).with_name("default_targets.json")


@dataclass(frozen=True)
class Target:
    """One word to describe and the words the describer must not use."""

    word: str
    """The target word."""
    related: tuple[str, ...]
    """The taboo words (clembench's `related_word`)."""


def _text(path: Path) -> str:
    """The file's UTF-8 text, or one UserError naming the file (and the line of a bad byte)."""
    data = path.read_bytes() if path.is_file() else b""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _read_json(path: Path) -> object:
    if not path.is_file():
        raise UserError(f"{path}: word source not found")
    try:
        return json.loads(_text(path))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from err


def _target_from(item: object, related_key: str, where: str) -> Target:
    """One Target from a dict, or a UserError naming where the entry sits."""
    if not isinstance(item, dict):
        raise UserError(f"{where}: expected an object with 'target_word', got {type(item).__name__}")
    word = item.get("target_word")
    if not isinstance(word, str) or not normalize_word(word):
        raise UserError(f"{where}: field 'target_word' must be a non-empty string, got {word!r}")
    related = item.get(related_key, [])
    if isinstance(related, str):
        related = [related]
    if not isinstance(related, list) or not all(isinstance(r, str) for r in related):
        raise UserError(f"{where}: field '{related_key}' must be a list of strings, got {related!r}")
    return Target(word.strip(), tuple(r.strip() for r in related if r.strip()))


def parse_targets(data: object, source: str) -> list[Target]:
    """Targets from the parsed JSON of a word source (`source` names it in errors)."""
    if isinstance(data, dict) and "experiments" in data:
        found = []
        for e_index, experiment in enumerate(data["experiments"], start=1):
            name = experiment.get("name", e_index) if isinstance(experiment, dict) else e_index
            instances = experiment.get("game_instances") if isinstance(experiment, dict) else None
            if not isinstance(instances, list):
                raise UserError(f"{source}: experiment {name!r} has no 'game_instances' list")
            for i_index, instance in enumerate(instances, start=1):
                where = f"{source}: experiment {name!r}, game instance {i_index}"
                found.append(_target_from(instance, "related_word", where))
        return found
    if isinstance(data, list):
        return [_target_from(item, "related_words", f"{source}: entry {i}") for i, item in enumerate(data, start=1)]
    raise UserError(
        f"{source}: expected a clembench instances file ({{'experiments': [...]}}) or a JSON list of "
        "{'target_word', 'related_words'} objects"
    )


def read_excluded_words(path: Path) -> set[str]:
    """Normalized words of an eval set: one word per line, or JSONL rows with `target_word`."""
    if not path.is_file():
        raise UserError(f"{path}: exclude-words file not found")
    words = set()
    lines = _text(path).splitlines()
    is_jsonl = path.suffix == ".jsonl" or any(line.lstrip().startswith("{") for line in lines[:1])
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if not is_jsonl:
            words.add(normalize_word(line))
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{line_no}: malformed JSON line ({err.msg})") from err
        word = row.get("target_word") if isinstance(row, dict) else None
        if not isinstance(word, str):
            raise UserError(f"{path}:{line_no}: row has no string field 'target_word'")
        words.add(normalize_word(word))
    words.discard("")
    return words


def load_targets(targets_file: Path | None, exclude_words_file: Path | None) -> list[Target]:
    """The targets to play, in source order, without duplicates and without excluded words."""
    path = targets_file or DEFAULT_TARGETS_FILE
    targets = parse_targets(_read_json(path), str(path))
    excluded = read_excluded_words(exclude_words_file) if exclude_words_file else set()
    kept: dict[str, Target] = {}
    dropped = {"excluded": 0, "duplicate": 0}
    for target in targets:
        key = normalize_word(target.word)
        if key in excluded:
            dropped["excluded"] += 1
        elif key in kept:
            dropped["duplicate"] += 1
        else:
            kept[key] = target
    logger.info(
        "synth targets: %d from %s (%d excluded as eval words, %d duplicates dropped)",
        len(kept), path, dropped["excluded"], dropped["duplicate"],
    )
    if not kept:
        raise UserError(f"{path}: no target words left after excluding the words of {exclude_words_file}")
    return list(kept.values())
