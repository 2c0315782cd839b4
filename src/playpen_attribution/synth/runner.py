"""Schedule the games of a synth run, resume an interrupted one, write records as games end.

A game is finished when its record is in games.jsonl; its row is derived from that record, so after
a kill between the two writes a resumed run only re-derives the missing row. Games that were being
played when the run stopped are played again. summary.json is rewritten after every game. One run
writes an output folder at a time (its lock in `.locks/` beside it): a second one waits, then resumes.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from tqdm import tqdm

from playpen_attribution.core import atomic
from playpen_attribution.core.locking import lock_path, locked
from playpen_attribution.core.yaml_config import dump, read_mapping
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger
from playpen_attribution.synth import store
from playpen_attribution.synth.config import SynthConfig, config_mismatches
from playpen_attribution.synth.game import Chat, GameSpec, guesser_row, play_game
from playpen_attribution.synth.targets import Target, load_targets


def plan_games(cfg: SynthConfig, targets: list[Target]) -> list[GameSpec]:
    """Every game of the run: the targets shuffled by the seed, then for each guesser model game i
    plays target i (cycling when there are more games than targets)."""
    order = list(targets)
    random.Random(cfg.seed).shuffle(order)
    return [
        GameSpec(i, model, cfg.describer_model, order[i % len(order)], cfg.experiment)
        for model in cfg.guesser_models
        for i in range(cfg.games_per_guesser)
    ]


def _check_folder_config(cfg: SynthConfig) -> None:
    """Save the config on the first run; on a resume refuse a different game-defining config."""
    path = cfg.output_dir / store.CONFIG_FILE
    if not path.exists():
        atomic.write_text(path, dump(cfg))
        return
    saved = read_mapping(path, "synth config") or {}
    mismatches = config_mismatches(saved, cfg)
    if mismatches:
        raise UserError(
            f"{path}: this folder holds games of a different synth config ({'; '.join(mismatches)}); "
            "use another --output-dir or the same settings"
        )


def _add_usage(total: dict, usage: dict) -> None:
    for model, tokens in usage.items():
        slot = total.setdefault(model, {"prompt_tokens": 0, "completion_tokens": 0})
        for name in slot:
            slot[name] += tokens.get(name, 0)


def _stats(records: list[dict]) -> dict:
    """Outcome counts, success rate, mean turns, repairs and usage of some game records."""
    outcomes = {"success": 0, "failure": 0, "aborted": 0}
    repairs = {"describer": 0, "guesser": 0}
    usage: dict = {}
    for record in records:
        outcomes[record["outcome"]] += 1
        for player in repairs:
            repairs[player] += record["repairs"].get(player, 0)
        _add_usage(usage, record["usage"])
    n = len(records)
    return {
        "games": n,
        "success_rate": outcomes["success"] / n if n else None,
        "mean_turns": sum(r["turns"] for r in records) / n if n else None,
        "outcomes": outcomes,
        "aborts": outcomes["aborted"],
        "repairs": repairs,
        "usage_tokens": usage,
    }


def summarize(records: list[dict], rows: int, planned: int) -> dict:
    """The summary.json content: overall stats, stats per guesser model, row and game counts."""
    models = sorted({r["guesser_model"] for r in records})
    return {
        **_stats(records),
        "rows": rows,
        "planned_games": planned,
        "per_guesser_model": {m: _stats([r for r in records if r["guesser_model"] == m]) for m in models},
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


class _Writer:
    """Appends finished games and their rows, and keeps the summary current; thread-safe."""

    def __init__(self, output_dir: Path, records: list[dict], rows: int, planned: int) -> None:
        self.output_dir = output_dir
        self.games = store.JsonlAppender(output_dir / store.GAMES_FILE)
        self.rows_file = store.JsonlAppender(output_dir / store.ROWS_FILE)
        self.records = records
        self.rows = rows
        self.planned = planned
        self._lock = threading.Lock()

    def add(self, record: dict) -> None:
        """Make one finished game durable: record first, then its row, then the summary."""
        row = guesser_row(record)
        with self._lock:
            self.games.append(record)
            if row is not None:
                self.rows_file.append(row)
                self.rows += 1
            self.records.append(record)
            self.write_summary()

    def write_summary(self) -> dict:
        summary = summarize(self.records, self.rows, self.planned)
        store.write_json_atomic(self.output_dir / store.SUMMARY_FILE, summary)
        return summary


def _resume(cfg: SynthConfig, planned: int) -> _Writer:
    """Repair the files after a crash, add rows missing for recorded games, and return the writer."""
    records, cut_games = store.repair_jsonl(cfg.output_dir / store.GAMES_FILE)
    rows, cut_rows = store.repair_jsonl(cfg.output_dir / store.ROWS_FILE)
    if cut_games or cut_rows:
        logger.warning("dropped a cut-off last line left by an interrupted run (it is rewritten)")
    unique: dict[str, dict] = {}
    for record in records:
        unique.setdefault(record["game_key"], record)
    if len(unique) != len(records):
        raise UserError(f"{cfg.output_dir / store.GAMES_FILE}: a game key appears more than once")
    writer = _Writer(cfg.output_dir, list(unique.values()), len(rows), planned)
    have_rows = {row["task_id"] for row in rows}
    for record in writer.records:
        row = guesser_row(record)
        if row is not None and row["task_id"] not in have_rows:
            writer.rows_file.append(row)
            writer.rows += 1
    return writer


def _play_all(todo: list[GameSpec], cfg: SynthConfig, chat: Chat, writer: _Writer) -> None:
    """Play games in a thread pool, writing each as it ends; on a failed call stop scheduling, let
    running games finish, then raise that error."""
    done_before = len(writer.records)
    bar = tqdm(total=done_before + len(todo), initial=done_before, desc="synth games", unit="game")
    pending = iter(todo)
    running: dict[Future, GameSpec] = {}
    failure: BaseException | None = None

    def play(spec: GameSpec) -> None:
        writer.add(play_game(spec, chat, cfg.max_turns, cfg.max_repairs))

    with ThreadPoolExecutor(max_workers=cfg.concurrency) as pool:
        try:
            while True:
                while failure is None and len(running) < cfg.concurrency:
                    spec = next(pending, None)
                    if spec is None:
                        break
                    running[pool.submit(play, spec)] = spec
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    spec = running.pop(future)
                    if future.exception() is not None:
                        logger.error("game %s stopped: %s", spec.key, future.exception())
                        failure = failure or future.exception()
                        continue
                    records = list(writer.records)
                    wins = sum(r["outcome"] == "success" for r in records)
                    bar.set_postfix(success_rate=f"{wins / len(records):.2f}", refresh=False)
                    bar.update(1)
        finally:
            bar.close()
    if failure is not None:
        raise failure


def _save_hf_dataset(output_dir: Path) -> Path:
    """Write the rows as a Hugging Face dataset folder (replacing an older one)."""
    from datasets import Dataset  # a slow import, only paid when asked for

    rows = store.load_synth_rows(output_dir)
    target = output_dir / store.HF_DATASET_DIR
    with atomic.building(target, replace=True) as part:
        Dataset.from_list(rows).save_to_disk(str(part))
    return target


def run_synth(cfg: SynthConfig, chat: Chat) -> dict:
    """Play every planned game not yet in cfg.output_dir and return the summary."""
    targets = load_targets(cfg.targets_file, cfg.exclude_words_file)
    plan = plan_games(cfg, targets)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    with locked(lock_path(cfg.output_dir), f"synth output {cfg.output_dir}"):  # a second run waits, then resumes
        return _run_locked(cfg, chat, targets, plan)


def _run_locked(cfg: SynthConfig, chat: Chat, targets: list[Target], plan: list[GameSpec]) -> dict:
    _check_folder_config(cfg)
    writer = _resume(cfg, len(plan))
    finished = {r["game_key"] for r in writer.records}
    todo = [spec for spec in plan if spec.key not in finished]
    logger.info(
        "synth: %d targets, %d games planned, %d already in %s, %d to play",
        len(targets), len(plan), len(finished), cfg.output_dir, len(todo),
    )
    try:
        _play_all(todo, cfg, chat, writer)
    finally:
        summary = writer.write_summary()
    if cfg.save_hf_dataset:
        logger.info("synth: wrote Hugging Face dataset to %s", _save_hf_dataset(cfg.output_dir))
    return summary
