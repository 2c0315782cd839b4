"""Exact duplicate rows, within a split and across splits: the one rule every source goes through.

Two rows are exact duplicates when everything the tokenizer reads of them is equal: `prompt`,
`prompt_messages` (compared as canonical JSON; absent and empty are the same) and `completion`. The
data stage removes them after its outcome filters and before any split is written
(`drop_duplicate_rows`, called from `stages.data.clean_splits`), whatever the source:

- within a split, the first copy is kept and every later one dropped, counted as `<split>:duplicate`;
- across splits, a row equal to a row of a split that ranks higher in `KEEP_ORDER` is a leak and is
  dropped from the lower split, counted as `<split>:duplicate_of_<other>`: the eval copy is always
  kept (the measurement does not change), then the attribution query's; a pool row equal to a query
  or eval row leaves the pool.

A split not named in `KEEP_ORDER` ranks below all of them, in the order it comes in.
"""

from __future__ import annotations

import json
from collections import Counter

KEEP_ORDER: tuple[str, ...] = ("eval", "attr_query", "train_base")
"""Splits from the one whose copy of a duplicate is kept first to the one that loses its copy first."""


def content_key(row: dict) -> tuple[str, str, str]:
    """What makes two rows the same example: prompt text, prompt messages (canonical JSON) and completion."""
    messages = row.get("prompt_messages") or []
    return (str(row.get("prompt")), json.dumps(messages, sort_keys=True, ensure_ascii=False),
            str(row.get("completion")))


def drop_duplicate_rows(splits: dict[str, list[dict]]) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """(`splits` without exact duplicates, dropped counts per `<split>:duplicate[_of_<split>]`); rows keep
    their order, the splits their keys."""
    order = [s for s in KEEP_ORDER if s in splits] + [s for s in splits if s not in KEEP_ORDER]
    owner: dict[tuple[str, str, str], str] = {}  # content -> the split whose copy is kept
    kept: dict[str, list[dict]] = {}
    dropped: Counter = Counter()
    for split in order:
        kept[split] = []
        for row in splits[split]:
            key = content_key(row)
            if key not in owner:
                owner[key] = split
                kept[split].append(row)
            elif owner[key] == split:
                dropped[f"{split}:duplicate"] += 1
            else:
                dropped[f"{split}:duplicate_of_{owner[key]}"] += 1
    return {split: kept[split] for split in splits}, dict(dropped)

