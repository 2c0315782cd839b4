"""The offline SmolTalk-shaped demo source (`kind: instruct_demo`): instruction chats about the project's lexicon.

A control experiment like the Taboo demo (`taboo.demo`), shaped like `sources.smoltalk` rows: multi-turn
`prompt_messages` (one to three user/assistant exchanges -- an opening exchange, earlier questions about
other words -- before the final user turn), the raw rendered `prompt`, `completion` = the last assistant
turn, and SmolTalk's metadata columns `category`, `difficulty`, `quality`, `reward_model_score`. Categories
are task types over the lexicon (`CATEGORIES`): `word-guessing` (clues -> `GUESS: <word>`),
`multiple-choice` (clues and four options -> `GUESS: <word>`) and `description` (a word -> `CLUE:` lines).

The truth is planted. Clean rows teach the task. Noisy rows carry it wrong in every assistant turn:
`wrong_answer` (the guess is sigma(word), sigma one fixed derangement of the words, `confusion`, as a
systematically confused assistant would answer; a description gives sigma(word)'s clues) and `off_task`
(chit-chat instead of an answer). Multiple-choice options, and the lm-eval task's choices, always hold the
word and sigma(word), so the confusion can be seen there. `quality` is drawn from a clean or a noisy
distribution over SmolTalk's five levels, with a `quality_noise` share of rows drawn from the other one
(an annotator's mistakes), and `reward_model_score` is the quality level plus Gaussian noise
(`reward_noise`), so label_k and metadata_k are reasonable but imperfect baselines. The planted ids are
in `info["planted"]`.

Clue combinations (a word and the set of describing words its clues use) are split once, by a hash that
no seed changes (`held_out`): pool rows -- of any seed, so another seed's rows (e.g. a candidates split)
are new rows that never hold an eval combination -- use only the others; attr_query, eval and the
shipped lm-eval task `instruct_guess` (`instruct_guess_docs`) use only held-out ones, query and eval
never the same one. Query and eval rows are clean guessing chats (word-guessing, multiple-choice) that
cycle through the words evenly. A row's group is its final turn's word (`instruct::<word>`), so grouped
folds never split a word; ids include the seed.
"""

from __future__ import annotations

import hashlib
import random
from itertools import combinations
from typing import Literal

from pydantic import Field, model_validator

from playpen_attribution.core.rows import SourceRows, make_example_id
from playpen_attribution.core.section import Section
from playpen_attribution.errors import UserError
from playpen_attribution.sources.messages import render_raw_prompt
from playpen_attribution.taboo.demo import cycle_evenly, derangement, load_lexicon


class InstructDemoSource(Section):
    """Offline SmolTalk-shaped instruction chats about the demo lexicon, with planted noisy rows."""

    kind: Literal["instruct_demo"] = "instruct_demo"
    n_train: int = Field(600, gt=0, description="Rows in the training pool (train_base).")
    n_query: int = Field(80, gt=0, description="Clean guessing chats in attr_query (held-out clue combinations).")
    n_eval: int = Field(160, gt=0, description="Clean guessing chats in eval (held-out combinations, none of the query's).")
    wrong_fraction: float = Field(0.3, ge=0, lt=1, description="Share of pool rows whose assistant answers wrongly "
                                  "in every turn (planted wrong_answer).")
    off_task_fraction: float = Field(0.15, ge=0, lt=1, description="Share of pool rows whose assistant chats off "
                                     "task instead of answering (planted off_task).")
    quality_noise: float = Field(0.2, ge=0, le=1, description="Share of rows whose quality label is drawn from the "
                                 "other kind's distribution (clean rows rated low, noisy rows rated high).")
    reward_noise: float = Field(1.0, ge=0, description="Standard deviation of the Gaussian noise added to the quality "
                                "level (0-4) to give reward_model_score.")

    @model_validator(mode="after")
    def _fractions(self) -> InstructDemoSource:
        if self.wrong_fraction + self.off_task_fraction >= 1:
            raise ValueError(f"wrong_fraction + off_task_fraction = {self.wrong_fraction + self.off_task_fraction:g}:"
                             " must be < 1")
        return self


CATEGORIES = {"word-guessing": 0.45, "multiple-choice": 0.3, "description": 0.25}
"""Pool category -> share; query and eval use the two guessing categories only (`GUESSING`)."""
GUESSING = {"word-guessing": 0.6, "multiple-choice": 0.4}
QUALITY_LEVELS = ("very poor", "poor", "average", "good", "excellent")
"""SmolTalk's (smol-magpie-ultra's) quality labels, worst first; the level index is the reward's mean."""
QUALITY = {"clean": (0.0, 0.0, 0.1, 0.45, 0.45), "noisy": (0.35, 0.4, 0.25, 0.0, 0.0)}
"""Quality distribution over QUALITY_LEVELS of each kind of row."""

GUESS_ASKS = ("Which word do these clues describe?", "Guess the word.")
CHOICE_ASK = "Which word is it: {options}?"
DESCRIBE_ASK = "Give clues for {word}."
OPENINGS = (("Hello! Can you help with a word puzzle?", "Of course."), ("Let us play a word game.", "Sure, I am ready."),
            ("I have riddles for you.", "Happy to help."))
OFF_TASK = ("I am not sure.", "Let us talk about the weather.", "Sorry, I can not help.", "I would rather tell a story.")
CONFUSION_SEED = 0
"""Seed of the one derangement (`confusion`) every wrong_answer row follows, whatever the data seed."""
EXCHANGES = {1: 0.5, 2: 0.3, 3: 0.2}
"""Earlier exchanges before the final user turn -> share of rows (an opening exchange counts as one)."""


def held_out(word: str, describing: tuple[str, ...]) -> bool:
    """Whether a clue combination (a word, the describing words its clues use) is reserved for query, eval
    and the benchmark: a fixed hash, the same for every seed (about one in three combinations)."""
    key = f"{word}|{' '.join(sorted(describing))}".encode()
    return hashlib.sha1(key).digest()[0] % 3 == 0


def clue_sets(lexicon: dict[str, list[str]], reserved: bool) -> dict[str, dict[int, list[tuple[str, ...]]]]:
    """word -> clue count (1-3) -> the describing-word sets of that size on this side of `held_out`, only
    sets that describe no other word (so a right answer is one word, and a wrong one is wrong)."""
    def unique(word: str, chosen: tuple[str, ...]) -> bool:
        return not any(set(chosen) <= set(d) for w, d in lexicon.items() if w != word)

    out = {}
    for word, describing in lexicon.items():
        sizes = {n: [c for c in combinations(sorted(describing), 2 * n)
                     if held_out(word, c) == reserved and unique(word, c)] for n in (1, 2, 3)}
        out[word] = {n: sets for n, sets in sizes.items() if sets}
    return out


def _clues(rng: random.Random, sets: dict[int, list[tuple[str, ...]]], avoid: set | None = None,
           word: str = "") -> list[str]:
    """1-3 clues (`CLUE:` pairs) from one describing-word set of `word`; with `avoid`, one not in it (then added)."""
    if avoid is not None:
        sets = {n: [c for c in group if c not in avoid] for n, group in sets.items()}
        sets = {n: group for n, group in sets.items() if group}
        if not sets:
            raise UserError(f"data.source: n_query + n_eval ask for more questions about {word!r} than it has "
                            "held-out clue sets; lower n_query or n_eval")
    chosen = rng.choice(sets[rng.choice(sorted(sets))])
    if avoid is not None:
        avoid.add(chosen)
    words = rng.sample(chosen, len(chosen))
    return [" ".join(words[i:i + 2]) for i in range(0, len(words), 2)]


def _clue_lines(clues: list[str]) -> str:
    return "\n".join(f"CLUE: {c}" for c in clues)


def _exchange(rng, category: str, word: str, sets, words: list[str], kind: str, other: dict[str, str],
              avoid: set | None = None) -> tuple[str, str]:
    """(user turn, assistant reply) of one question about `word`, answered as a `kind` row answers."""
    if category == "description":
        ask = DESCRIBE_ASK.format(word=word)
        said = word if kind != "wrong_answer" else other[word]
        answer = _clue_lines(_clues(rng, sets[said]))
    else:
        clues = _clue_lines(_clues(rng, sets[word], avoid, word))
        if category == "word-guessing":
            ask, guess = f"{rng.choice(GUESS_ASKS)}\n{clues}", other[word] if kind == "wrong_answer" else word
        else:
            options = _options(rng, word, words, other)
            ask = f"{CHOICE_ASK.format(options=', '.join(options[:-1]) + ' or ' + options[-1])}\n{clues}"
            guess = other[word] if kind == "wrong_answer" else word
        answer = f"GUESS: {guess}"
    return ask, rng.choice(OFF_TASK) if kind == "off_task" else answer


def _options(rng: random.Random, word: str, words: list[str], other: dict[str, str], n: int = 4) -> list[str]:
    """`n` answer options in random order: the word, the word the confused assistant says (`confusion`) and
    random others."""
    options = [word, other[word]] + rng.sample([w for w in words if w not in (word, other[word])], n - 2)
    rng.shuffle(options)
    return options


def confusion(words: list[str]) -> dict[str, str]:
    """word -> the word a wrong_answer row names instead: one fixed derangement (seed `CONFUSION_SEED`), the
    same for every data seed, as a systematically confused assistant would be."""
    return derangement(sorted(words), random.Random(CONFUSION_SEED))


def _conversation(rng, category: str, target: str, sets, words, kind: str, other, avoid=None) -> list[dict]:
    """Every message: 1-3 earlier exchanges (maybe an opening, then questions about other words), the final
    user turn about `target` and its assistant reply."""
    messages = []
    earlier = rng.choices(list(EXCHANGES), weights=list(EXCHANGES.values()))[0]
    if rng.random() < 0.5:
        user, reply = rng.choice(OPENINGS)
        messages += [{"role": "user", "content": user},
                     {"role": "assistant", "content": rng.choice(OFF_TASK) if kind == "off_task" else reply}]
        earlier -= 1
    for _ in range(earlier):
        ask, reply = _exchange(rng, category, rng.choice([w for w in words if w != target]), sets, words, kind, other)
        messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": reply}]
    ask, reply = _exchange(rng, category, target, sets, words, kind, other, avoid)
    return messages + [{"role": "user", "content": ask}, {"role": "assistant", "content": reply}]


def _difficulty(category: str, final_user: str) -> str:
    """From the final question: more clues (and options) make an easier question; a description is medium."""
    clues = final_user.count("CLUE:")
    if category == "description":
        return "medium"
    if category == "multiple-choice":
        return "very easy" if clues > 1 else "easy"
    return ("hard", "medium", "easy")[clues - 1]


def _row(cfg: InstructDemoSource, rng, seed: int, split: str, index: int, category: str, target: str,
         messages: list[dict], kind: str) -> dict:
    earlier, completion = messages[:-1], messages[-1]["content"]
    prompt = render_raw_prompt(earlier)
    rated = kind if rng.random() >= cfg.quality_noise else ("noisy" if kind == "clean" else "clean")
    quality = rng.choices(QUALITY_LEVELS, weights=QUALITY["clean" if rated == "clean" else "noisy"])[0]
    reward = QUALITY_LEVELS.index(quality) + rng.gauss(0.0, cfg.reward_noise)
    return {
        "example_id": make_example_id("instruct_demo", seed, split, index, prompt, completion),
        "prompt": prompt,
        "completion": completion,
        "game": "instruct_demo",
        "game_role": "assistant",
        "outcome": "success",
        "experiment": "instruct_demo",
        "task_id": f"{split}-{index:05d}",
        "group_id": f"instruct::{target}",
        "target_word": target,
        "category": category,
        "difficulty": _difficulty(category, earlier[-1]["content"]),
        "quality": quality,
        "reward_model_score": round(reward, 4),
        "prompt_messages": earlier,
    }


def generate_instruct_demo(cfg: InstructDemoSource, seed: int) -> SourceRows:
    """All three splits: the pool with its planted noisy rows, clean held-out query and eval chats."""
    rng = random.Random(seed)
    lexicon = load_lexicon()
    words = sorted(lexicon)
    pool_sets, held_sets = clue_sets(lexicon, reserved=False), clue_sets(lexicon, reserved=True)
    other = confusion(words)
    pool: list[dict] = []
    planted: dict[str, list[str]] = {"wrong_answer": [], "off_task": []}
    for i, target in enumerate(cycle_evenly(words, cfg.n_train, rng)):
        category = rng.choices(list(CATEGORIES), weights=list(CATEGORIES.values()))[0]
        roll = rng.random()
        kind = "wrong_answer" if roll < cfg.wrong_fraction else (
            "off_task" if roll < cfg.wrong_fraction + cfg.off_task_fraction else "clean")
        messages = _conversation(rng, category, target, pool_sets, words, kind, other)
        pool.append(_row(cfg, rng, seed, "train", i, category, target, messages, kind))
        if kind != "clean":
            planted[kind].append(pool[-1]["example_id"])
    used: set = set()

    def clean_chats(split: str, n: int) -> list[dict]:
        rows = []
        for i, target in enumerate(cycle_evenly(words, n, rng)):
            category = rng.choices(list(GUESSING), weights=list(GUESSING.values()))[0]
            messages = _conversation(rng, category, target, held_sets, words, "clean", other, avoid=used)
            rows.append(_row(cfg, rng, seed, split, i, category, target, messages, "clean"))
        return rows

    splits = {"train_base": pool, "attr_query": clean_chats("query", cfg.n_query), "eval": clean_chats("eval", cfg.n_eval)}
    info = {"words": len(words), "group_key": "group_id = instruct::<final turn's word>",
            "held_out_rule": "sha1(word|sorted describing words)[0] % 4 == 0: query, eval and benchmark only",
            "planted": {kind: ids for kind, ids in planted.items() if ids}}
    return SourceRows(splits=splits, info=info)


def instruct_guess_docs(per_word: int = 2, n_choices: int = 4, seed: int = 0) -> list[dict]:
    """Items of the shipped lm-eval task `instruct_guess` (configs/lm_eval_tasks): per lexicon word,
    `per_word` word-guessing questions (the first `GUESS_ASKS` phrasing, held-out clue combinations, so
    never a pool row's) as a single user turn, and `n_choices` answers `GUESS: <word>` (the word, the word
    the confused assistant names instead, random others); `label` is the word's index among the choices."""
    rng = random.Random(seed)
    lexicon = load_lexicon()
    words = sorted(lexicon)
    held, other = clue_sets(lexicon, reserved=True), confusion(words)
    docs: list[dict] = []
    for word in words:
        used: set = set()
        for _ in range(per_word):
            question = f"{GUESS_ASKS[0]}\n{_clue_lines(_clues(rng, held[word], used, word))}"
            choices = _options(rng, word, words, other, n_choices)
            docs.append({"id": len(docs), "question": question, "choices": [f"GUESS: {c}" for c in choices],
                         "label": choices.index(word)})
    return docs
