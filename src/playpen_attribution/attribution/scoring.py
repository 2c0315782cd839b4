"""Score a pool of pre-tokenized rows against a query set with Bergson, in-process.

How our options map onto Bergson 2.5 (``bergson.cli.commands`` dataclasses, run with ``.execute()``
in this process, so Python/torch/CUDA start once per call; each step reloads the small model):

=====================================  ======================================================================
``attribute:`` field                   Bergson option
=====================================  ======================================================================
the other fields                       ``IndexConfig``'s fields of the same names (``projection_dim``,
                                       ``token_batch_size``, ``loss_reduction``, ``label_smoothing``) and
                                       ``DistributedConfig``'s (``nproc_per_node``, ``nnode``), set in one
                                       place: ``bergson_runs.index_config``; ``precision`` (model dtype)
                                       follows ``model.dtype``; scores are always fp32
``unit_normalize``                     ``PreprocessConfig.unit_normalize`` (cosine; with a Hessian: H^-1/2
                                       on both sides, otherwise H^-1 on the query side only)
``preconditioning="query"``            ``Hessian(HessianConfig(method="autocorrelation"))`` fitted on the
                                       query rows -> ``PreprocessConfig.hessian_path`` at score time
``preconditioning="mixed"``            the same Hessian fitted on the query and on the pool, mixed as
                                       ``c*H_query + (1-c)*H_pool`` (``mixing_coefficient`` = c) exactly as
                                       Bergson's ``Mix`` command does (``GradientProcessor`` with the mixed
                                       ``hessians``), but with a fixed c: ``Mix`` only picks c itself
``mode="mean"``                        ``ScoreConfig.score="individual"`` against the per-row query index,
                                       averaged over query columns: equal to the dot with the mean query
                                       gradient (Bergson's ``aggregation="mean"``; 2.5.1 can only aggregate
                                       at build time, and a per-row index is shared by every mode)
``mode="nearest"``                     ``ScoreConfig.score="nearest"``: max over query rows
``mode="individual"``                  ``ScoreConfig.score="individual"``: one column per query row; the
                                       row's score is their mean
``mode="group_mean_max"``              ``score="individual"``, then (here, in numpy) the mean over the
                                       columns of each query ``group_id`` and the max over groups (LESS)
=====================================  ======================================================================

Query side: the query index (``bergson build`` of the query rows, ``aggregation="none"``, raw
projected gradients) and the query Hessian. With ``cache_dir`` they are built once into
``cache_dir/query_<key>/`` (``key.json`` lists what the key hashes: model and adapter file contents,
query ids and tokens, projection, precision, loss settings, Bergson/torch versions, device) and
reused by later calls with the same key ("reused query index"); a cached folder whose projection
fails Bergson's ``check_saved_projection`` is rebuilt, never used. Preconditioning and normalisation
happen at score time, so one cached index serves every mode and preconditioner.

``work_dir`` gets Bergson's own folders, each with a replayable ``config.yaml``: ``pool.hf`` /
``query.hf`` (the exact rows Bergson read), ``query_index/`` + ``query_hessian/`` (hard links to the
cache), ``pool_hessian/`` + ``mixed_hessian/`` (mixed only), ``scores/`` (``scores.bin`` + ``data.hf``
with the scored pool ids). Scores are joined back on ``example_id``, never on position.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import datasets
import numpy as np

from playpen_attribution.attribution.bergson_runs import (
    KEY_FILE,
    POOL_ROWS,
    QUERY_HESSIAN,
    QUERY_INDEX,
    QUERY_ROWS,
    REQUIRED_COLUMNS,
    SCORES,
    Scoring,
    ScoringError,
    build_query_side,
    consumed_ids,
    gradient_options,
    hessian,
    index_config,
    mixed_hessian,
    model_location,
    read_row_losses,
    read_scores,
    run_command,
    save_rows,
)
from playpen_attribution.core import atomic
from playpen_attribution.core.adapters import check_adapter_base, for_bergson
from playpen_attribution.core.batch_sizing import check_token_batch
from playpen_attribution.core.hashing import json_sha256, tree_sha256
from playpen_attribution.core.jsonl import dumps
from playpen_attribution.core.locking import lock_path, locked
from playpen_attribution.core.modeling import model_facts
from playpen_attribution.log import logger

_CACHE_LAYOUT = 1  # bump when the cached folder's contents change meaning


@dataclass(frozen=True)
class PoolScores:
    """What ``score_pool`` returns; every array is in pool row order."""

    scores: np.ndarray
    """One score per pool row under ``scoring.attribute.mode`` (NaN kept as NaN)."""
    individual: np.ndarray | None
    """[n_pool, n_query] per-query scores (None for ``nearest``, where Bergson keeps only the max)."""
    query_ids: list[str]
    """example_id of each query column of ``individual``."""
    query_key: str
    """Content key of the query index used."""
    reused_query_index: bool
    """True when the query index (and Hessian) came from the cache unchanged."""
    row_losses: np.ndarray | None = None
    """Mean completion-token NLL per pool row, from the loss Bergson computed for its gradient (its
    ``loss`` column; None when absent or when ``label_smoothing`` changes that loss); NaN for a row
    without completion tokens. Saves the attribute stage a forward pass over the pool."""


def score_pool(
    model_path: Path | str,
    adapter_path: Path | None,
    pool: datasets.Dataset,
    query: datasets.Dataset,
    work_dir: Path,
    scoring: Scoring,
    cache_dir: Path | None = None,
) -> PoolScores:
    """Score every pool row against the query rows (``group_mean_max`` needs a query ``group_id``).

    Without ``cache_dir`` the query index is built inside ``work_dir`` on every call.
    """
    model_path, work_dir = model_location(model_path), Path(work_dir).resolve()
    adapter_path = Path(adapter_path).resolve() if adapter_path is not None else None
    validate_inputs(model_path, adapter_path, pool, query, scoring)
    key, fields = query_key(model_path, adapter_path, query, scoring)
    if adapter_path is None:
        return _score(model_path, None, pool, query, work_dir, scoring, cache_dir, key, fields)
    with for_bergson(adapter_path, model_path) as adapter:  # Bergson loads the base the adapter names
        return _score(model_path, adapter, pool, query, work_dir, scoring, cache_dir, key, fields)


def _score(model_path, adapter_path: Path | None, pool: datasets.Dataset, query: datasets.Dataset, work_dir: Path,
           scoring: Scoring, cache_dir: Path | None, key: str, fields: dict) -> PoolScores:
    work_dir.mkdir(parents=True, exist_ok=True)
    pool_dir = save_rows(pool, work_dir / POOL_ROWS)
    query_dir = save_rows(query, work_dir / QUERY_ROWS)
    reused = False
    if cache_dir is None:
        build_query_side(model_path, adapter_path, query_dir, work_dir, scoring)
    else:
        cached, reused = _cached_query_side(model_path, adapter_path, query_dir, Path(cache_dir), key, fields, scoring)
        _link_tree(cached, work_dir, (QUERY_INDEX,) + ((QUERY_HESSIAN,) if scoring.attribute.preconditioning != "none" else ()))

    from bergson.cli.commands import Score
    from bergson.config.config import PreprocessConfig, ScoreConfig

    hessian = None
    if scoring.attribute.preconditioning == "query":
        hessian = work_dir / QUERY_HESSIAN
    elif scoring.attribute.preconditioning == "mixed":
        hessian = mixed_hessian(model_path, adapter_path, pool_dir, work_dir, scoring)
    score_dir = work_dir / SCORES
    score_cfg = ScoreConfig(
        query_path=str(work_dir / QUERY_INDEX), precision="fp32",
        score="nearest" if scoring.attribute.mode == "nearest" else "individual",
    )
    preprocess = PreprocessConfig(unit_normalize=scoring.attribute.unit_normalize, hessian_path=hessian and str(hessian))
    index_cfg = index_config(model_path, adapter_path, pool_dir, str(score_dir), scoring)
    run_command(Score(score_cfg=score_cfg, index_cfg=index_cfg, preprocess_cfg=preprocess), "pool scores")

    query_ids = consumed_ids(work_dir / QUERY_INDEX)
    if query_ids != list(query["example_id"]):
        raise RuntimeError(f"Bergson's query index ids differ from the query rows ({work_dir / 'query_index'})")
    matrix = read_scores(score_dir, pool["example_id"])
    losses = read_row_losses(score_dir, pool, scoring)
    if scoring.attribute.mode == "nearest":
        return PoolScores(matrix[:, 0], None, query_ids, key, reused, losses)
    if scoring.attribute.mode == "group_mean_max":
        scores = group_mean_max(matrix, list(query["group_id"]))
    else:
        scores = matrix.mean(axis=1)
    return PoolScores(scores, matrix, query_ids, key, reused, losses)


def group_mean_max(individual: np.ndarray, groups: list[str]) -> np.ndarray:
    """Mean over the query columns of each group, then max over groups (NaN propagates)."""
    names = sorted(set(groups))
    labels = np.array([names.index(g) for g in groups])
    means = np.stack([individual[:, labels == i].mean(axis=1) for i in range(len(names))], axis=1)
    return means.max(axis=1)


def query_key(model_path: Path | str, adapter_path: Path | None, query: datasets.Dataset,
              scoring: Scoring) -> tuple[str, dict]:
    """(key, what it hashes) of the query-side artifacts: what the query gradients depend on, nothing else."""
    rows = hashlib.sha256()
    for eid, ids, labels in zip(query["example_id"], query["input_ids"], query["labels"], strict=True):
        rows.update(json.dumps([eid, list(ids), list(labels)]).encode())
    fields = _key_fields(model_path, adapter_path, rows.hexdigest(), scoring)
    return json_sha256(fields)[:20], fields


def _key_fields(model_path, adapter_path, rows_hash: str, scoring: Scoring) -> dict:
    import torch

    return {
        "layout": _CACHE_LAYOUT, "model": tree_sha256(model_path), "adapter": adapter_path and tree_sha256(adapter_path),
        "query_rows": rows_hash, **gradient_options(scoring),
        "bergson": metadata.version("bergson"), "torch": torch.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def _cached_query_side(model_path, adapter_path, query_dir: Path, cache_dir: Path, key: str, fields: dict,
                       scoring: Scoring) -> tuple[Path, bool]:
    """The cache folder for ``key`` with a query index (and Hessian when needed); reused when sound. Runs in
    other run folders share the cache: one process at a time builds or checks a key (its lock in
    ``cache_dir/.locks/``), the others wait and reuse."""
    folder = cache_dir.resolve() / f"query_{key}"
    with locked(lock_path(folder), f"query index {folder}"):
        return _query_side_in(folder, model_path, adapter_path, query_dir, key, fields, scoring)


def _query_side_in(folder: Path, model_path, adapter_path, query_dir: Path, key: str, fields: dict,
                   scoring: Scoring) -> tuple[Path, bool]:
    if folder.is_dir():
        problem = _cache_problem(folder, key, model_path, adapter_path, query_dir, scoring)
        if problem is None and (scoring.attribute.preconditioning == "none" or (folder / QUERY_HESSIAN).is_dir()):
            logger.info("reused query index %s", folder)
            return folder, True
        if problem is None:  # index fine, Hessian not built yet: add it
            hessian(model_path, adapter_path, query_dir, folder / QUERY_HESSIAN, scoring, "query Hessian")
            logger.info("reused query index %s (added its Hessian)", folder)
            return folder, False
        logger.warning("cached query index %s is unusable (%s); rebuilding it", folder, problem)
        shutil.rmtree(folder)
    with atomic.building(folder) as part:
        build_query_side(model_path, adapter_path, query_dir, part, scoring)
        (part / KEY_FILE).write_text(dumps({"key": key, **fields}, indent=1) + "\n")
    logger.info("built query index %s", folder)
    return folder, False


def _cache_problem(folder: Path, key: str, model_path, adapter_path, query_dir, scoring) -> str | None:
    """Why a cached query folder cannot be used as is (None when it can)."""
    record = folder / KEY_FILE
    try:
        recorded = json.loads(record.read_text()) if record.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        recorded = {}  # damaged (a killed copy): rebuilt like any mismatch
    if not isinstance(recorded, dict) or recorded.get("key") != key:
        return "its key.json does not match"
    cfg = index_config(model_path, adapter_path, query_dir, str(folder / QUERY_INDEX), scoring)
    from bergson.utils.worker_utils import processor_for

    try:
        for part in (QUERY_INDEX, QUERY_HESSIAN):
            if (folder / part).is_dir():
                processor_for(cfg).check_saved_projection(folder / part, f"The cached {part}")
    except ValueError as exc:
        return str(exc)
    return None


def validate_inputs(
    model_path: Path | str, adapter_path: Path | None, pool: datasets.Dataset, query: datasets.Dataset,
    scoring: Scoring,
) -> None:
    """Raise a UserError naming the field for inputs Bergson would reject or mis-score."""
    for name, ds in (("pool", pool), ("query", query)):
        _check_rows(name, ds)
    if scoring.attribute.mode == "group_mean_max" and "group_id" not in query.column_names:
        raise ScoringError("query: mode group_mean_max needs a group_id column on the query rows")
    longest = max(len(ids) for ds in (pool, query) for ids in ds["input_ids"])
    max_positions = None
    if Path(model_path).is_dir():  # a hub id: Bergson and transformers resolve and check it
        max_positions = model_facts(model_path).max_positions
        tokenizer = Path(scoring.tokenizer)
        if tokenizer.is_dir() and not any((tokenizer / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
            raise ScoringError(f"Bergson needs a tokenizer saved in {tokenizer} (model.tokenizer names another folder)")
        if adapter_path is not None:
            check_adapter_base(adapter_path, model_path)
    check_token_batch(scoring.token_batch_size, max_positions, longest, str(model_path))


def _check_rows(name: str, ds: datasets.Dataset) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise ScoringError(f"{name}: missing column(s) {missing}; need {list(REQUIRED_COLUMNS)}")
    if len(ds) == 0:
        raise ScoringError(f"{name}: the {name} set is empty (example_id has no rows)")
    ids = ds["example_id"]
    if len(set(ids)) != len(ids):
        raise ScoringError(f"{name}: example_id values must be unique")
    for eid, ids_, labels in zip(ids, ds["input_ids"], ds["labels"], strict=True):
        if len(ids_) < 2 or len(ids_) != len(labels):
            raise ScoringError(f"{name} row {eid}: input_ids needs >= 2 tokens and labels the same length")
        if name == "query" and all(t == -100 for t in labels[1:]):
            raise ScoringError(f"query row {eid}: labels are all -100, so its gradient is zero")


def _link_tree(src_root: Path, dst_root: Path, names: tuple[str, ...]) -> None:
    """Hard-link (or copy, across file systems) the named cached folders into ``dst_root``."""

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for name in names:
        shutil.rmtree(dst_root / name, ignore_errors=True)
        if (src_root / name).is_dir():
            shutil.copytree(src_root / name, dst_root / name, copy_function=link)
