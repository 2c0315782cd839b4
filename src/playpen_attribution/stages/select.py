"""Stage `select`: build every arm of one sweep seed from named rankings.

A ranking maps example_id -> score, higher first (`ranking`):

- `attribution`: `attribute/scores.jsonl`; `attribution@<method>`: `attribute/methods/<method>/scores.jsonl`
  (with `attribute.methods`, the per-method arms `top_k@<method>`, ...: `arms.plan_arms`);
- `length`: token length under the one tokenization function (computed here);
- `loss`, `embedding`: `baselines/row_baselines.jsonl` (loss under the base adapter, cosine of the
  mean-pooled final hidden state to the mean query embedding);
- `metadata:<column>`: a numeric column of the pool rows (rows without it rank last, counted);
- `probe@<L>`: the residual probe of block L (`sae.probe_layers`), the `probe@<L>` column of
  `predict/predicted_scores.jsonl` (cross-fitted) or `predict/candidate_scores.jsonl` (the candidates): the
  ranking of `probe_top_k@<L>` and its control.

With `select.stratify_by`, every top n is taken per value of that column in proportion to the split's rows
(`selection.stratified_top`; each top arm records its quotas under `matching.stratified_quotas`, the manifest
the rows per value under `stratify_by`), and the matched controls' strata hold that column beside
`select.match_column`. The length arm `longest_label_k` takes the longest label-passing rows up to top_k's
completion tokens (`selection.longest_to_tokens`, recorded under `matching`).

Arms are `attribution.arms.PlannedArm`s (`plan_arms(select)`): top n, matched random, rank window, random beyond a
rank, full pool (`selection.build_arms`). Random arms are drawn with the sweep seed.

Predictor arms (ranked by `sae` or `probe`, and their matched controls) are drawn from the
`candidates` split when data/ has one (`select.predictor_split`; `arms.arm_split`), ranked by
`predict/candidate_scores.jsonl` (the predictor fitted on the scored pool, applied to rows it never
saw): their strata, token matching and draws use the candidates alone, and each selection records
`split: candidates`. Without candidates they rank the pool by the cross-fitted predictions.

Works in one seed's folder `seed_<s>/` (the seed is the config's `run_seed`). Reads its `data/`, the
rankings' stage folders (through the seed folder's links) and the base model's tokenizer. Writes `seed_<s>/select/selections.json`: for each arm its example_ids in
rank/draw order, row and token counts, outcome counts, strata, its resolved spec (kind, ranking, n,
ranks, beyond, versus, family, k) and the seed; random arms also record how many rows they matched
on outcome x length bin (`select.match_column` replaces outcome, e.g. category; with `select.match_tokens`
also their total completion tokens, see `attribution.selection`). Every arm records its token budget
(`tokens`, and `completion_tokens`: the supervised tokens). The manifest counts rows each ranking could not score and the overlap
between every pair of arms.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict
from itertools import combinations
from pathlib import Path

from playpen_attribution.attribution.arms import arm_split, plan_arms, probe_layer
from playpen_attribution.attribution.selection import build_arms, strata
from playpen_attribution.config import ExperimentConfig
from playpen_attribution.core.jsonl import read_jsonl
from playpen_attribution.core.modeling import load_tokenizer
from playpen_attribution.core.rows import CANDIDATES
from playpen_attribution.core.tokenization import IGNORE_INDEX, tokenize_row
from playpen_attribution.errors import UserError
from playpen_attribution.run import artifacts, stage_table
from playpen_attribution.run.artifacts import ArmSelection
from playpen_attribution.run.model_paths import base_model
from playpen_attribution.run.stage_folder import run_stage


def metadata_ranking(pool: list[dict], column: str) -> dict[str, float]:
    """A numeric pool column as a ranking; rows without a value get NaN (ranked last)."""
    if not any(row.get(column) is not None for row in pool):
        raise UserError(f"select.metadata_column = {column!r}: no pool row has that column "
                        f"(columns of the first row: {', '.join(sorted(pool[0])) if pool else 'none'})")
    out = {}
    for index, row in enumerate(pool, start=1):
        value = row.get(column)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UserError(f"pool row {index} ({row['example_id']}): {column} = {value!r} is not a number")
        out[row["example_id"]] = float("nan") if value is None else float(value)
    return out


def _column(row: dict, column: str | None, field: str):
    if row.get(column) is None:
        raise UserError(f"{field} = {column!r}: pool row {row['example_id']} has no value in that column")
    return row[column]


def load_named_ranking(name: str, run_dir: Path, pool: list[dict], lengths: dict[str, int]) -> dict[str, float]:
    """One ranking by name (see the module docstring)."""
    if name in artifacts.RANKING_FILES:  # attribution, loss, embedding, sae: a stage folder's file
        return artifacts.load_stage_ranking(run_dir, name)
    if name.startswith("attribution@"):  # one method's scores when attribute scored with several
        return artifacts.load_method_ranking(run_dir, name)
    if name == "length":
        return {eid: float(n) for eid, n in lengths.items()}
    if name.startswith("metadata:"):
        return metadata_ranking(pool, name.removeprefix("metadata:"))
    if probe_layer(name) is not None:
        return layer_probe_ranking(run_dir, name, "train_base")
    raise UserError(f"ranking {name!r} is not known")


def layer_probe_ranking(run_dir: Path, name: str, split: str) -> dict[str, float]:
    """The ranking `probe@<L>` of the pool (cross-fitted) or of the candidates, from the predict folder."""
    path = Path(run_dir) / artifacts.PREDICT / (artifacts.CANDIDATE_SCORES if split == CANDIDATES
                                                else artifacts.PREDICTED_SCORES)
    if not path.is_file():
        raise UserError(f"{path}: not found; run `predict` before `select` (arm ranked by {name})")
    first = next(iter(read_jsonl(path)), {})
    if name not in first:
        raise UserError(f"{path} has no column {name!r}: block {probe_layer(name)} was not in sae.probe_layers when "
                        "`sae` and `predict` ran (or sae/candidates has no probe residuals); rerun `sae` and `predict` "
                        "with --overwrite")
    return artifacts.load_ranking(path, name)


def _draw(cfg: ExperimentConfig, plan: list, rows: dict[str, dict], seed: int, run_dir: Path, tokenizer,
          split: str) -> tuple[dict[str, ArmSelection], dict]:
    """The arms of `plan` drawn from `rows` (one split): (arm -> selection, {"unscored": rows each ranking could
    not score, "stratify_by": rows per value of select.stratify_by when set})."""
    tok, sel = cfg.tokenize, cfg.select
    encoded = {eid: tokenize_row(tokenizer, row, tok) for eid, row in rows.items()}
    lengths = {eid: len(e["input_ids"]) for eid, e in encoded.items()}
    completion = {eid: sum(t != IGNORE_INDEX for t in e["labels"]) for eid, e in encoded.items()}
    pool = list(rows.values())
    rankings = {}
    for name in sorted({arm.ranking for arm in plan if arm.ranking}):
        if split == CANDIDATES and probe_layer(name) is not None:
            scores = layer_probe_ranking(run_dir, name, split)
            source = run_dir / artifacts.PREDICT / artifacts.CANDIDATE_SCORES
        elif split == CANDIDATES:
            scores = artifacts.load_candidate_ranking(run_dir, name)
            source = run_dir / artifacts.CANDIDATE_RANKING_FILES[name][0] / artifacts.CANDIDATE_RANKING_FILES[name][1]
        else:
            scores = load_named_ranking(name, run_dir, pool, lengths)
            source = run_dir / artifacts.RANKING_FILES.get(name, ("",))[0]
        if set(scores) != set(rows):
            raise UserError(f"ranking {name!r} ({source}) does not score exactly the {split} split's example_ids "
                            f"({len(set(scores) - set(rows))} unknown, {len(set(rows) - set(scores))} missing); rerun it")
        rankings[name] = scores
    groups = None
    if sel.stratify_by is not None:
        groups = {e: str(_column(r, sel.stratify_by, "select.stratify_by")) for e, r in rows.items()}
    matched_on = {e: _column(r, sel.match_column, "select.match_column") for e, r in rows.items()}
    if groups is not None and sel.stratify_by != sel.match_column:  # controls match the stratified column too
        matched_on = {e: f"{groups[e]}|{value}" for e, value in matched_on.items()}
    stratum = strata(matched_on, lengths, sel.length_bins)
    labelled = None
    if any(arm.kind in ("label", "longest_label") for arm in plan):
        labelled = {e for e, r in rows.items() if str(_column(r, sel.label_column, "select.label_column"))
                    in sel.label_values}
    arms = build_arms(plan, rankings, list(rows), stratum, seed,
                      tokens=completion if sel.match_tokens else None, tolerance=sel.token_tolerance, labelled=labelled,
                      groups=groups, completion=completion)
    selections = {}
    for arm in plan:
        ids = arms[arm.name]["example_ids"]
        spec = {k: v for k, v in asdict(arm).items() if k != "name"} | {"versus": list(arm.versus)}
        selections[arm.name] = ArmSelection(
            example_ids=ids, rows=len(ids), tokens=sum(lengths[i] for i in ids),
            completion_tokens=sum(completion[i] for i in ids),
            outcomes=dict(Counter(rows[i]["outcome"] for i in ids)),
            strata=dict(sorted(Counter(stratum[i] for i in ids).items())),
            **spec, seed=seed, matching=arms[arm.name].get("matching"), split=split)
    found: dict = {"unscored": {name: sum(not math.isfinite(v) for v in s.values()) for name, s in rankings.items()}}
    if groups is not None:
        found["stratify_by"] = dict(sorted(Counter(groups.values()).items()))
    if labelled is not None:
        found["label_filter_passed"] = len(labelled)
    return selections, found


def build_selections(cfg: ExperimentConfig, pool: list[dict], seed: int, run_dir: Path, tokenizer,
                     candidates: list[dict] | None = None) -> tuple[dict[str, ArmSelection], dict]:
    """(arm name -> its selection, manifest extras). With `candidates`, the predictor arms
    (`arms.arm_split`) are drawn from them, every other arm from the pool."""
    plan = plan_arms(cfg.select, cfg.attribute.methods)
    by_split = {"train_base": {r["example_id"]: r for r in pool}}
    if candidates is not None:
        by_split[CANDIDATES] = {r["example_id"]: r for r in candidates}
    drawn: dict[str, ArmSelection] = {}
    extra: dict = {"seed": seed, "unscored_rows": {}}
    for split, rows in by_split.items():
        arms = [a for a in plan if arm_split(cfg.select, a, candidates is not None) == split]
        if not arms:
            continue
        selections, found = _draw(cfg, arms, rows, seed, run_dir, tokenizer, split)
        drawn |= selections
        key = "unscored_rows" if split == "train_base" else "unscored_candidates"
        extra[key] = extra.get(key, {}) | found["unscored"]
        if "stratify_by" in found:  # rows per value of the column, per split the top n were stratified over
            extra.setdefault("stratify_by", {"column": cfg.select.stratify_by})[split] = found["stratify_by"]
        if "label_filter_passed" in found:
            extra.setdefault("label_filter_passed", {})[split] = found["label_filter_passed"]
    selections = {arm.name: drawn[arm.name] for arm in plan}
    sets = {name: set(s.example_ids) for name, s in selections.items()}
    extra["overlaps"] = {f"{a}&{b}": len(sets[a] & sets[b]) for a, b in combinations(sets, 2) if sets[a] & sets[b]}
    if candidates is not None:
        extra["drawn_from_candidates"] = [name for name, s in selections.items() if s.split == CANDIDATES]
    return selections, extra


def run(cfg: ExperimentConfig, run_dir: Path, *, overwrite: bool = False) -> Path:
    """Select the arms of the seed whose folder `run_dir` is into `run_dir/select/`."""
    run_dir, seed = Path(run_dir), cfg.run_seed
    data_dir = run_dir / artifacts.DATA
    plan = plan_arms(cfg.select, cfg.attribute.methods)
    read = sorted({artifacts.RANKING_FILES[arm.ranking.split("@")[0]][0] for arm in plan
                   if arm.ranking and arm.ranking.split("@")[0] in artifacts.RANKING_FILES})
    inputs = {"data": data_dir} | {stage: run_dir / stage for stage in read}

    def build(out: Path) -> dict:
        pool = artifacts.load_split(data_dir, "train_base")
        has_candidates = artifacts.split_path(data_dir, CANDIDATES).is_file()
        if cfg.select.predictor_split == CANDIDATES and not has_candidates:
            raise UserError(f"select.predictor_split = 'candidates' but {data_dir} has no candidates split "
                            "(add data.candidates)")
        uses = has_candidates and any(arm_split(cfg.select, a, True) == CANDIDATES for a in plan)
        candidates = artifacts.load_split(data_dir, CANDIDATES) if uses else None
        tokenizer = load_tokenizer(base_model(cfg.model, run_dir).tokenizer, cfg.tokenize.chat_template)
        selections, extra = build_selections(cfg, pool, seed, run_dir, tokenizer, candidates)
        artifacts.write_selections(out, selections)
        return extra | {"arms": {name: arm.summary() for name, arm in selections.items()}}

    stage_cfg = {"select": cfg.select.model_dump(mode="json"), "tokenize": cfg.tokenize.model_dump(mode="json"),
                 "seed": seed}
    if cfg.attribute.methods:  # the plan builds the attribution arms once per method
        stage_cfg["methods"] = list(cfg.attribute.methods)
    return run_stage(run_dir, artifacts.SELECT, stage_cfg, inputs, build,
                     command=stage_table.command_line(stage_table.SELECT, cfg, run_dir), overwrite=overwrite)
