"""The offline demo task: Taboo-WordGuesser-like games generated from the project's own lexicon.

A control experiment: the truth about every pool row is planted, so the comparison of arms can be
checked. Each game's prompt holds 1-3 `CLUE:` lines, each made of two of the target's describing
words; the completion is `GUESS: <word>`. Pool rows are

- `success`: the guess is the word the clues describe (the clean rows);
- `failure` with a wrong guess (planted `wrong_guess`, as in real lost games): outcome x length
  matching sees these, so a matched random arm holds as many of them as the arm it is matched to;
- `success` whose clues describe another word (planted `mislabeled`: the clues of word X with the
  guess sigma(X), sigma a fixed derangement of the targets): the transcript calls them won, so
  outcome x length matching cannot see them; only a ranking that reads what a row teaches can;
- `aborted` (no valid guess; the data stage drops and counts them).

The planted rows' ids are returned in `info["planted"]` (the data manifest keeps them), so the report
can give every arm's share of clean rows. Query and eval games are clean and successful and cycle
through the targets evenly; eval games reuse the pool's targets with clue combinations that never
occur in the pool or the query set. A row's group (`group_id`) is its target word, so a grouped split
(the predictor's folds) never puts games about one word on both sides.

`description_rows` gives the text the tiny base model is pretrained on (describing words -> the word,
in another format than the task), so it arrives knowing its words, as a real pretrained model does.
"""

from __future__ import annotations

import random
from importlib import resources
from typing import Literal

from pydantic import Field, model_validator

from playpen_attribution.core.rows import SourceRows, make_example_id
from playpen_attribution.core.section import Section


class DemoSource(Section):
    """The offline Taboo-WordGuesser-like demo task generated from the project's own lexicon."""

    kind: Literal["demo"] = "demo"
    n_train: int = Field(1500, gt=0, description="Rows in the training pool (train_base), aborted rows included.")
    n_query: int = Field(100, gt=0, description="Successful games in the attribution query set.")
    n_eval: int = Field(200, gt=0, description="Successful games in the eval set (seen targets, new clue sets).")
    failure_fraction: float = Field(0.33, ge=0, lt=1, description="Share of pool rows that carry a wrong guess.")
    aborted_fraction: float = Field(0.03, ge=0, lt=1, description="Share of pool rows from aborted games.")
    mislabeled_fraction: float = Field(
        0.0, ge=0, lt=1,
        description="Share of pool rows that claim a won game but whose clues describe another word (planted, "
        "invisible to outcome x length matching).",
    )
    n_targets: int = Field(120, ge=10, description="How many lexicon words are used as targets.")

    @model_validator(mode="after")
    def _fractions(self) -> DemoSource:
        total = self.failure_fraction + self.aborted_fraction + self.mislabeled_fraction
        if total >= 1:
            raise ValueError(f"failure_fraction + aborted_fraction + mislabeled_fraction = {total:g}: must be < 1")
        return self


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
    """One game. `target` is the word the row claims (its guess when won); its group is that word."""
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
        "group_id": f"demo::{target}",
        "target_word": target,
    }


def derangement(words: list[str], rng: random.Random) -> dict[str, str]:
    """A seeded map word -> another word of the list, no word mapped to itself (a shuffled cycle)."""
    order = list(words)
    rng.shuffle(order)
    return {w: order[(i + 1) % len(order)] for i, w in enumerate(order)}


def generate_demo(cfg: DemoSource, seed: int) -> SourceRows:
    """All three splits of the demo task; aborted pool rows are included here and dropped by the data stage."""
    rng = random.Random(seed)
    lexicon = load_lexicon()
    targets = sorted(lexicon)[: cfg.n_targets] if cfg.n_targets < len(lexicon) else sorted(lexicon)
    rng.shuffle(targets)
    other = derangement(targets, rng)
    seen: set[tuple[str, tuple[str, ...]]] = set()

    def fresh_clues(target: str) -> tuple[str, ...]:
        for _ in range(200):
            clues = _draw_clues(rng, lexicon[target])
            key = (target, tuple(sorted(clues)))
            if key not in seen:
                seen.add(key)
                return clues
        return _draw_clues(rng, lexicon[target])

    pool: list[dict] = []
    planted: dict[str, list[str]] = {"wrong_guess": [], "mislabeled": []}
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
            planted["wrong_guess"].append(pool[-1]["example_id"])
        elif roll < cfg.aborted_fraction + cfg.failure_fraction + cfg.mislabeled_fraction:
            pool.append(_row("train", i, other[target], clues, other[target], "success"))
            planted["mislabeled"].append(pool[-1]["example_id"])
        else:
            pool.append(_row("train", i, target, clues, target, "success"))
    query = [_row("query", i, t, fresh_clues(t), t, "success") for i, t in enumerate(cycle_evenly(targets, cfg.n_query, rng))]
    evals = [_row("eval", i, t, fresh_clues(t), t, "success") for i, t in enumerate(cycle_evenly(targets, cfg.n_eval, rng))]
    return SourceRows(
        splits={"train_base": pool, "attr_query": query, "eval": evals},
        info={"targets": len(targets), "lexicon_words": len(lexicon), "group_key": "group_id = demo::<target word>",
              "planted": {kind: ids for kind, ids in planted.items() if ids}},
    )


def cycle_evenly(targets: list[str], n: int, rng: random.Random) -> list[str]:
    """n targets covering the list evenly (each reshuffled round uses every target once)."""
    out: list[str] = []
    while len(out) < n:
        round_ = list(targets)
        rng.shuffle(round_)
        out += round_
    return out[:n]


def description_rows(seed: int, per_word: int) -> list[dict]:
    """Pretraining rows for the tiny base model: `per_word` rows per lexicon word, each a random 2-6 of its
    describing words (prompt, "... means") and the word (completion). Not the task's format: the
    fine-tune still has to learn to read `CLUE:` lines and answer `GUESS:`."""
    rng = random.Random(seed)
    rows = []
    for word, describing in sorted(load_lexicon().items()):
        for i in range(per_word):
            words = rng.sample(describing, rng.randint(2, min(6, len(describing))))
            rows.append({"example_id": f"describe-{word}-{i}", "prompt": " ".join(words) + " means", "completion": word})
    return rows


def corpus_text(rows: list[dict]) -> list[str]:
    """Texts the tiny tokenizer is trained on: prompts, completions, the role names of rows that keep
    their messages (`prompt_messages`, which a chat template renders as written: `user`, `assistant`),
    the whole lexicon and the pretraining format's own word."""
    lexicon = load_lexicon()
    texts = [r["prompt"] + " " + r["completion"] for r in rows]
    texts += sorted({m["role"] for r in rows for m in r.get("prompt_messages") or []})
    texts += [f"{w}: {' '.join(d)}" for w, d in lexicon.items()]
    texts.append(" ".join(ABORTED_REPLIES) + " means")
    return texts


def lexicon_choice_docs(seed: int = 0, n_choices: int = 4, n_clues: int = 2) -> list[dict]:
    """Multiple-choice items for the shipped lm-eval task `lexicon_choice` (configs/lm_eval_tasks): per
    lexicon word, `n_clues` of its describing words as a `CLUE:` line and `n_choices` candidate words
    (the word and random others); `label` is the word's index among the choices."""
    lexicon = load_lexicon()
    words = sorted(lexicon)
    rng = random.Random(seed)
    docs = []
    for i, word in enumerate(words):
        choices = rng.sample([w for w in words if w != word], n_choices - 1) + [word]
        rng.shuffle(choices)
        docs.append({"id": i, "clues": " ".join(rng.sample(lexicon[word], n_clues)), "choices": choices,
                     "label": choices.index(word)})
    return docs
