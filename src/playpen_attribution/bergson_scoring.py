"""Score a pool of pre-tokenized rows against a query set with Bergson, in-process.

How our options map onto Bergson 2.5 (``bergson.cli.commands`` dataclasses, run with ``.execute()``
in this process, so Python/torch/CUDA start once per call; each step reloads the small model):

=====================================  ======================================================================
``ScoringSettings`` field              Bergson option
=====================================  ======================================================================
``projection_dim``                     ``IndexConfig.projection_dim`` (per-module p x p random projection)
``token_batch_size``                   ``IndexConfig.token_batch_size`` (must be <= max_position_embeddings)
``precision``                          ``IndexConfig.precision`` (model dtype); scores are always fp32
``loss_reduction``                     ``IndexConfig.loss_reduction``: ``sum`` over a row's completion
                                       tokens (Bergson's default) or ``mean`` (length-normalised gradient)
``label_smoothing``                    ``IndexConfig.label_smoothing`` (cross-entropy label smoothing)
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

import contextlib
import hashlib
import io
import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Literal

import datasets
import numpy as np

from playpen_attribution.errors import UserError
from playpen_attribution.log import logger

REQUIRED_COLUMNS = ("example_id", "input_ids", "labels")
_CACHE_LAYOUT = 1  # bump when the cached folder's contents change meaning


class ScoringError(UserError, ValueError):
    """Bad input to ``score_pool``; the message names the offending field."""


@dataclass(frozen=True)
class ScoringSettings:
    """How Bergson computes and compares gradients (see the module docstring for the mapping)."""

    mode: Literal["mean", "nearest", "individual", "group_mean_max"] = "mean"
    """How a pool row's scores against the query rows become one number."""
    projection_dim: int = 32
    """Random projection size per module (each module gradient becomes projection_dim**2 numbers)."""
    preconditioning: Literal["none", "query", "mixed"] = "query"
    """Second-moment (autocorrelation Hessian) preconditioner: none, the query's, or query mixed with pool."""
    mixing_coefficient: float = 0.99
    """``mixed`` only: H = c*H_query + (1-c)*H_pool."""
    unit_normalize: bool = True
    """Unit-normalise each gradient before the dot product (cosine scores)."""
    loss_reduction: Literal["mean", "sum"] = "sum"
    """Per-row loss whose gradient is taken: sum or mean over the row's completion tokens."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing of that loss."""
    token_batch_size: int = 512
    """Padded tokens per batch; at most max_position_embeddings and at least the longest row."""
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    """Model dtype Bergson loads (fp32 on CPU); scores themselves are computed in fp32."""


@dataclass(frozen=True)
class PoolScores:
    """What ``score_pool`` returns; every array is in pool row order."""

    scores: np.ndarray
    """One score per pool row under ``settings.mode`` (NaN kept as NaN)."""
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
    settings: ScoringSettings,
    cache_dir: Path | None = None,
) -> PoolScores:
    """Score every pool row against the query rows (``group_mean_max`` needs a query ``group_id``).

    Without ``cache_dir`` the query index is built inside ``work_dir`` on every call.
    """
    model_path, work_dir = _model_location(model_path), Path(work_dir).resolve()
    adapter_path = Path(adapter_path).resolve() if adapter_path is not None else None
    validate_inputs(model_path, adapter_path, pool, query, settings)
    work_dir.mkdir(parents=True, exist_ok=True)
    pool_dir = _save_rows(pool, work_dir / "pool.hf")
    query_dir = _save_rows(query, work_dir / "query.hf")
    key, fields = query_key(model_path, adapter_path, query, settings)
    reused = False
    if cache_dir is None:
        _build_query_side(model_path, adapter_path, query_dir, work_dir, settings)
    else:
        cached, reused = _cached_query_side(model_path, adapter_path, query_dir, Path(cache_dir), key, fields, settings)
        _link_tree(cached, work_dir, ("query_index",) + (("query_hessian",) if settings.preconditioning != "none" else ()))

    from bergson.cli.commands import Score
    from bergson.config.config import PreprocessConfig, ScoreConfig

    hessian = None
    if settings.preconditioning == "query":
        hessian = work_dir / "query_hessian"
    elif settings.preconditioning == "mixed":
        hessian = _mixed_hessian(model_path, adapter_path, pool_dir, work_dir, settings)
    score_dir = work_dir / "scores"
    score_cfg = ScoreConfig(
        query_path=str(work_dir / "query_index"), precision="fp32",
        score="nearest" if settings.mode == "nearest" else "individual",
    )
    preprocess = PreprocessConfig(unit_normalize=settings.unit_normalize, hessian_path=hessian and str(hessian))
    index_cfg = _index_config(model_path, adapter_path, pool_dir, str(score_dir), settings)
    _run(Score(score_cfg=score_cfg, index_cfg=index_cfg, preprocess_cfg=preprocess), "pool scores")

    query_ids = consumed_ids(work_dir / "query_index")
    if query_ids != list(query["example_id"]):
        raise RuntimeError(f"Bergson's query index ids differ from the query rows ({work_dir / 'query_index'})")
    matrix = read_scores(score_dir, pool["example_id"])
    losses = read_row_losses(score_dir, pool, settings)
    if settings.mode == "nearest":
        return PoolScores(matrix[:, 0], None, query_ids, key, reused, losses)
    if settings.mode == "group_mean_max":
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
              settings: ScoringSettings) -> tuple[str, dict]:
    """(key, what it hashes) of the query-side artifacts: what the query gradients depend on, nothing else."""
    rows = hashlib.sha256()
    for eid, ids, labels in zip(query["example_id"], query["input_ids"], query["labels"]):
        rows.update(json.dumps([eid, list(ids), list(labels)]).encode())
    fields = _key_fields(model_path, adapter_path, rows.hexdigest(), settings)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20], fields


def _key_fields(model_path, adapter_path, rows_hash: str, settings: ScoringSettings) -> dict:
    import torch

    return {
        "layout": _CACHE_LAYOUT, "model": _tree_hash(model_path), "adapter": adapter_path and _tree_hash(adapter_path),
        "query_rows": rows_hash, "projection_dim": settings.projection_dim, "precision": settings.precision,
        "loss_reduction": settings.loss_reduction, "label_smoothing": settings.label_smoothing,
        "bergson": metadata.version("bergson"), "torch": torch.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def _tree_hash(path: Path | str) -> str:
    """sha256 over every file of a local folder; a hub id is keyed by its name."""
    path = Path(path)
    if not path.is_dir():
        return str(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _cached_query_side(model_path, adapter_path, query_dir: Path, cache_dir: Path, key: str, fields: dict,
                       settings: ScoringSettings) -> tuple[Path, bool]:
    """The cache folder for ``key`` with a query index (and Hessian when needed); reused when sound."""
    folder = cache_dir.resolve() / f"query_{key}"
    if folder.is_dir():
        problem = _cache_problem(folder, key, model_path, adapter_path, query_dir, settings)
        if problem is None and (settings.preconditioning == "none" or (folder / "query_hessian").is_dir()):
            logger.info("reused query index %s", folder)
            return folder, True
        if problem is None:  # index fine, Hessian not built yet: add it
            _hessian(model_path, adapter_path, query_dir, folder / "query_hessian", settings, "query Hessian")
            logger.info("reused query index %s (added its Hessian)", folder)
            return folder, False
        logger.warning("cached query index %s is unusable (%s); rebuilding it", folder, problem)
        shutil.rmtree(folder)
    part = folder.with_name(folder.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    _build_query_side(model_path, adapter_path, query_dir, part, settings)
    (part / "key.json").write_text(json.dumps({"key": key, **fields}, indent=1) + "\n")
    part.rename(folder)
    logger.info("built query index %s", folder)
    return folder, False


def _cache_problem(folder: Path, key: str, model_path, adapter_path, query_dir, settings) -> str | None:
    """Why a cached query folder cannot be used as is (None when it can)."""
    record = folder / "key.json"
    if not record.is_file() or json.loads(record.read_text()).get("key") != key:
        return "its key.json does not match"
    cfg = _index_config(model_path, adapter_path, query_dir, str(folder / "query_index"), settings)
    from bergson.utils.worker_utils import processor_for

    try:
        for part in ("query_index", "query_hessian"):
            if (folder / part).is_dir():
                processor_for(cfg).check_saved_projection(folder / part, f"The cached {part}")
    except ValueError as exc:
        return str(exc)
    return None


def _build_query_side(model_path, adapter_path, query_dir: Path, out: Path, settings: ScoringSettings) -> None:
    """Raw per-row query gradients (``query_index``) and, when preconditioning, ``query_hessian``."""
    from bergson.config.config import PreprocessConfig

    if settings.preconditioning != "none":
        _hessian(model_path, adapter_path, query_dir, out / "query_hessian", settings, "query Hessian")
    _build(model_path, adapter_path, query_dir, out / "query_index", settings, PreprocessConfig())


def _hessian(model_path, adapter_path, data_dir: Path, out: Path, settings: ScoringSettings, what: str) -> Path:
    from bergson.cli.commands import Hessian
    from bergson.config.config import HessianConfig

    cfg = _index_config(model_path, adapter_path, data_dir, str(out), settings)
    _run(Hessian(hessian_cfg=HessianConfig(method="autocorrelation"), index_cfg=cfg), what)
    return out


def _mixed_hessian(model_path, adapter_path, pool_dir: Path, work_dir: Path, settings: ScoringSettings) -> Path:
    """``c*H_query + (1-c)*H_pool`` saved as a Bergson GradientProcessor (what ``Mix`` writes)."""
    from bergson.gradients import GradientProcessor

    pool_hessian = _hessian(model_path, adapter_path, pool_dir, work_dir / "pool_hessian", settings, "pool Hessian")
    q_proc = GradientProcessor.load(work_dir / "query_hessian")
    p_proc = GradientProcessor.load(pool_hessian)
    q_proc.check_projection_matches(p_proc, f"The pool Hessian at {pool_hessian}")
    c = settings.mixing_coefficient
    mixed = {name: c * q_proc.hessians[name] + (1 - c) * p_proc.hessians[name] for name in q_proc.hessians}
    out = work_dir / "mixed_hessian"
    shutil.rmtree(out, ignore_errors=True)
    replace(q_proc, hessians=mixed, hessians_eigen={}).save(out)
    (out / "mix.json").write_text(json.dumps({"mixing_coefficient": c, "query": "query_hessian",
                                              "pool": "pool_hessian"}) + "\n")
    return out


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
    model_path = _model_location(model_path)
    adapter_path = Path(adapter_path).resolve() if adapter_path is not None else None
    return _build(model_path, adapter_path, data_dir, out_dir, settings, PreprocessConfig())


def _build(model_path, adapter_path, data_dir: Path, out_dir: Path, settings: ScoringSettings, preprocess) -> Path:
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


def read_row_losses(score_dir: Path, pool: datasets.Dataset, settings: ScoringSettings) -> np.ndarray | None:
    """Bergson's per-row loss (``data.hf``'s ``loss`` column) as a mean over completion tokens, in pool order.

    With ``loss_reduction="sum"`` Bergson's loss is the summed NLL over the row's completion tokens,
    so it is divided by their count; with ``"mean"`` it is that mean already. None with label
    smoothing (a different loss) or without the column (an older Bergson).
    """
    data = datasets.load_from_disk(str(Path(score_dir) / "data.hf"))
    if settings.label_smoothing or "loss" not in data.column_names:
        return None
    by_id = dict(zip(data["example_id"], np.asarray(data["loss"], dtype=np.float64)))
    values = np.array([by_id[eid] for eid in pool["example_id"]])
    counts = np.array([sum(1 for t in labels if t != -100) for labels in pool["labels"]], dtype=np.float64)
    if settings.loss_reduction == "sum":
        values = np.divide(values, counts, out=np.full_like(values, np.nan), where=counts > 0)
    values[counts == 0] = np.nan
    return values


def validate_inputs(
    model_path: Path | str, adapter_path: Path | None, pool: datasets.Dataset, query: datasets.Dataset,
    settings: ScoringSettings,
) -> None:
    """Raise ``ScoringError`` (a ValueError) naming the field for inputs Bergson would reject or mis-score."""
    if settings.preconditioning not in ("none", "query", "mixed"):
        raise ScoringError(f"preconditioning must be 'none', 'query' or 'mixed', got {settings.preconditioning!r}")
    if settings.mode not in ("mean", "nearest", "individual", "group_mean_max"):
        raise ScoringError(f"mode must be mean, nearest, individual or group_mean_max, got {settings.mode!r}")
    if settings.projection_dim < 0:
        raise ScoringError(f"projection_dim must be >= 0 (0 = no projection), got {settings.projection_dim}")
    if not 0 <= settings.mixing_coefficient <= 1:
        raise ScoringError(f"mixing_coefficient must be in [0, 1], got {settings.mixing_coefficient}")
    if not 0 <= settings.label_smoothing < 1:
        raise ScoringError(f"label_smoothing must be in [0, 1), got {settings.label_smoothing}")
    for name, ds in (("pool", pool), ("query", query)):
        _check_rows(name, ds, settings.token_batch_size)
    if settings.mode == "group_mean_max" and "group_id" not in query.column_names:
        raise ScoringError("query: mode group_mean_max needs a group_id column on the query rows")
    if not Path(model_path).is_dir():
        return  # a hub id: Bergson and transformers resolve and check it
    model_path = Path(model_path)
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


def _model_location(model_path: Path | str) -> Path | str:
    """A local model folder as an absolute path; a hub id unchanged."""
    return Path(model_path).resolve() if Path(model_path).is_dir() else str(model_path)


def _save_rows(ds: datasets.Dataset, path: Path) -> Path:
    """Save exactly the columns Bergson should see (it keeps ``labels``; we keep ``example_id``)."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.select_columns(list(REQUIRED_COLUMNS)).flatten_indices().save_to_disk(str(tmp))
    shutil.rmtree(path, ignore_errors=True)  # after saving: ``ds`` may have been loaded from ``path``
    tmp.rename(path)
    return path


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


def _index_config(model_path, adapter_path: Path | None, data_dir: Path, run_path: str, settings: ScoringSettings):
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
        loss_reduction=settings.loss_reduction,
        label_smoothing=settings.label_smoothing,
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
