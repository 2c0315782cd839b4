"""Generic source: local JSONL / Parquet files or saved `datasets` folders of prompt/completion or
chat rows, plus `open_dataset`, the hub-id-or-local-path loader the hub sources share.

Either one path per split (`splits: {train_base, attr_query, eval}`) or one `path` split by
fractions, seeded, by group (`group_column`, default one group per row). Rows keep their own
`example_id` (an integer id becomes its string); a row without one gets a content hash. Exact duplicate
rows are not this module's business: the data stage removes them for every source, within and across
splits, and counts them (`sources.duplicates`). Messages name the file and the 1-based line (JSONL) or
row (Parquet, saved datasets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from playpen_attribution.core.jsonl import numbered_jsonl
from playpen_attribution.core.rows import (
    OUTCOMES,
    ROW_COLUMNS,
    SourceRows,
    group_id_for,
    make_example_id,
)
from playpen_attribution.core.section import Section
from playpen_attribution.errors import UserError
from playpen_attribution.sources.duplicates import content_key
from playpen_attribution.sources.messages import render_raw_prompt, split_at_last_assistant
from playpen_attribution.sources.splitting import split_by_group


class GenericSplitPaths(Section):
    """One file or saved dataset folder per split."""

    train_base: Path = Field(description="The training pool.")
    attr_query: Path = Field(description="The attribution query set.")
    eval: Path = Field(description="The eval set.")


class GenericSource(Section):
    """Local JSONL (.jsonl), Parquet (.parquet) or saved `datasets` folders with prompt/completion or messages."""

    kind: Literal["generic"] = "generic"
    path: Path | None = Field(None, description="One file or folder split by the fractions below (or use `splits`).")
    splits: GenericSplitPaths | None = Field(None, description="One file or folder per split (or use `path`).")
    query_fraction: float = Field(0.2, ge=0, lt=1, description="Share of groups in attr_query (with `path`).")
    eval_fraction: float = Field(0.2, ge=0, lt=1, description="Share of groups in eval (with `path`).")
    group_column: str | None = Field(
        None, description="Column whose value groups rows for splitting; None = experiment::task_id (one per row)."
    )
    game: str = Field("generic", description="`game` of rows that have no game column.")
    game_role: str = Field("assistant", description="`game_role` of rows that have no game_role column.")

    @model_validator(mode="after")
    def _one_layout(self) -> GenericSource:
        if (self.path is None) == (self.splits is None):
            raise ValueError("give exactly one of `path` (split by fractions) or `splits` (one path per split)")
        if self.query_fraction + self.eval_fraction >= 1:
            raise ValueError(
                f"query_fraction + eval_fraction = {self.query_fraction + self.eval_fraction}: must be < 1"
            )
        return self


def check_config_name(location: str, config_name: str | None, field: str) -> None:
    """UserError when a hub dataset's config name is not one of its configs, as far as the local hub cache knows
    them (the `configs:` of its cached README card); a local folder, or a dataset never fetched, is not checked
    (that needs the network)."""
    import yaml
    from huggingface_hub import try_to_load_from_cache

    if config_name is None or Path(location).expanduser().exists() or location.startswith(("/", ".", "~")):
        return
    readme = try_to_load_from_cache(location, "README.md", repo_type="dataset")
    if not isinstance(readme, str):
        return
    parts = Path(readme).read_text(encoding="utf-8", errors="replace").split("---", 2)
    card = yaml.safe_load(parts[1]) if len(parts) == 3 else None
    names = [c.get("config_name") for c in (card or {}).get("configs") or [] if isinstance(c, dict)]
    if names and config_name not in names:
        raise UserError(f"{field}: config_name {config_name!r} is not a config of {location} (it has: "
                        f"{', '.join(map(str, names))})")


def open_dataset(location: str, config_name: str | None, streaming: bool, field: str):
    """A hub id or local path as a DatasetDict (IterableDatasetDict when streaming).

    A local folder saved with `save_to_disk` goes through `load_from_disk`; any other local folder
    (train/validation/test JSONL or Parquet files) and any hub id go through `load_dataset`. The
    config name applies to hub ids only: a local folder holds that config's files directly.
    """
    import datasets

    path = Path(location).expanduser()
    try:
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.Dataset):
                raise UserError(f"{field} = {location!r}: a saved Dataset without splits; save a DatasetDict")
            if streaming:
                return datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in loaded.items()})
            return loaded
        if path.exists():
            if not path.is_dir():
                raise UserError(f"{field} = {location!r}: expected a folder of per-split files, got a file")
            return datasets.load_dataset(str(path), streaming=streaming)
        if location.startswith(("/", ".", "~")):
            raise UserError(f"{field} = {location!r}: no such folder")
        return datasets.load_dataset(location, config_name, streaming=streaming)
    except UserError:
        raise
    except Exception as err:  # the library's own message, named after the field that caused it
        raise UserError(f"{field} = {location!r}: could not load it ({type(err).__name__}: {err})") from err


def read_table(path: Path) -> list[dict]:
    """Rows of a .jsonl file, a .parquet file or a folder saved with `save_to_disk` (one split)."""
    return [row for _, row in numbered_table(path)]


def numbered_table(path: Path) -> list[tuple[str, dict]]:
    """(where, row) for every row of a .jsonl file ('line N'), a .parquet file or saved folder ('row N'),
    numbered from 1."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return [(f"line {n}", row) for n, row in numbered_jsonl(path)]
    return [(f"row {n}", row) for n, row in enumerate(_read_rows(path), start=1)]


def _read_rows(path: Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        import datasets

        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as err:
            raise UserError(f"{path}: not a folder saved with save_to_disk ({err})") from err
        if isinstance(loaded, datasets.DatasetDict):
            if len(loaded) != 1:
                raise UserError(f"{path}: holds splits {sorted(loaded)}; give one folder or file per split")
            loaded = next(iter(loaded.values()))
        return loaded.to_list()
    if path.suffix == ".parquet":
        if not path.is_file():
            raise UserError(f"{path}: Parquet file not found")
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except PermissionError:
            raise UserError(f"{path}: permission denied (cannot read it)") from None
        except (pa.ArrowException, OSError) as err:
            raise UserError(f"{path}: not a readable Parquet file ({err})") from None
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    raise UserError(f"{path}: expected a .jsonl or .parquet file or a saved datasets folder")


def _convert(path: Path, cfg: GenericSource) -> list[dict]:
    numbered = numbered_table(path)
    if not numbered:
        raise UserError(f"{path}: no rows")
    table = [row for _, row in numbered]
    columns = set(table[0])
    if "messages" not in columns:
        for column in ("prompt", "completion"):
            if column not in columns:
                raise UserError(f"{path}: missing column {column!r} (need prompt/completion or messages)")
    if cfg.group_column is not None and cfg.group_column not in columns:
        raise UserError(f"{path}: missing column {cfg.group_column!r} (generic.group_column)")
    return [_row(raw, index, f"{path} {where}", path, cfg) for index, (where, raw) in enumerate(numbered)]


def _row(raw: dict, index: int, where: str, path: Path, cfg: GenericSource) -> dict:
    extra = {k: v for k, v in raw.items() if k not in ROW_COLUMNS and k not in ("messages", "prompt", "completion")}
    if "messages" in raw:
        earlier, completion = split_at_last_assistant(raw["messages"], where)
        prompt = render_raw_prompt(earlier)
        extra["prompt_messages"] = earlier
    else:
        for column in ("prompt", "completion"):
            if column not in raw:
                raise UserError(f"{where}: missing column {column!r}")
        prompt, completion = raw["prompt"], raw["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise UserError(f"{where}: 'prompt' and 'completion' must be strings")
    if not completion.strip():
        raise UserError(f"{where}: empty completion")
    outcome = raw.get("outcome", "success")
    if outcome is None:
        outcome = "success"
    if outcome not in OUTCOMES:
        raise UserError(f"{where}: outcome {outcome!r} is not one of {list(OUTCOMES)}")
    experiment = str(raw.get("experiment") or path.stem)
    task_id = str(raw["task_id"]) if raw.get("task_id") is not None else str(index)
    if cfg.group_column is not None:
        if raw.get(cfg.group_column) is None:
            raise UserError(f"{where}: no value in group column {cfg.group_column!r}")
        group_id = str(raw[cfg.group_column])
    else:
        group_id = group_id_for(experiment, task_id)
    example_id = raw.get("example_id")
    if example_id is None:
        example_id = make_example_id("generic", path.name, index, prompt, completion)
    elif isinstance(example_id, bool) or not isinstance(example_id, (str, int)) or not str(example_id).strip():
        raise UserError(f"{where}: example_id = {example_id!r}: expected a non-empty string or an integer")
    return {
        "example_id": str(example_id),
        "prompt": prompt,
        "completion": completion,
        "game": raw.get("game") or cfg.game,
        "game_role": raw.get("game_role") or cfg.game_role,
        "outcome": outcome,
        "experiment": experiment,
        "task_id": task_id,
        "group_id": group_id,
        "target_word": raw.get("target_word"),
        **extra,
    }


def _check_unique(splits: dict[str, list[dict]]) -> None:
    """An example_id names one row: a second row with that id is refused, unless it is an exact copy
    (`duplicates.content_key`), which the data stage drops and counts."""
    seen: dict[str, tuple[str, tuple]] = {}
    for split, rows in splits.items():
        for row in rows:
            first = seen.setdefault(row["example_id"], (split, content_key(row)))
            if first[1] != content_key(row):
                raise UserError(f"example_id {row['example_id']!r} occurs twice with different rows "
                                f"(in {first[0]} and {split})")


def load_generic(cfg: GenericSource, seed: int, tokenizer=None) -> SourceRows:
    """Rows of the configured files, split by `splits` or by seeded grouped fractions (`tokenizer` is unused)."""
    dropped: dict[str, int] = {}
    if cfg.splits is not None:
        paths = {"train_base": cfg.splits.train_base, "attr_query": cfg.splits.attr_query, "eval": cfg.splits.eval}
        splits = {}
        for name, p in paths.items():
            splits[name] = _convert(p, cfg)
        info: dict = {"paths": {name: str(p) for name, p in paths.items()}}
    else:
        assert cfg.path is not None, "GenericSource refuses neither path nor splits"
        rows = _convert(cfg.path, cfg)
        fractions = {
            "train_base": 1 - cfg.query_fraction - cfg.eval_fraction,
            "attr_query": cfg.query_fraction,
            "eval": cfg.eval_fraction,
        }
        splits = split_by_group(rows, fractions, seed)
        info = {"path": str(cfg.path), "groups": len({r["group_id"] for r in rows})}
    _check_unique(splits)
    info["rows"] = {name: len(rows) for name, rows in splits.items()}
    return SourceRows(splits=splits, dropped=dropped, info=info)
