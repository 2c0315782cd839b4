"""clembench records source: a folder tree of Taboo `interactions.json` transcripts.

Layout (any benchmark version): `<version>/<pair>/taboo/<experiment>/<episode or instance>/interactions.json`.
Each file is one game between a WordDescriber (Player 1) and a WordGuesser (Player 2). The
guesser's conversation is rebuilt from the game master's messages to the guesser and the guesser's
replies; the target and related words come from the describer's initial prompt; the outcome follows
clembench's own Taboo scoring: a `correct guess` event -> success, else an `invalid format` event ->
aborted, else failure (an `invalid clue` or running out of turns loses the game).

A record that cannot be read (not UTF-8, not JSON, unreadable, or the wrong shape at any depth: a turn
that is not a list, an event or its `action` that is not an object) is dropped, counted by reason in
the data manifest, and named in a warning; the other records load.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from playpen_attribution.core.rows import (
    OUTCOMES,
    SourceRows,
    group_id_for,
    make_example_id,
)
from playpen_attribution.core.section import Section
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger
from playpen_attribution.sources.messages import merge_consecutive, render_raw_prompt
from playpen_attribution.sources.splitting import split_by_group

TARGET_RE = re.compile(r"needs to guess:\s*\n(.+?)\n\s*\nRelated words are:\s*\n(.*?)(?:\n\s*\n|$)", re.DOTALL)
"""Target word and the `- word` list of related words in the describer's initial prompt."""


class ClembenchSource(Section):
    """Taboo games from clembench run records (`interactions.json` files), seen from the guesser."""

    kind: Literal["clembench"] = "clembench"
    path: Path = Field(description="Root folder searched recursively for interactions.json files.")
    rows_per: Literal["game", "guess_turn"] = Field(
        "game", description="game: one row per game (final guess); guess_turn: one row per guesser reply."
    )
    query_fraction: float = Field(0.2, ge=0, lt=1, description="Share of groups (experiment::episode) in attr_query.")
    eval_fraction: float = Field(0.2, ge=0, lt=1, description="Share of groups in eval; the rest is train_base.")
    drop_aborted: bool = Field(True, description="Drop (and count) rows of aborted games before splitting.")

    @model_validator(mode="after")
    def _fractions(self) -> ClembenchSource:
        if self.query_fraction + self.eval_fraction >= 1:
            raise ValueError(
                f"query_fraction + eval_fraction = {self.query_fraction + self.eval_fraction}: must be < 1"
            )
        return self


@dataclass
class Episode:
    """One Taboo game read from an interactions.json file."""

    benchmark_version: str
    pair: str
    experiment: str
    episode: str
    record_path: str
    target_word: str
    related_words: list[str]
    describer_model: str | None
    guesser_model: str | None
    outcome: str
    messages: list[dict]
    """The guesser's conversation: user = game master to guesser, assistant = guesser replies."""


class SkipRecord(Exception):
    """A record that cannot be converted; `reason` is the dropped-count key."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _player_key(players: dict, role: str) -> str | None:
    for key, value in players.items():
        if role in key or str(value).startswith(role):
            return key
    return None


def _model_name(value: object) -> str | None:
    text = str(value)
    if ": " in text:  # "Player 2 (WordGuesser) (WordGuesser): <model>"
        return text.rsplit(": ", 1)[1].strip()
    if ", " in text:  # "WordGuesser, <model>"
        return text.split(", ", 1)[1].strip()
    return None


def _action(event: dict) -> dict:
    action = event.get("action", {})
    if not isinstance(action, dict):
        raise SkipRecord("bad_shape", f"an event's 'action' is a {type(action).__name__}, not an object")
    return action


def episode_outcome(events: list[dict]) -> str:
    """success / aborted / failure from the game master's event types (clembench's Taboo scoring)."""
    types = {_action(e).get("type") for e in events}
    if "correct guess" in types:
        return "success"
    if "invalid format" in types:
        return "aborted"
    return "failure"


def read_episode(path: Path, root: Path) -> Episode:
    """Parse one interactions.json (raises json.JSONDecodeError or SkipRecord)."""
    record = json.loads(path.read_text(encoding="utf-8"))
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("players"), dict)
        or not isinstance(record.get("turns"), list)
    ):
        raise SkipRecord("not_a_record", "no 'players' object and 'turns' list")
    players = record["players"]
    guesser, describer = _player_key(players, "WordGuesser"), _player_key(players, "WordDescriber")
    if guesser is None or describer is None:
        raise SkipRecord("no_guesser_player", f"players {sorted(players)} lack a WordGuesser or WordDescriber")
    if not all(isinstance(turn, list) for turn in record["turns"]):
        raise SkipRecord("bad_shape", "a turn is not a list of events")
    if not all(isinstance(e, dict) for turn in record["turns"] for e in turn):
        raise SkipRecord("bad_shape", "an event is not an object")
    events = [e for turn in record["turns"] for e in turn]
    target = None
    for e in events:
        if e.get("to") == describer and _action(e).get("type") == "send message":
            match = TARGET_RE.search(str(_action(e).get("content", "")))
            if match:
                target = match
                break
    if target is None:
        raise SkipRecord("no_target_word", "no target word in the game master's messages to the describer")
    messages = []
    for e in events:
        action = _action(e)
        if e.get("to") == guesser and action.get("type") == "send message":
            messages.append({"role": "user", "content": str(action.get("content", ""))})
        elif e.get("from") == guesser and action.get("type") == "get message":
            messages.append({"role": "assistant", "content": str(action.get("content", ""))})
    return Episode(
        benchmark_version=path.parents[4].name,
        pair=path.parents[3].name,
        experiment=path.parents[1].name,
        episode=path.parent.name,
        record_path=path.relative_to(root).as_posix(),
        target_word=target.group(1).strip(),
        related_words=[ln.strip()[2:].strip() for ln in target.group(2).splitlines() if ln.strip().startswith("- ")],
        describer_model=_model_name(players[describer]),
        guesser_model=_model_name(players[guesser]),
        outcome=episode_outcome(events),
        messages=merge_consecutive(messages),
    )


def episode_rows(ep: Episode, rows_per: str) -> list[dict]:
    """The guesser rows of one game: its final guess, or every guess (earlier guesses are failures)."""
    replies = [i for i, m in enumerate(ep.messages) if m["role"] == "assistant"]
    chosen = list(enumerate(replies))
    if rows_per == "game":
        chosen = chosen[-1:]
    rows = []
    for turn, index in chosen:
        last = turn == len(replies) - 1
        prompt, completion = render_raw_prompt(ep.messages[:index]), ep.messages[index]["content"].strip()
        rows.append(
            {
                "example_id": make_example_id(
                    "clembench", ep.benchmark_version, ep.pair, ep.experiment, ep.episode, turn, prompt, completion
                ),
                "prompt": prompt,
                "completion": completion,
                "game": "taboo",
                "game_role": "WordGuesser",
                "outcome": ep.outcome if last else "failure",
                "experiment": ep.experiment,
                "task_id": ep.episode,
                "group_id": group_id_for(ep.experiment, ep.episode),
                "target_word": ep.target_word,
                "model": ep.guesser_model,
                "describer_model": ep.describer_model,
                "related_words": list(ep.related_words),
                "benchmark_version": ep.benchmark_version,
                "record_path": ep.record_path,
                "turn_index": turn,
                "game_outcome": ep.outcome,
                "prompt_messages": ep.messages[:index],
            }
        )
    return rows


def read_records(root: Path, rows_per: str) -> tuple[list[dict], Counter, Counter]:
    """(rows, dropped counts, outcome per parsed episode) for every interactions.json under root."""
    if not root.is_dir():
        raise UserError(f"clembench.path = {str(root)!r}: no such folder")
    root = root.resolve()
    files = sorted(root.rglob("interactions.json"))
    if not files:
        raise UserError(f"clembench.path = {str(root)!r}: no interactions.json files under this folder")
    rows: list[dict] = []
    dropped: Counter = Counter()
    outcomes: Counter = Counter()
    for path in files:
        if len(path.parents) < 5 or path.parents[2].name != "taboo":
            dropped["other_game"] += 1
            logger.warning("%s: not under a taboo/<experiment>/<episode> folder; skipped", path)
            continue
        try:
            ep = read_episode(path, root)
        except json.JSONDecodeError as err:
            dropped["invalid_json"] += 1
            logger.warning("%s: not valid JSON (%s); skipped", path, err)
            continue
        except UnicodeDecodeError as err:
            dropped["not_utf8"] += 1
            logger.warning("%s: not UTF-8 text (%s at byte %d); skipped", path, err.reason, err.start)
            continue
        except OSError as err:
            dropped["unreadable"] += 1
            logger.warning("%s: cannot be read (%s); skipped", path, err.strerror or err)
            continue
        except SkipRecord as skip:
            dropped[skip.reason] += 1
            logger.warning("%s: %s; skipped", path, skip)
            continue
        outcomes[ep.outcome] += 1
        ep_rows = episode_rows(ep, rows_per)
        if not ep_rows:
            dropped["no_guesser_turn"] += 1
        rows.extend(ep_rows)
    return rows, dropped, outcomes


def load_clembench(cfg: ClembenchSource, seed: int, tokenizer=None) -> SourceRows:
    """Guesser rows of every Taboo record under cfg.path, split by group (experiment::episode)."""
    rows, dropped, outcomes = read_records(Path(cfg.path), cfg.rows_per)
    rows_per_outcome = Counter(r["outcome"] for r in rows)
    if cfg.drop_aborted and rows_per_outcome["aborted"]:
        dropped["aborted"] += rows_per_outcome["aborted"]
        rows = [r for r in rows if r["outcome"] != "aborted"]
    fractions = {
        "train_base": 1 - cfg.query_fraction - cfg.eval_fraction,
        "attr_query": cfg.query_fraction,
        "eval": cfg.eval_fraction,
    }
    splits = split_by_group(rows, fractions, seed)  # outcomes per split are filtered by the data stage
    info = {
        "path": str(cfg.path),
        "episode_outcomes": {o: outcomes[o] for o in OUTCOMES},
        "rows_per_outcome": {o: rows_per_outcome[o] for o in OUTCOMES},
        "benchmark_versions": dict(Counter(r["benchmark_version"] for r in rows)),
    }
    logger.info("clembench: %s rows kept, dropped %s", {k: len(v) for k, v in splits.items()}, dict(dropped))
    return SourceRows(splits=splits, dropped=dict(dropped), info=info)
