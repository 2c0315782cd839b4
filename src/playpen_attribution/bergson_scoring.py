"""Score a pool of pre-tokenized rows against a query set with Bergson, in-process.

How our options map onto Bergson 2.5 (``bergson.cli.commands`` dataclasses, run with ``.execute()``
in this process, so Python/torch/CUDA start once per call; each step reloads the small model):

=====================================  ======================================================================
``ScoringSettings`` field              Bergson option
=====================================  ======================================================================
``projection_dim``                     ``IndexConfig.projection_dim`` (per-module p x p random projection)
``token_batch_size``                   ``IndexConfig.token_batch_size`` (must be <= max_position_embeddings)
``precision``                          ``IndexConfig.precision`` (model dtype); scores are always fp32
``unit_normalize``                     ``PreprocessConfig.unit_normalize`` (cosine; with a Hessian: H^-1/2
                                       on both sides, otherwise H^-1 on the query side only)
``preconditioning="query"``            ``Hessian(HessianConfig(method="autocorrelation"))`` fitted on the
                                       query rows -> ``PreprocessConfig.hessian_path`` at score time
mean-query scoring                     ``bergson build`` of the query with ``PreprocessConfig(aggregation=
                                       "mean")`` (one target row), then ``bergson score`` of the pool with
                                       ``ScoreConfig.score="individual"`` against it (one score column)
=====================================  ======================================================================

Steps and what lands in ``work_dir`` (every folder is Bergson's own output, ``config.yaml`` included, so
``bergson <folder>/config.yaml`` replays it): ``pool.hf`` / ``query.hf`` (the exact rows handed to
Bergson: ``example_id``, ``input_ids``, ``labels``), ``query_hessian/`` (only with query
preconditioning), ``query_index/`` (the single mean query gradient, already preconditioned and
normalised) and ``scores/`` (``scores.bin`` + ``data.hf`` with the pool ids Bergson scored). Bergson
reads ``input_ids``/``labels`` as given (no templating), packs rows into batches sorted by length,
and writes each score at the row's dataset index; we still join on ``example_id`` when reading back.
Per-row gradients use Bergson's default summed (not mean) token loss.

"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from playpen_attribution.errors import UserError
from playpen_attribution.log import logger



import datasets

REQUIRED_COLUMNS = ("example_id", "input_ids", "labels")


class ScoringError(UserError, ValueError):
    """Bad input to ``score_pool``; the message names the offending field."""


@dataclass(frozen=True)
class ScoringSettings:
    """How Bergson computes and compares gradients (see the module docstring for the mapping)."""

    projection_dim: int = 32
    """Random projection size per module (each module gradient becomes projection_dim**2 numbers)."""
    preconditioning: Literal["none", "query"] = "query"
    """``query``: precondition with the query set's gradient second moment (autocorrelation Hessian)."""
    unit_normalize: bool = True
    """Unit-normalise each gradient before the dot product (cosine scores)."""
    token_batch_size: int = 512
    """Padded tokens per batch; at most max_position_embeddings and at least the longest row."""
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    """Model dtype Bergson loads (fp32 on CPU); scores themselves are computed in fp32."""


def score_pool(
    model_path: Path,
    adapter_path: Path | None,
    pool: datasets.Dataset,
    query: datasets.Dataset,
    work_dir: Path,
    settings: ScoringSettings,
) -> np.ndarray:
    """Mean-query-gradient scores (one float per pool row, in pool order).

    Score of pool row i = <g_i, mean_q g_q> after projection and, per ``settings``, preconditioning
    and unit normalisation. Bergson's outputs stay under ``work_dir`` (replaced on each call).
    """
    model_path, work_dir = Path(model_path).resolve(), Path(work_dir).resolve()
    adapter_path = Path(adapter_path).resolve() if adapter_path is not None else None
    validate_inputs(model_path, adapter_path, pool, query, settings)
    work_dir.mkdir(parents=True, exist_ok=True)
    pool_dir = _save_rows(pool, work_dir / "pool.hf")
    query_dir = _save_rows(query, work_dir / "query.hf")

    from bergson.cli.commands import Hessian, Score
    from bergson.config.config import HessianConfig, PreprocessConfig, ScoreConfig

    hessian_path = None
    if settings.preconditioning == "query":
        hessian_path = str(work_dir / "query_hessian")
        cfg = _index_config(model_path, adapter_path, query_dir, hessian_path, settings)
        _run(Hessian(hessian_cfg=HessianConfig(method="autocorrelation"), index_cfg=cfg), "query Hessian")
    # Bergson's own order: precondition each query gradient, unit-normalise it, then average (at
    # build time: score-time aggregation in 2.5.1 allocates one unwritten column per query row).
    preprocess = PreprocessConfig(
        unit_normalize=settings.unit_normalize, hessian_path=hessian_path, aggregation="mean"
    )
    query_index = _build(model_path, adapter_path, query_dir, work_dir / "query_index", settings, preprocess)

    score_dir = work_dir / "scores"
    score_cfg = ScoreConfig(query_path=str(query_index), score="individual", precision="fp32")
    index_cfg = _index_config(model_path, adapter_path, pool_dir, str(score_dir), settings)
    _run(Score(score_cfg=score_cfg, index_cfg=index_cfg, preprocess_cfg=preprocess), "pool scores")
    return read_scores(score_dir, pool["example_id"])


def build_gradient_index(
    model_path: Path, adapter_path: Path | None, rows: datasets.Dataset, out_dir: Path,
    settings: ScoringSettings,
) -> Path:
    """Write Bergson's raw projected per-row gradients of ``rows`` to ``out_dir`` (``bergson build``).

    For inspection and checks: read them with ``bergson.load_gradients(out_dir)`` (dataset row order)
    and the ids with ``consumed_ids(out_dir)``. ``rows`` is first saved as ``<out_dir>_rows.hf``.
    """
    from bergson.config.config import PreprocessConfig

    out_dir = Path(out_dir).resolve()
    data_dir = _save_rows(rows, out_dir.with_name(out_dir.name + "_rows.hf"))
    model_path = Path(model_path).resolve()
    adapter_path = Path(adapter_path).resolve() if adapter_path is not None else None
    return _build(model_path, adapter_path, data_dir, out_dir, settings, PreprocessConfig())


def _build(model_path: Path, adapter_path: Path | None, data_dir: Path, out_dir: Path,
           settings: ScoringSettings, preprocess) -> Path:
    from bergson.cli.commands import Build

    cfg = _index_config(model_path, adapter_path, data_dir, str(out_dir), settings)
    _run(Build(index_cfg=cfg, preprocess_cfg=preprocess), f"gradient index {out_dir.name}")
    return out_dir


def consumed_ids(run_dir: Path) -> list[str]:
    """The ``example_id`` of every row Bergson processed, in its row order, read from its ``data.hf``."""
    path = Path(run_dir) / "data.hf"
    if not path.is_dir():
        raise ScoringError(f"run_dir: no Bergson data.hf under {run_dir}")
    return list(datasets.load_from_disk(str(path))["example_id"])


def read_scores(score_dir: Path, example_ids: list[str]) -> np.ndarray:
    """Bergson's single score column from ``score_dir``, reordered to ``example_ids`` by id."""
    from bergson.data import load_scores

    store = load_scores(Path(score_dir))
    if store.num_scores != 1:
        raise RuntimeError(f"expected one (mean-query) score column in {score_dir}, got {store.num_scores}")
    if not store.is_written():
        raise RuntimeError(f"Bergson left some scores in {score_dir} unwritten (rows shorter than 2 tokens?)")
    values = np.asarray(store[:], dtype=np.float64)[:, 0]
    position = {eid: i for i, eid in enumerate(consumed_ids(score_dir))}
    missing = [eid for eid in example_ids if eid not in position]
    if missing or len(position) != len(example_ids):
        raise RuntimeError(f"Bergson scored ids differ from the pool ids (missing e.g. {missing[:3]})")
    return values[[position[eid] for eid in example_ids]]


def validate_inputs(
    model_path: Path, adapter_path: Path | None, pool: datasets.Dataset, query: datasets.Dataset,
    settings: ScoringSettings,
) -> None:
    """Raise ``ScoringError`` (a ValueError) naming the field for inputs Bergson would reject or mis-score."""
    if settings.preconditioning not in ("none", "query"):
        raise ScoringError(f"preconditioning must be 'none' or 'query', got {settings.preconditioning!r}")
    if settings.projection_dim < 0:
        raise ScoringError(f"projection_dim must be >= 0 (0 = no projection), got {settings.projection_dim}")
    for name, ds in (("pool", pool), ("query", query)):
        _check_rows(name, ds, settings.token_batch_size)
    max_pos = json.loads((model_path / "config.json").read_text()).get("max_position_embeddings")
    if max_pos is not None and settings.token_batch_size > max_pos:
        raise ScoringError(
            f"token_batch_size={settings.token_batch_size} exceeds the model's max_position_embeddings="
            f"{max_pos} ({model_path}); set ScoringSettings(token_batch_size={max_pos}) or smaller"
        )
    if not any((model_path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        raise ScoringError(f"model_path: Bergson needs a tokenizer saved in {model_path}")
    if adapter_path is not None:
        config_file = adapter_path / "adapter_config.json"
        if not config_file.is_file():
            raise ScoringError(f"adapter_path: no adapter_config.json in {adapter_path}")
        base = json.loads(config_file.read_text()).get("base_model_name_or_path")
        if not base or Path(base).resolve() != model_path:
            raise ScoringError(
                f"adapter_config.json base_model_name_or_path={base!r} in {adapter_path} does not match "
                f"model_path={str(model_path)!r}; Bergson loads the base model from that field, so set it "
                "to the absolute model path"
            )


def _check_rows(name: str, ds: datasets.Dataset, token_batch_size: int) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise ScoringError(f"{name}: missing column(s) {missing}; need {list(REQUIRED_COLUMNS)}")
    if len(ds) == 0:
        raise ScoringError(f"{name}: the {name} set is empty (example_id has no rows)")
    ids = ds["example_id"]
    if len(set(ids)) != len(ids):
        raise ScoringError(f"{name}: example_id values must be unique")
    for eid, ids_, labels in zip(ids, ds["input_ids"], ds["labels"]):
        if len(ids_) < 2 or len(ids_) != len(labels):
            raise ScoringError(f"{name} row {eid}: input_ids needs >= 2 tokens and labels the same length")
        if len(ids_) > token_batch_size:
            raise ScoringError(
                f"{name} row {eid}: input_ids has {len(ids_)} tokens > token_batch_size={token_batch_size}"
            )
        if name == "query" and all(t == -100 for t in labels[1:]):
            raise ScoringError(f"query row {eid}: labels are all -100, so its gradient is zero")


def _save_rows(ds: datasets.Dataset, path: Path) -> Path:
    """Save exactly the columns Bergson should see (it keeps ``labels``; we keep ``example_id``)."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.select_columns(list(REQUIRED_COLUMNS)).flatten_indices().save_to_disk(str(tmp))
    shutil.rmtree(path, ignore_errors=True)  # after saving: ``ds`` may have been loaded from ``path``
    tmp.rename(path)
    return path


def _index_config(model_path: Path, adapter_path: Path | None, data_dir: Path, run_path: str,
                  settings: ScoringSettings):
    from bergson.config.config import DataConfig, DistributedConfig, IndexConfig

    return IndexConfig(
        run_path=run_path,
        overwrite=True,
        model=str(adapter_path or model_path),  # Bergson loads the base model named by the adapter
        tokenizer=str(model_path),  # only read for max length: rows arrive pre-tokenized
        precision=settings.precision,
        distributed=DistributedConfig(nproc_per_node=1),  # run in this process, never spawn ranks
        data=DataConfig(dataset=str(data_dir)),
        drop_columns=False,  # keep example_id in Bergson's data.hf so consumed_ids can read it back
        projection_dim=settings.projection_dim,
        token_batch_size=settings.token_batch_size,
    )


def _run(command, what: str) -> None:
    """Execute one Bergson command, sending its stdout to our logger instead of the terminal."""
    buffer, start = io.StringIO(), time.perf_counter()
    try:
        with contextlib.redirect_stdout(buffer):
            command.execute()
    finally:
        if buffer.getvalue().strip():
            logger.debug("bergson %s output:\n%s", what, buffer.getvalue().rstrip())
    logger.info("bergson %s: %.1f s", what, time.perf_counter() - start)
