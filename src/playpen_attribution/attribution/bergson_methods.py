"""TrackStar, EK-FAC and TRAK through Bergson's own pipelines, in this process.

`score_with_method` runs one of Bergson 2.5's pipeline commands (`bergson.cli.commands.Trackstar`, `Ekfac`,
`Trak`, each with `.execute()`, as `bergson trackstar|ekfac|trak` would) on the pre-tokenized pool and
query rows the attribute stage hands it, and reads back one score per (pool row, query row), joined on
`example_id`. The query is never aggregated (`aggregation: none`), so every method yields the same
`[n_pool, n_query]` matrix and `attribute.mode` reduces it the same way (`methods.reduce_columns`).

How each method maps onto Bergson (options: `attribution.methods`):

==============  ===========================================================================================
method          Bergson
==============  ===========================================================================================
trackstar       ``Trackstar(TrackstarIndexConfig(projection_dim), TrackstarConfig(mix_hessians,
                target_downweight_components, stats_sample_size, preprocess_cfg.unit_normalize))``:
                autocorrelation Hessians of pool and query, mixed, query index, scores
ekfac           ``Ekfac(index_cfg(projection_dim), HessianConfig(method=hessian, ev_correction),
                HessianPipelineConfig(inversion_cfg.damping_factor))``: query gradients unprojected,
                factors fitted on the pool, inverse applied to each query gradient, scores
trak            ``Trak(index_cfg(projection_dim, projection_target=global, loss_fn=log_odds),
                TrakConfig(preprocess_cfg.inversion_cfg.damping_factor, stats_sample_size))``: pool Gram,
                whitened query index, scores, each pool row's scores times (1 - p_i) / scale
==============  ===========================================================================================

Shared with gradient cosine: the rows (the same `pool.hf` / `query.hf` columns), the model, adapter,
precision, `token_batch_size`, `loss_reduction`, `label_smoothing` and Bergson's process layout
(`bergson_runs.Scoring`). Every gradient Bergson takes through its `fwd_bwd_factory` with the cross-entropy
loss (each method's query index and pool scores; TRAK's are log-odds and fall through to Bergson's own
loss) has the output head applied at labelled positions only (`bergson_loss`, via `run_command`); the
Hessian fits (`fwd_bwd_hessian_factory`: autocorrelation, K-FAC, TRAK's Gram) and TRAK's (1 - p) pass
run Bergson's own full-head loss, as the gradient-cosine query Hessian does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from playpen_attribution.attribution.bergson_runs import (
    POOL_ROWS,
    QUERY_ROWS,
    Scoring,
    consumed_ids,
    index_config,
    model_location,
    read_row_losses,
    read_scores,
    run_command,
    save_rows,
)
from playpen_attribution.attribution.methods import EkfacOptions, TrackstarOptions, TrakOptions
from playpen_attribution.core.adapters import for_bergson

RUN = "run"  # the Bergson pipeline's own run folder inside a method's work_dir
QUERY, SCORES = "query", "scores"  # ... and the sub-folders every pipeline writes there


@dataclass(frozen=True)
class MethodScores:
    """A pipeline's scores, in pool row order."""

    individual: np.ndarray
    """[n_pool, n_query] score of each pool row against each query row."""
    query_ids: list[str]
    """example_id of each column."""
    row_losses: np.ndarray | None
    """Mean completion-token NLL per pool row from the loss Bergson scored with (None for TRAK's log-odds)."""


def score_with_method(method: str, options: TrackstarOptions | EkfacOptions | TrakOptions, model_path: Path | str,
                      adapter_path: Path | None, pool: datasets.Dataset, query: datasets.Dataset, work_dir: Path,
                      scoring: Scoring) -> MethodScores:
    """Score every pool row against every query row with Bergson's `method` pipeline, in `work_dir`.

    The inputs are checked as `scoring.score_pool` checks them (the caller does: `scoring.validate_inputs`)."""
    model_path, work_dir = model_location(model_path), Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    pool_dir, query_dir = save_rows(pool, work_dir / POOL_ROWS), save_rows(query, work_dir / QUERY_ROWS)
    if adapter_path is None:
        return _run(method, options, model_path, None, pool, query, pool_dir, query_dir, work_dir, scoring)
    with for_bergson(Path(adapter_path).resolve(), model_path) as adapter:  # Bergson loads the base the adapter names
        return _run(method, options, model_path, adapter, pool, query, pool_dir, query_dir, work_dir, scoring)


def _run(method, options, model_path, adapter, pool, query, pool_dir: Path, query_dir: Path, work_dir: Path,
         scoring: Scoring) -> MethodScores:
    run = work_dir / RUN
    index_cfg = index_config(model_path, adapter, pool_dir, str(run), scoring)
    builders: dict[str, Callable[[Any, Any, Path], Any]] = {"trackstar": _trackstar, "ekfac": _ekfac, "trak": _trak}
    command = builders[method](index_cfg, options, query_dir)
    run_command(command, method)
    query_ids = consumed_ids(run / QUERY)
    if query_ids != list(query["example_id"]):
        raise RuntimeError(f"Bergson's {method} query index ids differ from the query rows ({run / QUERY})")
    matrix = read_scores(run / SCORES, pool["example_id"])
    losses = None if method == "trak" else read_row_losses(run / SCORES, pool, scoring)
    return MethodScores(matrix, query_ids, losses)


def _query(query_dir: Path):
    from bergson.config.config import QuerySetConfig

    return QuerySetConfig(dataset=str(query_dir), aggregation="none")


def _trackstar(index_cfg, o: TrackstarOptions, query_dir: Path):
    from bergson.cli.commands import Trackstar
    from bergson.config.config import PreprocessConfig, ScoreConfig, TrackstarConfig

    return Trackstar(
        index_cfg=replace(index_cfg, projection_dim=o.projection_dim),
        trackstar_cfg=TrackstarConfig(
            query=_query(query_dir), preprocess_cfg=PreprocessConfig(unit_normalize=o.unit_normalize),
            score_cfg=ScoreConfig(score="individual", precision="fp32"),
            target_downweight_components=o.target_downweight_components, mix_hessians=o.mix_hessians,
            stats_sample_size=o.stats_sample_size,
        ),
    )


def _ekfac(index_cfg, o: EkfacOptions, query_dir: Path):
    from bergson.cli.commands import Ekfac
    from bergson.config.config import (
        HessianConfig,
        HessianPipelineConfig,
        InversionConfig,
        PreprocessConfig,
        ScoreConfig,
    )

    return Ekfac(
        index_cfg=replace(index_cfg, projection_dim=o.projection_dim),
        hessian_cfg=HessianConfig(method=o.hessian, ev_correction=o.ev_correction),
        score_cfg=ScoreConfig(score="individual", precision="fp32"),
        preprocess_cfg=PreprocessConfig(),
        hessian_pipeline_cfg=HessianPipelineConfig(
            query=_query(query_dir), inversion_cfg=InversionConfig(damping_factor=o.damping_factor)),
    )


def _trak(index_cfg, o: TrakOptions, query_dir: Path):
    from bergson.cli.commands import Trak
    from bergson.config.config import InversionConfig, PreprocessConfig, ScoreConfig, TrakConfig

    return Trak(
        index_cfg=replace(index_cfg, projection_dim=o.projection_dim, projection_target="global", loss_fn="log_odds"),
        trak_cfg=TrakConfig(
            query=_query(query_dir),
            preprocess_cfg=PreprocessConfig(inversion_cfg=InversionConfig(damping_factor=o.damping_factor)),
            score_cfg=ScoreConfig(score="individual", precision="fp32"), stats_sample_size=o.stats_sample_size,
        ),
    )
