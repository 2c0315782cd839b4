"""Stage `attribute`: score every pool row against the attribution query set with Bergson.

Reads `data/` (train_base pool and attr_query split), the base model and `train_base/adapter`.
Both splits go through the one tokenization function and reach Bergson as pre-tokenized
`input_ids` + `labels` (never Bergson's own prompt/completion templating), so attribution sees
exactly the tokens the fine-tune trained on. Bergson runs in this process: one start-up per stage.

Settings map onto Bergson as documented in `playpen_attribution.bergson_scoring`: `mode: mean` is
the dot product with the mean query gradient, `preconditioning: query` fits Bergson's Hessian
(autocorrelation) on the query rows, `projection_dim` and `unit_normalize` are Bergson's own.

Writes `attribute/`: `scores.jsonl` (example_id, score, rank; non-finite scores rank last and are
counted, never zeroed), `summary.json` (coverage, min/max/mean, top-k outcome composition,
precision of success rows in the top-k vs the pool's success fraction), and `bergson/` (Bergson's
own folders with their replayable configs).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from playpen_attribution import artifacts
from playpen_attribution.bergson_scoring import ScoringSettings, score_pool
from playpen_attribution.config import ExperimentConfig
from playpen_attribution.errors import UserError
from playpen_attribution.jsonl import write_jsonl
from playpen_attribution.modeling import load_tokenizer, torch_dtype
from playpen_attribution.selection import rank_ids
from playpen_attribution.stage_folder import run_stage
from playpen_attribution.tokenization import tokenize_rows


def summarize(scores: dict[str, float], outcomes: dict[str, str], k: int) -> dict:
    """Coverage and the planted-signal check: the share of success rows in the top-k vs the pool."""
    finite = [s for s in scores.values() if math.isfinite(s)]
    ranked = rank_ids(scores)
    k = min(k, len(ranked))
    top = ranked[:k]
    successes = sum(outcomes[e] == "success" for e in top)
    composition = {}
    for cut in sorted({50, 100, 200, k}):
        if cut <= len(ranked):
            head = ranked[:cut]
            composition[str(cut)] = {o: sum(outcomes[e] == o for e in head) for o in sorted(set(outcomes.values()))}
    return {
        "rows": len(scores),
        "finite": len(finite),
        "non_finite": len(scores) - len(finite),
        "min": min(finite) if finite else None,
        "max": max(finite) if finite else None,
        "mean": sum(finite) / len(finite) if finite else None,
        "k": k,
        "precision_success_at_k": successes / k if k else 0.0,
        "pool_success_fraction": sum(o == "success" for o in outcomes.values()) / len(outcomes),
        "top_k_composition": composition,
    }


def settings_for(cfg: ExperimentConfig) -> ScoringSettings:
    precision = "bf16" if torch_dtype(cfg.model.dtype).is_floating_point and str(torch_dtype(cfg.model.dtype)) == "torch.bfloat16" else "fp32"
    return ScoringSettings(
        projection_dim=cfg.attribute.projection_dim,
        preconditioning=cfg.attribute.preconditioning,
        unit_normalize=cfg.attribute.unit_normalize,
        token_batch_size=cfg.attribute.token_batch_size,
        precision=precision,
    )


def run(cfg: ExperimentConfig, run_dir: Path, model_path: str, overwrite: bool = False) -> Path:
    run_dir = Path(run_dir)
    data_dir, train_dir = run_dir / artifacts.DATA, run_dir / artifacts.TRAIN_BASE
    inputs = {"data": data_dir, "train_base": train_dir}
    if cfg.model.base == "tiny":
        inputs["base_model"] = run_dir / artifacts.BASE_MODEL

    def build(out: Path) -> dict:
        pool = artifacts.load_split(data_dir, "train_base")
        query = artifacts.load_split(data_dir, "attr_query")
        if not query:
            raise UserError(f"{data_dir}: the attr_query split is empty; attribution needs query rows")
        tokenizer = load_tokenizer(model_path)
        fmt, max_len = cfg.tokenize.format, cfg.tokenize.max_length
        values = score_pool(
            Path(model_path), train_dir / artifacts.ADAPTER_DIR,
            tokenize_rows(tokenizer, pool, fmt, max_len), tokenize_rows(tokenizer, query, fmt, max_len),
            out / artifacts.BERGSON_DIR, settings_for(cfg),
        )
        scores = {r["example_id"]: float(v) for r, v in zip(pool, values)}
        ranks = {eid: i + 1 for i, eid in enumerate(rank_ids(scores))}
        write_jsonl(out / artifacts.SCORES_FILE, [
            {"example_id": eid, "score": s if math.isfinite(s) else None, "rank": ranks[eid]} for eid, s in scores.items()
        ])
        summary = summarize(scores, {r["example_id"]: r["outcome"] for r in pool}, cfg.select.k)
        (out / artifacts.ATTRIBUTION_SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
        return {"scores": {k: summary[k] for k in ("rows", "finite", "non_finite")}}

    stage_cfg = {
        "model": cfg.model.model_dump(mode="json"), "tokenize": cfg.tokenize.model_dump(mode="json"),
        "attribute": cfg.attribute.model_dump(mode="json"), "k": cfg.select.k,
    }
    return run_stage(run_dir, artifacts.ATTRIBUTE, stage_cfg, inputs, build, overwrite)
