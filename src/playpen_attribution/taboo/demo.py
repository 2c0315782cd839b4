"""The offline demo task: Taboo-WordGuesser-like games generated from the project's own lexicon.

Each game's prompt holds 1-3 `CLUE:` lines, each made of two of the target's describing words; the
completion is `GUESS: <word>`. Pool rows are `success` (the target), `failure` (a wrong guess: the
planted harmful rows, as in real lost games) or `aborted` (no valid guess; the data stage drops and
counts them). Query and eval games are successful; eval games reuse targets seen in training with clue
combinations that never occur in the pool or the query set.
"""

from __future__ import annotations

import random
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from playpen_attribution.core.rows import SourceRows, group_id_for, make_example_id


class DemoSource(BaseModel):
    """The offline Taboo-WordGuesser-like demo task generated from the project's own lexicon."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["demo"] = "demo"
    n_train: int = Field(1500, gt=0, description="Rows in the training pool (train_base), aborted rows included.")
    n_query: int = Field(100, gt=0, description="Successful games in the attribution query set.")
    n_eval: int = Field(200, gt=0, description="Successful games in the eval set (seen targets, new clue sets).")
    failure_fraction: float = Field(0.33, ge=0, lt=1, description="Share of pool rows that carry a wrong guess.")
    aborted_fraction: float = Field(0.03, ge=0, lt=1, description="Share of pool rows from aborted games.")
    n_targets: int = Field(120, ge=10, description="How many lexicon words are used as targets.")


INSTRUCTION = "You are the guesser in a game of Taboo. Read the clues and answer with GUESS: and one word."
ABORTED_REPLIES = (
    "I am not sure what the word is.",
    "Could you give me another clue please?",
    "The answer might be something else entirely.",
)


def load_lexicon() -> dict[str, list[str]]:
    """target word -> describing words, from the packaged `lexicon.txt`."""
    text = resources.files("playpen_attribution.taboo").joinpath("lexicon.txt").read_text()
    lexicon = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        word, _, desc = line.partition(":")
        lexicon[word.strip()] = desc.split()
    return lexicon


def render_prompt(clues: list[str]) -> str:
    """The guesser's view in the playpen raw format: `ROLE: content` text."""
    clue_lines = "\n".join(f"CLUE: {c}" for c in clues)
    return f"USER: {INSTRUCTION}\n{clue_lines}\nASSISTANT:"


def _draw_clues(rng: random.Random, describing: list[str]) -> tuple[str, ...]:
    n_clues = rng.randint(1, 3)
    words = rng.sample(describing, min(len(describing), 2 * n_clues))
    return tuple(" ".join(words[i : i + 2]) for i in range(0, len(words), 2))


def _row(split: str, index: int, target: str, clues: tuple[str, ...], guess: str | None, outcome: str) -> dict:
    task_id = f"{split}-{index:05d}"
    completion = f"GUESS: {guess}" if guess is not None else ""
    return {
        "example_id": make_example_id("demo", split, index, target, "|".join(clues), completion, outcome),
        "prompt": render_prompt(list(clues)),
        "completion": completion,
        "game": "taboo",
        "game_role": "WordGuesser",
        "outcome": outcome,
        "experiment": f"demo_{len(clues)}_clues",
        "task_id": task_id,
        "group_id": group_id_for(f"demo_{len(clues)}_clues", task_id),
        "target_word": target,
    }


def generate_demo(cfg: DemoSource, seed: int) -> SourceRows:
    """All three splits of the demo task; aborted pool rows are included here and dropped by the data stage."""
    rng = random.Random(seed)
    lexicon = load_lexicon()
    targets = sorted(lexicon)[: cfg.n_targets] if cfg.n_targets < len(lexicon) else sorted(lexicon)
    rng.shuffle(targets)
    seen: set[tuple[str, tuple[str, ...]]] = set()

    def fresh_clues(target: str) -> tuple[str, ...]:
        for _ in range(200):
            clues = _draw_clues(rng, lexicon[target])
            key = (target, tuple(sorted(clues)))
            if key not in seen:
                seen.add(key)
                return clues
        return _draw_clues(rng, lexicon[target])

    pool = []
    for i in range(cfg.n_train):
        target = targets[i % len(targets)]
        clues = _draw_clues(rng, lexicon[target])
        seen.add((target, tuple(sorted(clues))))
        roll = rng.random()
        if roll < cfg.aborted_fraction:
            pool.append(_row("train", i, target, clues, None, "aborted") | {"completion": rng.choice(ABORTED_REPLIES)})
        elif roll < cfg.aborted_fraction + cfg.failure_fraction:
            wrong = rng.choice([t for t in targets if t != target])
            pool.append(_row("train", i, target, clues, wrong, "failure"))
        else:
            pool.append(_row("train", i, target, clues, target, "success"))
    query = [_row("query", i, t, fresh_clues(t), t, "success") for i, t in
             enumerate(rng.choice(targets) for _ in range(cfg.n_query))]
    evals = [_row("eval", i, t, fresh_clues(t), t, "success") for i, t in
             enumerate(rng.choice(targets) for _ in range(cfg.n_eval))]
    return SourceRows(
        splits={"train_base": pool, "attr_query": query, "eval": evals},
        info={"targets": len(targets), "lexicon_words": len(lexicon)},
    )


def corpus_text(rows: list[dict]) -> list[str]:
    """Texts the tiny tokenizer is trained on: prompts, completions, and the whole lexicon."""
    lexicon = load_lexicon()
    texts = [r["prompt"] + " " + r["completion"] for r in rows]
    texts += [f"{w}: {' '.join(d)}" for w, d in lexicon.items()]
    texts.append(" ".join(ABORTED_REPLIES))
    return texts
