"""One Taboo game between a describer model and a guesser model, with repair loops.

Each turn the describer gives a `CLUE:` and the guesser answers `GUESS: <word>`. A reply that breaks
the rules is shown back to its author with the violation named, up to `max_repairs` times; after that
the game is aborted. The clean conversations (repairs left out) are what the guesser rows train on;
every call, repaired or not, is kept in the game record's `calls`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from playpen_attribution.core.rows import group_id_for, make_example_id
from playpen_attribution.synth import rules
from playpen_attribution.synth.client import ChatReply
from playpen_attribution.synth.targets import Target

DESCRIBER_RULES = (
    "You are the describer in a game of Taboo. Help the guesser find the target word by giving clues. "
    "Never use the target word, any of the taboo words, or any form or part of them (no plurals, no "
    "-ing/-ed forms, no compounds such as 'snowman' for 'snow'). Answer with exactly one line of the "
    "form 'CLUE: <your clue>' and nothing else."
)
GUESSER_RULES = (
    "You are the guesser in a game of Taboo. The describer gives you clues about a secret word. "
    "After each clue, answer with exactly one line of the form 'GUESS: <word>', where <word> is your "
    "single-word guess, and nothing else."
)


class Chat(Protocol):
    """What a game needs from a client (ChatClient, or a stand-in in tests)."""

    def complete(self, model: str, messages: list[dict]) -> ChatReply: ...


@dataclass(frozen=True)
class GameSpec:
    """Everything that defines one game; `key` identifies it across runs."""

    index: int
    """Position of the game in the guesser model's schedule."""
    guesser_model: str
    """The model that guesses."""
    describer_model: str
    """The model that gives clues."""
    target: Target
    """The word to describe and its taboo words."""
    experiment: str
    """The experiment name written into rows."""

    @property
    def key(self) -> str:
        """The deterministic game key: guesser model + target + game index."""
        return f"{self.guesser_model}|{self.target.word}|{self.index}"


def _message(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def _describer_opening(target: Target) -> str:
    taboo = ", ".join(target.related) if target.related else "(none)"
    return f"Target word: {target.word}\nTaboo words: {taboo}\nGive your first clue."


class _Game:
    """The mutable state of one game while it is played."""

    def __init__(self, spec: GameSpec, chat: Chat, max_repairs: int) -> None:
        self.spec = spec
        self.chat = chat
        self.max_repairs = max_repairs
        self.calls: list[dict] = []
        self.repairs = {"describer": 0, "guesser": 0}
        self.usage: dict[str, dict[str, int]] = {}

    def ask(self, player: str, model: str, messages: list[dict], parse, turn: int):
        """Ask until `parse(reply)` gives (value, None) or the repairs run out; value or None."""
        working = list(messages)
        for attempt in range(self.max_repairs + 1):
            reply = self.chat.complete(model, working)
            tokens = self.usage.setdefault(model, {"prompt_tokens": 0, "completion_tokens": 0})
            tokens["prompt_tokens"] += reply.prompt_tokens
            tokens["completion_tokens"] += reply.completion_tokens
            value, problem = parse(reply.content)
            self.calls.append({
                "turn": turn, "player": player, "attempt": attempt,
                "reply": reply.content, "problem": problem,
            })
            if problem is None:
                return value
            if attempt == self.max_repairs:
                return None
            self.repairs[player] += 1
            prefix = rules.CLUE_PREFIX if player == "describer" else rules.GUESS_PREFIX
            working += [
                _message("assistant", reply.content),
                _message("user", f"Your reply breaks the rules: {problem}. Answer again with one line "
                                 f"'{prefix} ...' that follows the rules."),
            ]
        return None


def _abort_reason(player: str, max_repairs: int, turn: int) -> str:
    return f"{player} broke the rules {max_repairs + 1} times in turn {turn}"


def play_game(spec: GameSpec, chat: Chat, max_turns: int, max_repairs: int) -> dict:
    """Play one game and return its record (see `runner` for the file it goes to)."""
    started = time.time()
    game = _Game(spec, chat, max_repairs)
    target = spec.target
    max_words = max(1, len(rules.words_of(target.word)))

    def parse_clue(reply: str):
        clue, problem = rules.parse_clue(reply)
        if problem or clue is None:  # parse_clue gives no clue only with a problem
            return clue, problem
        return clue, rules.clue_violation(clue, target.word, target.related)

    def parse_guess(reply: str):
        return rules.parse_guess(reply, max_words=max_words)

    describer = [_message("system", DESCRIBER_RULES), _message("user", _describer_opening(target))]
    guesser = [_message("system", GUESSER_RULES)]
    clues: list[str] = []
    guesses: list[str] = []
    outcome, abort_reason = "failure", None
    for turn in range(1, max_turns + 1):
        clue = game.ask("describer", spec.describer_model, describer, parse_clue, turn)
        if clue is None:
            outcome, abort_reason = "aborted", _abort_reason("describer", max_repairs, turn)
            break
        clues.append(clue)
        describer.append(_message("assistant", f"{rules.CLUE_PREFIX} {clue}"))
        guesser.append(_message("user", f"{rules.CLUE_PREFIX} {clue}"))
        guess = game.ask("guesser", spec.guesser_model, guesser, parse_guess, turn)
        if guess is None:
            outcome, abort_reason = "aborted", _abort_reason("guesser", max_repairs, turn)
            break
        guesses.append(guess)
        guesser.append(_message("assistant", f"{rules.GUESS_PREFIX} {guess}"))
        if rules.is_correct(guess, target.word):
            outcome = "success"
            break
        if turn < max_turns:
            wrong = f"The guesser said '{guess}', which is wrong. Give another clue."
            describer.append(_message("user", wrong))
    return {
        "game_key": spec.key,
        "experiment": spec.experiment,
        "index": spec.index,
        "target_word": target.word,
        "related_words": list(target.related),
        "describer_model": spec.describer_model,
        "guesser_model": spec.guesser_model,
        "outcome": outcome,
        "abort_reason": abort_reason,
        "turns": len(guesses),
        "clues": clues,
        "guesses": guesses,
        "repairs": game.repairs,
        "usage": game.usage,
        "describer_messages": describer,
        "guesser_messages": guesser,
        "calls": game.calls,
        "started_at": started,
        "seconds": round(time.time() - started, 3),
    }


def render_messages(messages: list[dict]) -> str:
    """A conversation as `ROLE: content` blocks joined by blank lines."""
    return "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages)


def guesser_row(record: dict) -> dict | None:
    """The WordGuesser row of a game record: the clean conversation before the last valid guess as
    the prompt, that guess as the completion. None when the guesser never made a valid guess."""
    messages = record["guesser_messages"]
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        return None
    experiment, task_id = record["experiment"], record["game_key"]
    prompt, completion = render_messages(messages[:last]), messages[last]["content"]
    return {
        "example_id": make_example_id("synth", experiment, task_id, prompt, completion),
        "prompt": prompt,
        "completion": completion,
        "game": "taboo",
        "game_role": "WordGuesser",
        "outcome": record["outcome"],
        "experiment": experiment,
        "task_id": task_id,
        "group_id": group_id_for(experiment, rules.normalize_word(record["target_word"])),
        "target_word": record["target_word"],
        "related_words": record["related_words"],
        "describer_model": record["describer_model"],
        "guesser_model": record["guesser_model"],
        "prompt_messages": messages[:last],
    }
