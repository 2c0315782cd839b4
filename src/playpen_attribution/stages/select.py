"""Stage `select`: build every arm of one sweep seed from named rankings.

A ranking maps example_id -> score, higher first (`ranking`):

- `attribution`: `attribute/scores.jsonl`;
- `length`: token length under the one tokenization function (computed here);
- `loss`, `embedding`: `baselines/row_baselines.jsonl` (loss under the base adapter, cosine of the
  mean-pooled final hidden state to the mean query embedding);
- `metadata:<column>`: a numeric column of the pool rows (rows without it rank last, counted).

Arms are `config.PlannedArm`s (`select.plan()`): top n, matched random, rank window, random beyond a
rank, full pool (`selection.build_arms`). Random arms are drawn with the sweep seed.

Reads `seed_<s>/data/`, the rankings' stage folders (through the seed folder's links) and the base
model's tokenizer. Writes `seed_<s>/select/selections.json`: for each arm its example_ids in
rank/draw order, row and token counts, outcome counts, strata, its resolved spec (kind, ranking, n,
ranks, beyond, versus, family, k) and the seed; random arms also record how many rows they matched
on outcome x length bin. The manifest counts rows each ranking could not score and the overlap
between every pair of arms.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict
from itertools import combinations
from pathlib import Path

from playpen_attribution import artifacts, sweep
from playpen_attribution.config import ExperimentConfig
from playpen_attribution.errors import UserError
from playpen_attribution.modeling import load_tokenizer
from playpen_attribution.selection import build_arms, strata
from playpen_attribution.stage_folder import run_stage
from playpen_attribution.tokenization import tokenize_row

RANKING_STAGES = {"attribution": artifacts.ATTRIBUTE, "loss": artifacts.BASELINES, "embedding": artifacts.BASELINES,
                  "sae": artifacts.PREDICT}
"""Ranking -> the stage folder it is read from (length and metadata come from the pool itself)."""


def metadata_ranking(pool: list[dict], column: str) -> dict[str, float]:
    """A numeric pool column as a ranking; rows without a value get NaN (ranked last)."""
    if not any(row.get(column) is not None for row in pool):
        raise UserError(f"select.metadata_column = {column!r}: no pool row has that column "
                        f"(columns of the first row: {', '.join(sorted(pool[0])) if pool else 'none'})")
    out = {}
    for index, row in enumerate(pool):
        value = row.get(column)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UserError(f"pool row {index} ({row['example_id']}): {column} = {value!r} is not a number")
        out[row["example_id"]] = float("nan") if value is None else float(value)
    return out


def load_named_ranking(name: str, run_dir: Path, pool: list[dict], lengths: dict[str, int]) -> dict[str, float]:
    """One ranking by name (see the module docstring)."""
    if name == "attribution":
        return artifacts.load_scores(run_dir / artifacts.ATTRIBUTE)
    if name == "length":
        return {eid: float(n) for eid, n in lengths.items()}
    if name in artifacts.BASELINE_RANKINGS:
        path = run_dir / artifacts.BASELINES / artifacts.ROW_BASELINES_FILE
        return artifacts.load_ranking(path, artifacts.BASELINE_RANKINGS[name])
    if name == "sae":  # the SAE predictor's forecast of attribution, no gradients
        return artifacts.load_ranking(run_dir / artifacts.PREDICT / artifacts.PREDICTED_SCORES, "predicted")
    if name.startswith("metadata:"):
        return metadata_ranking(pool, name.removeprefix("metadata:"))
    raise UserError(f"ranking {name!r} is not known")


def _arm_summary(ids: list[str], rows: dict[str, dict], lengths: dict[str, int], stratum: dict[str, str]) -> dict:
    return {
        "example_ids": ids,
        "rows": len(ids),
        "tokens": sum(lengths[i] for i in ids),
        "outcomes": dict(Counter(rows[i]["outcome"] for i in ids)),
        "strata": dict(sorted(Counter(stratum[i] for i in ids).items())),
    }


def build_selections(cfg: ExperimentConfig, pool: list[dict], seed: int, run_dir: Path, tokenizer) -> tuple[dict, dict]:
    """(arm name -> summary with example_ids, manifest extras)."""
    rows = {r["example_id"]: r for r in pool}
    lengths = {
        eid: len(tokenize_row(tokenizer, row, cfg.tokenize.format, cfg.tokenize.max_length)["input_ids"])
        for eid, row in rows.items()
    }
    plan = cfg.select.plan()
    rankings = {}
    for name in sorted({arm.ranking for arm in plan if arm.ranking}):
        scores = load_named_ranking(name, run_dir, pool, lengths)
        if set(scores) != set(rows):
            source = run_dir / RANKING_STAGES.get(name, "")
            raise UserError(f"ranking {name!r} ({source}) does not score exactly the pool's example_ids "
                            f"({len(set(scores) - set(rows))} unknown, {len(set(rows) - set(scores))} missing); rerun it")
        rankings[name] = scores
    stratum = strata({e: r["outcome"] for e, r in rows.items()}, lengths, cfg.select.length_bins)
    arms = build_arms(plan, rankings, list(rows), stratum, seed, cfg.select.allow_overlap)
    selections = {}
    for arm in plan:
        built = arms[arm.name]
        spec = {k: v for k, v in asdict(arm).items() if k != "name"}
        selections[arm.name] = _arm_summary(built["example_ids"], rows, lengths, stratum) | spec | {"seed": seed} | (
            {"matching": built["matching"]} if "matching" in built else {})
    sets = {name: set(s["example_ids"]) for name, s in selections.items()}
    extra = {
        "seed": seed,
        "unscored_rows": {name: sum(not math.isfinite(v) for v in s.values()) for name, s in rankings.items()},
        "overlaps": {f"{a}&{b}": len(sets[a] & sets[b]) for a, b in combinations(sets, 2) if sets[a] & sets[b]},
    }
    return selections, extra


def run(cfg: ExperimentConfig, run_dir: Path, model_path: str, overwrite: bool = False, seed: int | None = None) -> Path:
    """Select the arms of one sweep seed (every seed when None) into `seed_<s>/select/`; the last folder."""
    out_dir = None
    for s in [seed] if seed is not None else sweep.seeds_of(cfg):
        out_dir = _run_seed(sweep.seed_config(cfg, s), sweep.seed_run_dir(cfg, run_dir, s), model_path, s, overwrite)
    return out_dir


def _run_seed(cfg: ExperimentConfig, seed_dir: Path, model_path: str, seed: int, overwrite: bool) -> Path:
    data_dir = seed_dir / artifacts.DATA
    plan = cfg.select.plan()
    read = sorted({RANKING_STAGES[arm.ranking] for arm in plan if arm.ranking in RANKING_STAGES})
    inputs = {"data": data_dir} | {stage: seed_dir / stage for stage in read}

    def build(out: Path) -> dict:
        pool = artifacts.load_split(data_dir, "train_base")
        selections, extra = build_selections(cfg, pool, seed, seed_dir, load_tokenizer(model_path))
        (out / artifacts.SELECTIONS_FILE).write_text(json.dumps(selections, indent=1) + "\n")
        return extra | {"arms": {name: {k: v for k, v in arm.items() if k != "example_ids"}
                                 for name, arm in selections.items()}}

    stage_cfg = {"select": cfg.select.model_dump(mode="json"), "tokenize": cfg.tokenize.model_dump(mode="json"),
                 "seed": seed}
    return run_stage(seed_dir, artifacts.SELECT, stage_cfg, inputs, build, overwrite)
