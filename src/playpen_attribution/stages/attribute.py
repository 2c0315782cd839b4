"""Stage `attribute`: score every pool row against the attribution query set with Bergson.

Reads `data/` (train_base pool and attr_query split), the base model and `train_base/adapter`.
Both splits go through the one tokenization function and reach Bergson as pre-tokenized
`input_ids` + `labels` (never Bergson's own prompt/completion templating), so attribution sees
exactly the tokens the fine-tune trained on. Bergson runs in this process: one start-up per stage; with
`attribute.nproc_per_node` > 1 (or `nnode` > 1) Bergson spawns that many worker processes itself (Gloo
on CPU, NCCL and one GPU each on GPUs) for every build, Hessian and score step.

How `attribute:` maps onto Bergson (the full table is in `playpen_attribution.attribution.scoring`):

- `mode`: `mean` = dot with the mean query gradient (Bergson `score: individual` against the per-row
  query index, averaged over query columns = `aggregation: mean`); `nearest` = Bergson
  `score: nearest` (max over query rows); `individual` = `score: individual`, one column per query
  row kept in `individual_scores.npz`, their mean as the score; `group_mean_max` = the individual
  columns averaged within each query `group_id`, max over groups (LESS), also kept in the npz.
- `preconditioning`: `none`; `query` = Bergson `hessian --method autocorrelation` on the query rows,
  passed as `hessian_path`; `mixed` = the same Hessian on query and pool, mixed as
  `c*H_query + (1-c)*H_pool` with `mixing_coefficient` = c (Bergson's `Mix`, with c fixed).
- `unit_normalize` (`PreprocessConfig.unit_normalize`); the other fields are Bergson's `IndexConfig`
  fields of the same names, mapped in one place (`attribution.bergson_runs.index_config`);
  `token_batch_size: auto` is resolved to an int before Bergson runs (sized from free GPU memory on
  CUDA, min(max_position_embeddings, 2048) on CPU, never below the longest tokenized row) and
  recorded in the manifest (`token_batch_size`, with `precision`: bf16 on CUDA, fp32 on CPU by default).
- The query index (and query Hessian) is a cached artifact under `cache_dir/query_<key>/`, keyed by
  the model's and adapter's file contents, the query ids and tokens and the projection and loss
  settings; a second run with the same key reuses it (logged "reused query index"); a cached index
  whose projection does not match is rebuilt, never used.

`method` (default `gradient_cosine`, all of the above) picks the estimator: `trackstar`, `ekfac` and `trak`
run Bergson's own pipelines (`attribution.bergson_methods`, options in `attribute.<method>`), their per-query
columns reduced under `mode` the same way; `magic` is refused by the config (`attribution.methods`). With
`methods: [...]` the pool is scored by each, one after another in this process: each method's files go to
`methods/<method>/` (scores.jsonl, summary.json, individual_scores.npz when kept, bergson/), the top-level files
are the first method's, and the manifest's `methods` holds each one's seconds and peak memory (peaks reset
before each; the stage's peak is the highest). The stage config holds the options of the methods that run only.

Writes `attribute/`: `scores.jsonl` (example_id, score, rank; non-finite scores rank last and are
counted, never zeroed), `row_diagnostics.jsonl` (example_id, rank, score, loss under the base
adapter — the mean completion-token loss Bergson computed for the row's gradient, a forward pass
only with label smoothing —, token length, outcome, group_id), `summary.json` (coverage, min/max/mean, precision of
success rows in the top-k vs the pool's success fraction, top-k outcome composition at 50/100/200/k,
AUROC, Pearson/Spearman of score vs length and vs loss), `score_histogram.png` (planted vs clean rows when
the source planted some, else by outcome; the top-k cut at select.k drawn),
`score_vs_length.png`, `individual_scores.npz` (modes individual and group_mean_max: `example_ids`,
`query_ids`, `scores` [n_pool, n_query]) and `bergson/` (Bergson's own folders, replayable configs).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from playpen_attribution.attribution import diagnostics as diag
from playpen_attribution.attribution.bergson_methods import score_with_method
from playpen_attribution.attribution.bergson_runs import Scoring, model_location
from playpen_attribution.attribution.methods import DEFAULT_METHOD, reduce_columns
from playpen_attribution.attribution.scoring import PoolScores, score_pool, validate_inputs
from playpen_attribution.attribution.selection import rank_ids
from playpen_attribution.config import ExperimentConfig
from playpen_attribution.core.adapters import config_file, read_adapter
from playpen_attribution.core.batch_sizing import bergson_token_batch
from playpen_attribution.core.modeling import (
    device,
    load_model,
    load_tokenizer,
    model_facts,
    torch_dtype,
)
from playpen_attribution.core.row_forward import row_losses_and_embeddings
from playpen_attribution.core.tokenization import tokenize_rows, truncation_counts
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger
from playpen_attribution.run import artifacts, peak_memory, stage_table
from playpen_attribution.run.model_paths import TINY, base_model
from playpen_attribution.run.stage_folder import run_stage

METHOD_OPTIONS = ("trackstar", "ekfac", "trak")
"""The `attribute:` sections of the methods' own options."""

PROCESS_FIELDS = ("nproc_per_node", "nnode")
"""How many Bergson processes score: speed only (scores agree to float tolerance), so recorded in the
manifest but kept out of the stage's fingerprint: a finished attribute/ is reused at any width."""

CPU_TOKEN_BATCH = 2048
"""`token_batch_size: auto` on CPU: min(max_position_embeddings, this), never below the longest row."""


def scoring_for(
    cfg: ExperimentConfig, model_path: str | Path | None = None, rows: Iterable = (), tokenizer: str | None = None,
) -> Scoring:
    """What Bergson runs with: `cfg.attribute` whole, `token_batch_size` resolved to an int (see `token_batch_size`).

    `model_path` (default: `model.base`) and `rows` (tokenized datasets, e.g. pool and query) only
    matter for `token_batch_size: auto`. Precision follows `model.dtype`: bf16 on a CUDA GPU and fp32
    on CPU for `auto`.
    """
    import torch

    return Scoring(
        attribute=cfg.attribute, token_batch_size=token_batch_size(cfg, model_path, rows),
        precision="bf16" if torch_dtype(cfg.model.dtype) == torch.bfloat16 else "fp32",
        tokenizer=str(tokenizer or cfg.model.tokenizer or model_path or cfg.model.base),
    )


def token_batch_size(cfg: ExperimentConfig, model_path: str | Path | None = None, rows: Iterable = ()) -> int:
    """`attribute.token_batch_size` as an int: the configured one, or `auto` resolved.

    auto, on a CUDA GPU: `batch_sizing.bergson_token_batch` from `torch.cuda.mem_get_info()`'s free
    bytes and the model's config (vocab, width, depth, context); on CPU: min(max_position_embeddings,
    2048). Never below the longest row of `rows` (Bergson needs each row in one batch). A tiny base
    model without `model_path` uses `model.tiny.max_position_embeddings` (its context is the limit).
    Whether the result fits the model and the rows is checked once, by the scoring
    (`batch_sizing.check_token_batch`).
    """
    configured = cfg.attribute.token_batch_size
    if configured != "auto":
        return configured
    longest = max((len(ids) for ds in rows for ids in ds["input_ids"]), default=0)
    max_pos: int | None
    if model_path is None and cfg.model.base == TINY:
        max_pos, facts = cfg.model.tiny.max_position_embeddings, None
    else:
        facts = model_facts(model_path if model_path is not None else cfg.model.base)
        max_pos = facts.max_positions
    limit = max_pos if max_pos is not None else CPU_TOKEN_BATCH
    if device() == "cuda" and facts is not None:
        import torch

        free, _ = torch.cuda.mem_get_info()
        resolved = bergson_token_batch(free, facts.vocab_size, facts.hidden_size, facts.num_layers,
                                       max_pos or 1 << 30, longest)
        logger.info("[attribute] token_batch_size auto: %d tokens (%.1f GiB free on the GPU, longest row %d)",
                    resolved, free / 2**30, longest)
    else:
        resolved = max(longest, min(limit, CPU_TOKEN_BATCH))
        logger.info("[attribute] token_batch_size auto: %d tokens (longest row %d)", resolved, longest)
    return resolved


def cache_dir(cfg: ExperimentConfig) -> Path:
    """Where query indexes are cached: `attribute.cache_dir`, else the user's cache folder."""
    if cfg.attribute.cache_dir:
        return Path(cfg.attribute.cache_dir)
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "playpen-attribution" / "query_index"


def base_losses(cfg: ExperimentConfig, model_path: str, adapter: Path, pool_ds, pad_token_id: int) -> np.ndarray:
    """Per-row mean completion loss under the base adapter, in pool order (NaN kept)."""
    model = load_model(model_path, adapter, dtype=cfg.model.dtype)
    losses, _ = row_losses_and_embeddings(model, pool_ds, pad_token_id, batch_size=32, desc="row losses")
    return losses


def run(cfg: ExperimentConfig, run_dir: Path, *, overwrite: bool = False) -> Path:
    run_dir = Path(run_dir)
    base = base_model(cfg.model, run_dir)
    model_path = base.path
    data_dir, train_dir = run_dir / artifacts.DATA, run_dir / artifacts.TRAIN_BASE
    inputs = base.inputs({"data": data_dir, "train_base": train_dir})

    def build(out: Path) -> dict:
        check_processes(cfg)
        pool = artifacts.load_split(data_dir, "train_base")
        query = artifacts.load_split(data_dir, "attr_query")
        if not query:
            raise UserError(f"{artifacts.split_path(data_dir, 'attr_query')}: the attr_query split is empty; "
                            "attribution needs query rows")
        if cfg.select.k > len(pool):
            raise UserError(f"select.k = {cfg.select.k} is larger than the pool "
                            f"({len(pool)} rows in {artifacts.split_path(data_dir, 'train_base')})")
        tokenizer = load_tokenizer(base.tokenizer, cfg.tokenize.chat_template)
        pool_ds, query_ds = tokenize_rows(tokenizer, pool, cfg.tokenize), tokenize_rows(tokenizer, query, cfg.tokenize)
        truncated = {"train_base": truncation_counts(tokenizer, pool, cfg.tokenize),
                     "attr_query": truncation_counts(tokenizer, query, cfg.tokenize)}
        if cfg.attribute.mode == "group_mean_max":
            query_ds = query_ds.add_column("group_id", _group_ids(query, data_dir))
        adapter = train_dir / artifacts.ADAPTER_DIR
        untracked = untracked_modules(cfg, adapter)
        scoring = scoring_for(cfg, model_path, (pool_ds, query_ds), base.tokenizer)
        methods = list(cfg.attribute.methods) or [cfg.attribute.method]
        several = bool(cfg.attribute.methods)
        results, costs = {}, {}
        for method in methods:  # with several, each method's own seconds and peak memory (reset before it)
            scope, started = peak_memory.reset_peaks() if several else None, time.perf_counter()
            where = artifacts.method_dir(out, method) if several else out
            results[method] = score_method(cfg, method, model_path, adapter, pool_ds, query_ds,
                                           where / artifacts.BERGSON_DIR, scoring)
            if scope is not None:  # several methods
                costs[method] = {"seconds": round(time.perf_counter() - started, 3), **peak_memory.peaks(scope),
                                 "query_index_reused": results[method].reused_query_index}
        result = results[methods[0]]
        ids = [r["example_id"] for r in pool]
        lengths = {eid: len(t) for eid, t in zip(ids, pool_ds["input_ids"], strict=True)}
        row_losses = next((r.row_losses for r in results.values() if r.row_losses is not None), None)
        if row_losses is None:  # Bergson's own loss per row saves a second forward pass over the pool
            row_losses = base_losses(cfg, model_path, adapter, pool_ds, tokenizer.pad_token_id)
        losses = dict(zip(ids, map(float, row_losses), strict=True))
        outcomes = {r["example_id"]: r["outcome"] for r in pool}
        planted = artifacts.load_planted(data_dir)
        scores = {eid: float(v) for eid, v in zip(ids, result.scores, strict=True)}
        summary = write_scores(out, cfg, scores, result, outcomes, lengths, losses, planted)
        for method in methods if several else ():
            method_scores = {eid: float(v) for eid, v in zip(ids, results[method].scores, strict=True)}
            write_scores(artifacts.method_dir(out, method), cfg, method_scores, results[method], outcomes, lengths,
                         losses, planted, method=method)
        artifacts.write_row_diagnostics(out, diag.row_diagnostics(pool, scores, lengths, losses))
        title = f"{cfg.name} ({cfg.attribute.mode}, {_title(cfg, methods[0])})"
        diag.plot_score_histogram(scores, diag.histogram_groups(scores, outcomes, planted),
                                  out / artifacts.SCORE_HISTOGRAM_PLOT, title, k=cfg.select.k)
        diag.plot_score_vs_length(scores, lengths, outcomes, out / artifacts.SCORE_VS_LENGTH_PLOT, title)
        if summary["non_finite"]:
            logger.warning("[attribute] %d of %d scores are not finite; they rank last", summary["non_finite"], len(ids))
        extra = {
            "truncated": truncated,
            "scores": {k: summary[k] for k in ("rows", "finite", "non_finite")},
            "query_index": {"key": result.query_key, "reused": result.reused_query_index,
                            "cache_dir": str(cache_dir(cfg))},
            "token_batch_size": scoring.token_batch_size,  # resolved (an int, also for `auto`)
            "precision": scoring.precision,
            "bergson_processes": {"nproc_per_node": cfg.attribute.nproc_per_node, "nnode": cfg.attribute.nnode},
            "untracked_modules": untracked,  # trained in full but not seen by Bergson (allowed explicitly)
        }
        if methods == [DEFAULT_METHOD]:  # the Bergson passes of gradient cosine, for tokens_per_s
            pool_tokens, query_tokens = (sum(map(len, ds["input_ids"])) for ds in (pool_ds, query_ds))
            query_passes = 0 if result.reused_query_index else 1 + (cfg.attribute.preconditioning != "none")
            mixed = cfg.attribute.preconditioning == "mixed"
            extra = {"tokens_processed": pool_tokens * (1 + mixed) + query_tokens * query_passes, **extra}
        else:
            extra["method"] = methods[0]
        if several:  # each method's cost; the stage's own peak is the highest method's (run.stage_folder)
            extra |= {"methods": costs, "part_peaks": [{k: c[k] for k in c if k.startswith("peak_")}
                                                       for c in costs.values()]}
        return extra

    stage_cfg = {
        "model": cfg.model.model_dump(mode="json"), "tokenize": cfg.tokenize.model_dump(mode="json"),
        "attribute": attribute_stage_config(cfg.attribute), "k": cfg.select.k,
    }
    command = stage_table.command_line(stage_table.ATTRIBUTE, cfg, run_dir)
    return run_stage(run_dir, artifacts.ATTRIBUTE, stage_cfg, inputs, build, command=command, overwrite=overwrite)


def score_method(cfg: ExperimentConfig, method: str, model_path, adapter: Path, pool_ds, query_ds, work_dir: Path,
                 scoring: Scoring) -> PoolScores:
    """The pool scored by one method (gradient cosine: `scoring.score_pool`, with its query-index cache; the
    others: Bergson's own pipeline, `bergson_methods`), its columns reduced under `attribute.mode`."""
    if method == DEFAULT_METHOD:
        return score_pool(Path(model_path), adapter, pool_ds, query_ds, work_dir, scoring, cache_dir(cfg))
    validate_inputs(model_location(model_path), adapter.resolve(), pool_ds, query_ds, scoring)
    logger.info("[attribute] scoring with Bergson's %s pipeline", method)
    found = score_with_method(method, getattr(cfg.attribute, method), model_path, adapter, pool_ds, query_ds,
                              work_dir, scoring)
    groups = list(query_ds["group_id"]) if cfg.attribute.mode == "group_mean_max" else None
    scores = reduce_columns(found.individual, cfg.attribute.mode, groups)
    return PoolScores(scores, found.individual, found.query_ids, "", False, found.row_losses)


def write_scores(out: Path, cfg: ExperimentConfig, scores: dict[str, float], result: PoolScores, outcomes: dict,
                 lengths: dict, losses: dict, planted: dict, method: str | None = None) -> dict:
    """scores.jsonl, summary.json and (modes individual, group_mean_max) individual_scores.npz in `out`; the summary."""
    out.mkdir(parents=True, exist_ok=True)
    artifacts.write_scores(out, scores, {eid: i + 1 for i, eid in enumerate(rank_ids(scores))})
    summary = {"mode": cfg.attribute.mode, **({"method": method} if method else {}),
               **diag.summarize(scores, outcomes, cfg.select.k, lengths=lengths, losses=losses)}
    if planted:  # the demo's truth: did attribution find the rows planted as harmful?
        summary["planted"] = diag.planted_check(scores, planted, cfg.select.k)
    artifacts.write_attribution_summary(out, summary)
    if cfg.attribute.mode in ("individual", "group_mean_max"):
        artifacts.write_individual_scores(out, list(scores), result.query_ids, result.individual)
    return summary


def _title(cfg: ExperimentConfig, method: str) -> str:
    return cfg.attribute.preconditioning if method == DEFAULT_METHOD else method


def attribute_stage_config(a) -> dict:
    """The `attribute:` part of the stage's config: every field but the process layout, with the options of only
    the methods that run (another method's options do not change these scores)."""
    used = list(a.methods) or [a.method]
    unused = {m for m in METHOD_OPTIONS if m not in used}
    return a.model_dump(mode="json", exclude=set(PROCESS_FIELDS) | unused)


def check_processes(cfg: ExperimentConfig) -> None:
    """On a GPU machine Bergson gives each of its nproc_per_node processes one visible GPU: refuse more processes."""
    import torch

    wanted, gpus = cfg.attribute.nproc_per_node, torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and wanted > gpus:
        raise UserError(f"attribute.nproc_per_node = {wanted}, but this node has {gpus} GPU(s); "
                        "Bergson runs one process per GPU")


def untracked_modules(cfg: ExperimentConfig, adapter: Path) -> list[str]:
    """The adapter's modules_to_save, which Bergson does not track: refused unless the config allows them."""
    modules = list(read_adapter(adapter).modules_to_save)
    if modules and not cfg.attribute.allow_untracked_modules:
        raise UserError(
            f"{config_file(adapter)}: the adapter trains {modules} in full (modules_to_save), but Bergson tracks "
            "only LoRA modules, so attribution would score part of what training changed; train LoRA only "
            "(train.lora.modules_to_save: []) or set attribute.allow_untracked_modules: true")
    if modules:
        logger.warning("[attribute] scoring without %s: attribute.allow_untracked_modules is set", modules)
    return modules


def _group_ids(query: list[dict], data_dir: Path) -> list[str]:
    missing = [r["example_id"] for r in query if not r.get("group_id")]
    if missing:
        raise UserError(f"{artifacts.split_path(data_dir, 'attr_query')}: row {missing[0]} has no group_id "
                        f"({len(missing)} such rows); attribute.mode group_mean_max needs one on every query row")
    return [str(r["group_id"]) for r in query]
