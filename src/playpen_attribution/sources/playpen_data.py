"""playpen-data source: `colab-potsdam/playpen-data` (config `interactions`), one game role.

Upstream rows carry `messages` (list of {role, content}) and `meta` (game, game_role, outcome,
experiment, task_id, model). Rows of the configured game and role whose outcome is not `aborted`
are flattened at the last assistant turn (raw prompt text plus `prompt_messages`). `train` becomes
the training pool; `validation` is split by group (experiment::task_id) into the attribution query set
and the eval set.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import Field

from playpen_attribution.core.rows import SourceRows, group_id_for, make_example_id
from playpen_attribution.core.section import Section
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger
from playpen_attribution.sources.generic import open_dataset
from playpen_attribution.sources.messages import render_raw_prompt, split_at_last_assistant
from playpen_attribution.sources.splitting import split_by_group

OUTCOME_NAMES = {"success": "success", "won": "success", "failure": "failure", "lost": "failure", "aborted": "aborted"}
"""Upstream outcome value -> rows.OUTCOMES."""


class PlaypenDataSource(Section):
    """Games from the playpen-data interactions dataset (hub id or a local copy)."""

    kind: Literal["playpen_data"] = "playpen_data"
    dataset: str = Field(
        "colab-potsdam/playpen-data",
        description="Hub id, or a local folder (save_to_disk DatasetDict, or train/validation JSONL/Parquet files).",
    )
    config_name: str = Field("interactions", description="Hub config name (ignored for a local folder).")
    game: str = Field("taboo", description="Keep rows whose meta.game equals this.")
    game_role: str = Field("WordGuesser", description="Keep rows whose meta.game_role equals this.")
    query_fraction: float = Field(
        0.4, gt=0, lt=1, description="Share of validation groups in attr_query; the rest is eval."
    )


def _keep_indices(metas: list, cfg: PlaypenDataSource, dropped: Counter) -> list[int]:
    keep = []
    for index, meta in enumerate(metas):
        meta = meta or {}
        if meta.get("game") != cfg.game:
            dropped["other_game"] += 1
        elif meta.get("game_role") != cfg.game_role:
            dropped["other_role"] += 1
        elif meta.get("outcome") == "aborted":
            dropped["aborted"] += 1
        else:
            keep.append(index)
    return keep


def _convert(ds, split: str, cfg: PlaypenDataSource, dropped: Counter) -> list[dict]:
    for column in ("messages", "meta"):
        if column not in ds.column_names:
            raise UserError(f"playpen_data.dataset = {cfg.dataset!r}: split {split!r} has no column {column!r}")
    keep = _keep_indices(ds["meta"], cfg, dropped)
    rows = []
    for index, example in zip(keep, ds.select(keep), strict=True):
        where = f"{cfg.dataset} {split} row {index + 1}"  # 1-based in messages; the id keeps the 0-based index
        meta = example["meta"]
        outcome = OUTCOME_NAMES.get(str(meta.get("outcome")))
        if outcome is None:
            raise UserError(f"{where}: meta.outcome {meta.get('outcome')!r} is not one of {sorted(OUTCOME_NAMES)}")
        earlier, completion = split_at_last_assistant(example["messages"], where)
        if not completion:
            dropped["empty_completion"] += 1
            continue
        prompt = render_raw_prompt(earlier)
        experiment, task_id = str(meta.get("experiment")), str(meta.get("task_id"))
        rows.append(
            {
                "example_id": make_example_id("playpen_data", split, index, experiment, task_id, prompt, completion),
                "prompt": prompt,
                "completion": completion,
                "game": cfg.game,
                "game_role": cfg.game_role,
                "outcome": outcome,
                "experiment": experiment,
                "task_id": task_id,
                "group_id": group_id_for(experiment, task_id),
                "target_word": None,
                "model": meta.get("model"),
                "source_split": split,
                "prompt_messages": earlier,
            }
        )
    return rows


def load_playpen_data(cfg: PlaypenDataSource, seed: int, tokenizer=None) -> SourceRows:
    """train -> train_base; validation -> attr_query / eval by group, seeded (`tokenizer` is unused)."""
    data = open_dataset(cfg.dataset, cfg.config_name, streaming=False, field="playpen_data.dataset")
    for split in ("train", "validation"):
        if split not in data:
            raise UserError(f"playpen_data.dataset = {cfg.dataset!r}: no {split!r} split (found {sorted(data)})")
    dropped: Counter = Counter()
    train = _convert(data["train"], "train", cfg, dropped)
    validation = _convert(data["validation"], "validation", cfg, dropped)
    parts = split_by_group(validation, {"attr_query": cfg.query_fraction, "eval": 1 - cfg.query_fraction}, seed)
    splits = {"train_base": train, "attr_query": parts["attr_query"], "eval": parts["eval"]}
    info = {
        "dataset": cfg.dataset,
        "config_name": cfg.config_name,
        "upstream_rows": {split: len(data[split]) for split in ("train", "validation")},
        "rows_per_outcome": dict(Counter(r["outcome"] for rows in splits.values() for r in rows)),
    }
    logger.info("playpen_data: %s rows kept, dropped %s", {k: len(v) for k, v in splits.items()}, dict(dropped))
    return SourceRows(splits=splits, dropped=dict(dropped), info=info)
