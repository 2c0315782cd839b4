"""SmolTalk source: `HuggingFaceTB/smoltalk` (configs such as `all`, `smol-magpie-ultra`) or the
separate `HuggingFaceTB/smol-magpie-ultra` dataset, streamed so the full dataset is never downloaded.

A bounded number of rows (`scan_rows`) is read from each split's stream; chats are flattened at the
last assistant turn (raw prompt text plus `prompt_messages`); rows over the token cap, measured with
`tokenization.tokenize_row` under the run's `tokenize.format`, are dropped and counted. The pool is sampled from the
pool split stratified by category; the query and eval sets come from the query/eval split, their
groups (category, or category::difficulty) disjoint. `categories` keeps only rows of those categories
(the category pools of the published SmolTalk runs) in every split, counting the rest as
`other_category`; there is no quality or difficulty filtering: the metadata columns are kept so later
stages can be validated against them. With a `query:` section
(`sources.query.QueryBuilder`) attr_query is instead drawn from the pool split's stream by metadata
filters and category quotas, and the pool is sampled from the rows left, so the two never share a
row; eval then takes all its rows from the query/eval split; the manifest records the filters and counts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import islice
from typing import Literal

from pydantic import Field

from playpen_attribution.core.rows import SourceRows, make_example_id
from playpen_attribution.core.section import Section
from playpen_attribution.core.tokenization import TokenizeConfig, tokenize_row
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger
from playpen_attribution.sources.generic import open_dataset
from playpen_attribution.sources.messages import render_raw_prompt, split_at_last_assistant
from playpen_attribution.sources.query import QueryBuilder, build_query
from playpen_attribution.sources.splitting import sample_rows, split_by_group

TokenizeFormat = Literal["raw", "chat_template"]

METADATA_COLUMNS = ("category", "difficulty", "quality", "reward_model_score", "conversation_tokens", "source")
"""Upstream columns kept on each row when the dataset has them."""


class SmolTalkSource(Section):
    """Instruction chats from SmolTalk / smol-magpie-ultra, streamed and sampled."""

    kind: Literal["smoltalk"] = "smoltalk"
    dataset: str = Field(
        "HuggingFaceTB/smoltalk",
        description="Hub id (or HuggingFaceTB/smol-magpie-ultra), or a local folder of per-split JSONL/Parquet files.",
    )
    config_name: str | None = Field("smol-magpie-ultra", description="Hub config name (ignored for a local folder).")
    pool_split: str = Field("train", description="Split the training pool is sampled from.")
    query_eval_split: str = Field("test", description="Split the query and eval sets are sampled from.")
    scan_rows: int = Field(50_000, gt=0, description="Rows read from the start of each split's stream.")
    pool_size: int = Field(8000, gt=0, description="Rows in the pool, sampled stratified by category.")
    query_size: int = Field(500, gt=0, description="Rows in attr_query.")
    eval_size: int = Field(500, gt=0, description="Rows in eval (groups disjoint from attr_query).")
    token_cap: int | None = Field(
        2048, gt=0, description="Drop rows longer than this many tokens (prompt + completion + EOS); null = no cap."
    )
    group_by: Literal["category", "category::difficulty"] = Field(
        "category", description="Group key that keeps attr_query and eval apart."
    )
    query: QueryBuilder | None = Field(
        None, description="Draw attr_query from the pool split by metadata filters and quotas (disjoint from the "
        "pool by construction); null = from query_eval_split, groups disjoint from eval.",
    )
    categories: list[str] | None = Field(
        None, min_length=1, description="Keep only rows of these categories in every split (e.g. [reasoning, "
        "planning]); the others are counted as dropped (other_category); null = every category.",
    )


def _category(row: dict) -> str:
    """The stratification key: `category`, or `source` for mixes (such as `all`) that have none."""
    return str(row.get("category", row.get("source")))


def _convert(example: dict, split: str, index: int, cfg: SmolTalkSource) -> dict | None:
    where = f"{cfg.dataset} {split} row {index + 1}"  # 1-based in messages; id and task_id keep the 0-based index
    column = "messages" if "messages" in example else "conversation" if "conversation" in example else None
    if column is None:
        raise UserError(f"smoltalk.dataset = {cfg.dataset!r}: {split} rows have no 'messages' column")
    earlier, completion = split_at_last_assistant(example[column], where)
    if not completion:
        return None
    prompt = render_raw_prompt(earlier)
    meta = {k: example[k] for k in METADATA_COLUMNS if k in example}
    if cfg.group_by == "category::difficulty" and "difficulty" not in example:
        raise UserError(f"smoltalk.group_by = {cfg.group_by!r}: {where} has no 'difficulty' column")
    group = _category(meta) if cfg.group_by == "category" else f"{_category(meta)}::{meta['difficulty']}"
    return {
        "example_id": make_example_id("smoltalk", cfg.dataset, cfg.config_name, split, index, prompt, completion),
        "prompt": prompt,
        "completion": completion,
        "game": "smoltalk",
        "game_role": "assistant",
        "outcome": "success",
        "experiment": cfg.config_name or "default",
        "task_id": f"{split}:{index}",
        "group_id": group,
        "target_word": None,
        **meta,
        "source_split": split,
        "prompt_messages": earlier,
    }


NO_TRUNCATION = 10**9
"""A max_length no row reaches, so `tokenize_row` gives each row's full length."""


def token_lengths(rows: list[dict], tokenizer, fmt: TokenizeFormat) -> list[int]:
    """Untruncated length of each row under the run's tokenization rule (`tokenize_row`, format `fmt`)."""
    rule = TokenizeConfig(format=fmt, max_length=NO_TRUNCATION)
    return [len(tokenize_row(tokenizer, row, rule)["input_ids"]) for row in rows]


def _scan(stream, split: str, cfg: SmolTalkSource, tokenizer, fmt: TokenizeFormat, dropped: Counter) -> list[dict]:
    rows = []
    for index, example in enumerate(islice(stream, cfg.scan_rows)):
        row = _convert(example, split, index, cfg)
        if row is None:
            dropped["empty_completion"] += 1
        elif cfg.categories is not None and _category(row) not in cfg.categories:
            dropped["other_category"] += 1
        else:
            rows.append(row)
    if cfg.token_cap is not None and rows:
        lengths = token_lengths(rows, tokenizer, fmt)
        over = sum(n > cfg.token_cap for n in lengths)
        if over:
            dropped["over_token_cap"] += over
        rows = [r for r, n in zip(rows, lengths, strict=True) if n <= cfg.token_cap]
    return rows


def stratified_sample(rows: list[dict], n: int, seed: int) -> list[dict]:
    """`n` rows with each category's share kept (largest remainder), seeded, in original order."""
    if n >= len(rows):
        return list(rows)
    by_category: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_category[_category(row)].append(i)
    exact = {c: n * len(idx) / len(rows) for c, idx in sorted(by_category.items())}
    quota = {c: int(x) for c, x in exact.items()}
    for c in sorted(exact, key=lambda c: (quota[c] - exact[c], c))[: n - sum(quota.values())]:
        quota[c] += 1
    picked: list[int] = []
    for c, idx in sorted(by_category.items()):
        picked += sample_rows(idx, quota[c], seed)
    return [rows[i] for i in sorted(picked)]


def _take(rows: list[dict], n: int, seed: int, name: str, short: dict) -> list[dict]:
    taken = sample_rows(rows, n, seed)
    if len(taken) < n:
        short[name] = {"asked": n, "got": len(taken)}
        logger.warning("smoltalk: %s has %d rows, fewer than the %d asked for", name, len(taken), n)
    return taken


def load_smoltalk(
    cfg: SmolTalkSource, seed: int, tokenizer=None, tokenize_format: TokenizeFormat = "raw"
) -> SourceRows:
    """Pool from `pool_split` (stratified by category); attr_query / eval from `query_eval_split`.

    `tokenizer` and `tokenize_format` (the run's `tokenize.format`) only measure rows for the token cap.
    """
    if tokenize_format not in ("raw", "chat_template"):
        raise UserError(f"tokenize.format = {tokenize_format!r}: expected 'raw' or 'chat_template'")
    if tokenizer is None and cfg.token_cap is not None:
        raise UserError("smoltalk.token_cap needs the run's tokenizer (none was passed); token_cap: null skips it")
    data = open_dataset(cfg.dataset, cfg.config_name, streaming=True, field="smoltalk.dataset")
    dropped: Counter = Counter()
    scanned: dict[str, list[dict]] = {}
    for split in dict.fromkeys([cfg.pool_split, cfg.query_eval_split]):
        if split not in data:
            raise UserError(f"smoltalk.dataset = {cfg.dataset!r}: no {split!r} split (found {sorted(data)})")
        scanned[split] = _scan(data[split], split, cfg, tokenizer, tokenize_format, dropped)
    short: dict = {}
    query_counts = None
    if cfg.query is not None:
        if cfg.pool_split == cfg.query_eval_split:
            raise UserError("smoltalk.query draws attr_query from pool_split; eval then needs its own "
                            f"query_eval_split (both are {cfg.pool_split!r})")
        query, pool_stream, query_counts = build_query(scanned[cfg.pool_split], cfg.query, seed)
        eval_rows = _take(scanned[cfg.query_eval_split], cfg.eval_size, seed + 1, "eval", short)
    else:
        share = cfg.query_size / (cfg.query_size + cfg.eval_size)
        sides = split_by_group(scanned[cfg.query_eval_split], {"attr_query": share, "eval": 1 - share}, seed)
        query = _take(sides["attr_query"], cfg.query_size, seed, "attr_query", short)
        eval_rows = _take(sides["eval"], cfg.eval_size, seed + 1, "eval", short)
        pool_stream = scanned[cfg.pool_split]
    taken = {r["example_id"] for r in query + eval_rows}
    candidates = [r for r in pool_stream if r["example_id"] not in taken]
    pool = stratified_sample(candidates, cfg.pool_size, seed)
    if len(pool) < cfg.pool_size:
        short["train_base"] = {"asked": cfg.pool_size, "got": len(pool)}
        logger.warning("smoltalk: pool has %d rows, fewer than the %d asked for", len(pool), cfg.pool_size)
    info = {
        "dataset": cfg.dataset,
        "config_name": cfg.config_name,
        "scanned_rows_kept": {split: len(rows) for split, rows in scanned.items()},
        "pool_categories": dict(Counter(_category(r) for r in pool)),
        "short": short,
    } | ({"query_builder": query_counts} if query_counts is not None else {})
    splits = {"train_base": pool, "attr_query": query, "eval": eval_rows}
    logger.info("smoltalk: %s rows, dropped %s", {k: len(v) for k, v in splits.items()}, dict(dropped))
    return SourceRows(splits=splits, dropped=dict(dropped), info=info)
