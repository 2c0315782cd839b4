"""Stage `baselines`: per-row loss, length and embedding similarity under the base adapter.

Runs only when an arm ranks by `loss` or `embedding` (`needed`). Reads `data/` (the pool and the
attr_query split), the base model and `train_base/adapter`. One batched forward pass
(`row_forward.row_losses_and_embeddings`) over the pool gives each row's mean completion-token NLL
and its mean-pooled final hidden state; one over the query rows gives their embeddings. A row's
`embedding_cosine` is the cosine of its embedding to the mean query embedding (the usual
representation baseline). Rows go through the one tokenization function, so `length` is the token
count training sees.

Writes `baselines/row_baselines.jsonl` (example_id, length, loss, embedding_cosine; non-finite values
are written as null, counted in the manifest, and rank last).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from playpen_attribution.attribution.arms import plan_arms
from playpen_attribution.config import ExperimentConfig
from playpen_attribution.core.modeling import load_model, load_tokenizer
from playpen_attribution.core.row_forward import row_losses_and_embeddings
from playpen_attribution.core.tokenization import tokenize_rows
from playpen_attribution.errors import UserError
from playpen_attribution.run import artifacts, stage_table
from playpen_attribution.run.model_paths import base_model
from playpen_attribution.run.stage_folder import run_stage


def needed(cfg: ExperimentConfig) -> bool:
    """Whether any planned arm ranks by a field this stage writes."""
    return any(arm.ranking in artifacts.BASELINE_RANKINGS for arm in plan_arms(cfg.select, cfg.attribute.methods))


def cosine_to_mean(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Cosine of each row vector to the mean of the query vectors (NaN for a zero vector)."""
    centre = queries.mean(axis=0)
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(centre)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, rows @ centre / norms, np.nan)


def run(cfg: ExperimentConfig, run_dir: Path, *, overwrite: bool = False) -> Path:
    run_dir = Path(run_dir)
    base = base_model(cfg.model, run_dir)
    data_dir, train_dir = run_dir / artifacts.DATA, run_dir / artifacts.TRAIN_BASE
    inputs = base.inputs({"data": data_dir, "train_base": train_dir})

    def build(out: Path) -> dict:
        pool = artifacts.load_split(data_dir, "train_base")
        query = artifacts.load_split(data_dir, "attr_query")
        if not query:
            raise UserError(f"{data_dir}: the attr_query split is empty; the embedding baseline needs query rows")
        tokenizer = load_tokenizer(base.tokenizer, cfg.tokenize.chat_template)
        model = load_model(base.path, train_dir / artifacts.ADAPTER_DIR, dtype=cfg.model.dtype)
        batch = cfg.evaluate.batch_size
        pool_ds = tokenize_rows(tokenizer, pool, cfg.tokenize)
        losses, pool_emb = row_losses_and_embeddings(
            model, pool_ds, tokenizer.pad_token_id, batch, embeddings=True, desc="baselines pool")
        query_ds = tokenize_rows(tokenizer, query, cfg.tokenize)
        _, query_emb = row_losses_and_embeddings(model, query_ds, tokenizer.pad_token_id, batch, embeddings=True,
                                                 desc="baselines query")
        assert pool_emb is not None and query_emb is not None, "embeddings=True returns them"
        cosines = cosine_to_mean(pool_emb, query_emb)
        artifacts.write_row_baselines(out, [
            {"example_id": r["example_id"], "length": len(ids), "loss": loss, "embedding_cosine": cos}
            for r, ids, loss, cos in zip(pool, pool_ds["input_ids"], losses, cosines, strict=True)
        ])
        return {"rows": len(pool), "query_rows": len(query),
                "tokens_processed": sum(len(ids) for ds in (pool_ds, query_ds) for ids in ds["input_ids"]),
                "non_finite": {"loss": int(np.sum(~np.isfinite(losses))),
                               "embedding_cosine": int(np.sum(~np.isfinite(cosines)))}}

    stage_cfg = {"model": cfg.model.model_dump(mode="json"), "tokenize": cfg.tokenize.model_dump(mode="json"),
                 "batch_size": cfg.evaluate.batch_size}
    command = stage_table.command_line(stage_table.BASELINES, cfg, run_dir)
    return run_stage(run_dir, artifacts.BASELINES, stage_cfg, inputs, build, command=command, overwrite=overwrite)
