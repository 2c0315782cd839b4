"""Stage `select`: build the arms, all of size k.

Reads `data/` (the pool), `attribute/` (scores by example_id) and the base model's tokenizer (token
lengths come from the one tokenization function). Writes `select/selections.json`: for each arm
(`top_k`, `matched_random_k`) its example_ids in rank/draw order, row and token counts, outcome
counts and strata; the random arm also records how many rows it matched on outcome x length bin.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from playpen_attribution import artifacts
from playpen_attribution.config import ExperimentConfig
from playpen_attribution.errors import UserError
from playpen_attribution.modeling import load_tokenizer
from playpen_attribution.selection import matched_random, strata, top_k
from playpen_attribution.stage_folder import run_stage
from playpen_attribution.tokenization import tokenize_row

ARMS = ("top_k", "matched_random_k")


def _arm_summary(ids: list[str], rows: dict[str, dict], lengths: dict[str, int], stratum: dict[str, str]) -> dict:
    return {
        "example_ids": ids,
        "rows": len(ids),
        "tokens": sum(lengths[i] for i in ids),
        "outcomes": dict(Counter(rows[i]["outcome"] for i in ids)),
        "strata": dict(sorted(Counter(stratum[i] for i in ids).items())),
    }


def build_selections(cfg: ExperimentConfig, pool: list[dict], scores: dict[str, float], tokenizer) -> dict:
    rows = {r["example_id"]: r for r in pool}
    if set(scores) != set(rows):
        raise UserError("attribution scores and the pool do not hold the same example_ids; rerun `attribute`")
    lengths = {
        eid: len(tokenize_row(tokenizer, row, cfg.tokenize.format, cfg.tokenize.max_length)["input_ids"])
        for eid, row in rows.items()
    }
    stratum = strata({e: r["outcome"] for e, r in rows.items()}, lengths, cfg.select.length_bins)
    chosen = top_k(scores, cfg.select.k)
    randoms, matching = matched_random(chosen, stratum, cfg.select.seed, cfg.select.allow_overlap)
    return {
        "top_k": _arm_summary(chosen, rows, lengths, stratum),
        "matched_random_k": _arm_summary(randoms, rows, lengths, stratum) | {"matching": matching},
    }


def run(cfg: ExperimentConfig, run_dir: Path, model_path: str, overwrite: bool = False) -> Path:
    run_dir = Path(run_dir)
    data_dir, attr_dir = run_dir / artifacts.DATA, run_dir / artifacts.ATTRIBUTE

    def build(out: Path) -> dict:
        pool = artifacts.load_split(data_dir, "train_base")
        selections = build_selections(cfg, pool, artifacts.load_scores(attr_dir), load_tokenizer(model_path))
        (out / artifacts.SELECTIONS_FILE).write_text(json.dumps(selections, indent=1) + "\n")
        return {"arms": {name: {k: v for k, v in arm.items() if k != "example_ids"} for name, arm in selections.items()}}

    stage_cfg = {"select": cfg.select.model_dump(mode="json"), "tokenize": cfg.tokenize.model_dump(mode="json")}
    return run_stage(run_dir, artifacts.SELECT, stage_cfg, {"data": data_dir, "attribute": attr_dir}, build, overwrite)
