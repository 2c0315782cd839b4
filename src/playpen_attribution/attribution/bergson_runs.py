"""Bergson's commands run in this process, and reading what they write.

`Scoring` is what Bergson needs to know: the `attribute:` section whole plus the values resolved at run
time. `index_config` turns it into Bergson's `IndexConfig` (the one place an `attribute:` option becomes a
Bergson option; `gradient_options` are those the query-index cache key hashes too); `hessian`, `build`,
`mixed_hessian` and `build_query_side` run Bergson's Hessian and Build commands (and mix two
Hessians the way Bergson's `Mix` does); `run_command` executes one command with its stdout sent to
our logger (Bergson's log lines included); `consumed_ids`, `read_scores` and `read_row_losses` read a Bergson run folder back,
joined on `example_id`. The folder and file names of a work_dir are named here once.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import datasets
import numpy as np

from playpen_attribution.attribution.bergson_loss import labelled_positions_only
from playpen_attribution.attribution.config import AttributeConfig
from playpen_attribution.core import atomic
from playpen_attribution.core.adapters import for_bergson
from playpen_attribution.core.jsonl import dumps
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger

# Folders and files of a work_dir (and of a cached query folder), named once.
POOL_ROWS, QUERY_ROWS = "pool.hf", "query.hf"  # the exact rows Bergson reads
QUERY_INDEX, QUERY_HESSIAN = "query_index", "query_hessian"
POOL_HESSIAN, MIXED_HESSIAN, MIX_FILE = "pool_hessian", "mixed_hessian", "mix.json"
SCORES = "scores"
KEY_FILE = "key.json"  # a cached query folder's key and what it hashes
BERGSON_DATA = "data.hf"  # Bergson's own copy of the rows it processed, inside each of its run folders
REQUIRED_COLUMNS = ("example_id", "input_ids", "labels")


class ScoringError(UserError, ValueError):
    """Bad input to ``score_pool``; the message names the offending field."""


@dataclass(frozen=True)
class Scoring:
    """What every Bergson run here reads: the `attribute:` section whole, with what is resolved at run time."""

    attribute: AttributeConfig
    """The validated `attribute:` section (mode, projection, preconditioning, loss, processes, ...)."""
    token_batch_size: int
    """`attribute.token_batch_size` as an int (`auto` resolved): at most the model's context, at least the longest row."""
    precision: Literal["fp32", "bf16"]
    """Model dtype Bergson loads (from `model.dtype`: fp32 on CPU); scores themselves are computed in fp32."""
    tokenizer: str
    """Where Bergson loads a tokenizer from (it only reads the context length: rows arrive pre-tokenized);
    the model's folder unless the run names another (`model.tokenizer`)."""


def gradient_options(scoring: Scoring) -> dict:
    """Bergson `IndexConfig` options a row's projected gradient depends on (beyond model, adapter and rows):
    `index_config` passes them to Bergson and the query-index cache key hashes them (`scoring.query_key`).
    A new `attribute:` option that changes gradients is mapped here; one that does not, in `index_config`."""
    a = scoring.attribute
    return {"projection_dim": a.projection_dim, "precision": scoring.precision,
            "loss_reduction": a.loss_reduction, "label_smoothing": a.label_smoothing}


def build_query_side(model_path, adapter_path, query_dir: Path, out: Path, scoring: Scoring) -> None:
    """Raw per-row query gradients (``query_index``) and, when preconditioning, ``query_hessian``."""
    from bergson.config.config import PreprocessConfig

    if scoring.attribute.preconditioning != "none":
        hessian(model_path, adapter_path, query_dir, out / QUERY_HESSIAN, scoring, "query Hessian")
    build(model_path, adapter_path, query_dir, out / QUERY_INDEX, scoring, PreprocessConfig())


def hessian(model_path, adapter_path, data_dir: Path, out: Path, scoring: Scoring, what: str) -> Path:
    from bergson.cli.commands import Hessian
    from bergson.config.config import HessianConfig

    cfg = index_config(model_path, adapter_path, data_dir, str(out), scoring)
    run_command(Hessian(hessian_cfg=HessianConfig(method="autocorrelation"), index_cfg=cfg), what)
    return out


def mixed_hessian(model_path, adapter_path, pool_dir: Path, work_dir: Path, scoring: Scoring) -> Path:
    """``c*H_query + (1-c)*H_pool`` saved as a Bergson GradientProcessor (what ``Mix`` writes)."""
    from bergson.gradients import GradientProcessor

    pool_hessian = hessian(model_path, adapter_path, pool_dir, work_dir / POOL_HESSIAN, scoring, "pool Hessian")
    q_proc = GradientProcessor.load(work_dir / QUERY_HESSIAN)
    p_proc = GradientProcessor.load(pool_hessian)
    q_proc.check_projection_matches(p_proc, f"The pool Hessian at {pool_hessian}")
    c = scoring.attribute.mixing_coefficient
    mixed = {name: c * q_proc.hessians[name] + (1 - c) * p_proc.hessians[name] for name in q_proc.hessians}
    out = work_dir / MIXED_HESSIAN
    shutil.rmtree(out, ignore_errors=True)
    replace(q_proc, hessians=mixed, hessians_eigen={}).save(out)
    (out / MIX_FILE).write_text(dumps({"mixing_coefficient": c, "query": QUERY_HESSIAN,
                                       "pool": POOL_HESSIAN}) + "\n")
    return out


def build_gradient_index(
    model_path: Path, adapter_path: Path | None, rows: datasets.Dataset, out_dir: Path,
    scoring: Scoring,
) -> Path:
    """Write Bergson's raw projected per-row gradients of ``rows`` to ``out_dir`` (``bergson build``).

    For inspection and checks: read them with ``bergson.load_gradients(out_dir)`` (dataset row order)
    and the ids with ``consumed_ids(out_dir)``. ``rows`` is first saved as ``<out_dir>_rows.hf``.
    """
    from bergson.config.config import PreprocessConfig

    out_dir = Path(out_dir).resolve()
    data_dir = save_rows(rows, out_dir.with_name(out_dir.name + "_rows.hf"))
    location = model_location(model_path)
    if adapter_path is None:
        return build(location, None, data_dir, out_dir, scoring, PreprocessConfig())
    with for_bergson(Path(adapter_path).resolve(), location) as adapter:  # Bergson loads the base the adapter names
        return build(location, adapter, data_dir, out_dir, scoring, PreprocessConfig())


def build(model_path, adapter_path, data_dir: Path, out_dir: Path, scoring: Scoring, preprocess) -> Path:
    from bergson.cli.commands import Build

    cfg = index_config(model_path, adapter_path, data_dir, str(out_dir), scoring)
    run_command(Build(index_cfg=cfg, preprocess_cfg=preprocess), f"gradient index {out_dir.name}")
    return out_dir


def consumed_ids(run_dir: Path) -> list[str]:
    """The ``example_id`` of every row Bergson processed, in its row order, read from its ``data.hf``."""
    path = Path(run_dir) / BERGSON_DATA
    if not path.is_dir():
        raise ScoringError(f"run_dir: no Bergson data.hf under {run_dir}")
    return list(datasets.load_from_disk(str(path))["example_id"])


def read_scores(score_dir: Path, example_ids: list[str]) -> np.ndarray:
    """Bergson's score columns ``[n_rows, n_scores]`` from ``score_dir``, reordered to ``example_ids``."""
    from bergson.data import load_scores

    store = load_scores(Path(score_dir))
    if not store.is_written():
        raise RuntimeError(f"Bergson left some scores in {score_dir} unwritten (rows shorter than 2 tokens?)")
    values = np.asarray(store[:], dtype=np.float64).reshape(len(store.mmap), store.num_scores)
    position = {eid: i for i, eid in enumerate(consumed_ids(score_dir))}
    missing = [eid for eid in example_ids if eid not in position]
    if missing or len(position) != len(example_ids):
        raise RuntimeError(f"Bergson scored ids differ from the pool ids (missing e.g. {missing[:3]})")
    return values[[position[eid] for eid in example_ids]]


def read_row_losses(score_dir: Path, pool: datasets.Dataset, scoring: Scoring) -> np.ndarray | None:
    """Bergson's per-row loss (``data.hf``'s ``loss`` column) as a mean over completion tokens, in pool order.

    With ``loss_reduction="sum"`` Bergson's loss is the summed NLL over the row's completion tokens,
    so it is divided by their count; with ``"mean"`` it is that mean already. None with label
    smoothing (a different loss) or without the column (an older Bergson).
    """
    data = datasets.load_from_disk(str(Path(score_dir) / BERGSON_DATA))
    if scoring.attribute.label_smoothing or "loss" not in data.column_names:
        return None
    by_id = dict(zip(data["example_id"], np.asarray(data["loss"], dtype=np.float64), strict=True))
    values = np.array([by_id[eid] for eid in pool["example_id"]])
    counts = np.array([sum(1 for t in labels if t != -100) for labels in pool["labels"]], dtype=np.float64)
    if scoring.attribute.loss_reduction == "sum":
        values = np.divide(values, counts, out=np.full_like(values, np.nan), where=counts > 0)
    values[counts == 0] = np.nan
    return values


def model_location(model_path: Path | str) -> Path | str:
    """A local model folder as an absolute path; a hub id unchanged."""
    return Path(model_path).resolve() if Path(model_path).is_dir() else str(model_path)


def save_rows(ds: datasets.Dataset, path: Path) -> Path:
    """Save exactly the columns Bergson should see (it keeps ``labels``; we keep ``example_id``)."""
    with atomic.building(path, replace=True) as part:  # the old folder goes last: ``ds`` may be read from it
        ds.select_columns(list(REQUIRED_COLUMNS)).flatten_indices().save_to_disk(str(part))
    return path


def index_config(model_path, adapter_path: Path | None, data_dir: Path, run_path: str, scoring: Scoring):
    from bergson.config.config import DataConfig, DistributedConfig, IndexConfig

    a = scoring.attribute
    return IndexConfig(
        run_path=run_path,
        overwrite=True,
        model=str(adapter_path or model_path),  # Bergson loads the base model named by the adapter
        tokenizer=scoring.tokenizer,  # only read for max length: rows arrive pre-tokenized
        # 1 x 1: in this process; more: Bergson spawns its own ranks (Gloo on CPU, NCCL on GPUs)
        distributed=DistributedConfig(nproc_per_node=a.nproc_per_node, nnode=a.nnode),
        data=DataConfig(dataset=str(data_dir)),
        drop_columns=False,  # keep example_id in Bergson's data.hf so consumed_ids can read it back
        token_batch_size=scoring.token_batch_size,
        **gradient_options(scoring),
    )


@contextlib.contextmanager
def _root_handlers_to(stream) -> Iterator[None]:
    """Point the root logger's handlers that write to stdout at `stream` for the duration. Importing
    Bergson configures the root logger (`logging.basicConfig(force=True)`, INFO, to the stdout of that
    moment), so its loggers' INFO lines (every tracked module's name, ...) bypass `redirect_stdout`."""
    import logging
    import sys

    moved = [h for h in logging.getLogger().handlers
             if isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.__stdout__)]
    before = [h.stream for h in moved]
    for handler in moved:
        handler.setStream(stream)
    try:
        yield
    finally:
        for handler, old in zip(moved, before, strict=True):
            handler.setStream(old)


def run_command(command, what: str) -> None:
    """Execute one Bergson command, its loss projecting the vocabulary only at labelled positions
    (`bergson_loss`), with its stdout (its prints and its loggers' lines) sent to our logger
    instead of the terminal: the full output at DEBUG, and every line saying a parameter was "not found" (a
    module Bergson does not track, e.g. one in modules_to_save) as a WARNING, once per distinct line."""
    buffer, start = io.StringIO(), time.perf_counter()
    try:
        with _root_handlers_to(buffer), contextlib.redirect_stdout(buffer), labelled_positions_only():
            command.execute()
    finally:
        output = buffer.getvalue()
        if output.strip():
            logger.debug("bergson %s output:\n%s", what, output.rstrip())
        for line in dict.fromkeys(line.strip() for line in output.splitlines() if "not found" in line):
            logger.warning("bergson %s: %s", what, line)
    logger.debug("bergson %s: %.1f s", what, time.perf_counter() - start)
