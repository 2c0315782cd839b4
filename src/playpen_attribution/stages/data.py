"""Stage `data`: build the dataset manifest and the three splits.

Reads: the configured source (`data.source.kind`: demo, instruct_demo, playpen_data, clembench, smoltalk, generic)
and, when `data.synthetic` is set, the synth command's rows, appended to the pool after filtering (and
after `data.pool_fraction` kept a seeded share of the source's own pool: the seed's half-train run).
Writes `data/`: `splits/{train_base,attr_query,eval}.jsonl` (rows of `playpen_attribution.core.rows`),
`config.yaml`, `manifest.json` with row counts per split and outcome, and the count of every row a
filter dropped (by default: aborted games everywhere, failed games in the query set; failed games
stay in the eval set, as in the published eval; then, for every source, exact duplicate rows within
and across splits, `sources.duplicates`, whose eval copy and then query copy are the ones kept), plus
whatever the source records (e.g. the demo's planted row ids). Every arm's size is checked against
the rows it is drawn from here (`arms.size_problems`), so a k larger than the pool stops the run
before any training.

With `data.validation_fraction`, also `splits/validation.jsonl`: groups of the eval split held out of it
(`with_validation`), the split `train.keep_best: validation` selects checkpoints on.

With `data.candidates`, also `splits/candidates.jsonl`: new rows never scored by gradients, from any
source run with the candidates' own seed (its `split`) and/or the synth command's rows (`build_candidates`).
They keep the pool's outcomes; a row equal to a pool, query or eval row or to an earlier candidate
(the same rule, `sources.duplicates`: candidates rank below every other split) or one whose example_id
another split holds is removed; `max_rows` keeps a seeded sample. Every removal is counted under
`dropped` as `candidates:<reason>`, and the manifest's `candidates` records the source's own info (e.g.
its planted ids).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from playpen_attribution.attribution.arms import arm_split, plan_arms, size_problems
from playpen_attribution.config import ExperimentConfig
from playpen_attribution.core.rows import CANDIDATES, OUTCOMES, ROW_COLUMNS, SPLITS, VALIDATION, SourceRows
from playpen_attribution.errors import UserError
from playpen_attribution.run import artifacts, stage_table
from playpen_attribution.run.model_paths import TINY
from playpen_attribution.run.stage_folder import run_stage
from playpen_attribution.sources.clembench import load_clembench
from playpen_attribution.sources.duplicates import drop_duplicate_rows
from playpen_attribution.sources.generic import load_generic
from playpen_attribution.sources.instruct_demo import generate_instruct_demo
from playpen_attribution.sources.playpen_data import load_playpen_data
from playpen_attribution.sources.smoltalk import load_smoltalk
from playpen_attribution.sources.splitting import sample_rows, split_by_group
from playpen_attribution.sources.synthetic import append_synthetic
from playpen_attribution.taboo.demo import generate_demo


def load_source(cfg: ExperimentConfig, source=None, seed: int | None = None) -> SourceRows:
    """The one seam where sources plug in; each source returns rows already split. `source` / `seed`
    replace `data.source` / `data.seed` (the candidates' source)."""
    source = cfg.data.source if source is None else source
    seed = cfg.data.seed if seed is None else seed
    if source.kind == "demo":
        return generate_demo(source, seed)
    if source.kind == "instruct_demo":
        return generate_instruct_demo(source, seed)
    if source.kind == "playpen_data":
        return load_playpen_data(source, seed)
    if source.kind == "clembench":
        return load_clembench(source, seed)
    if source.kind == "generic":
        return load_generic(source, seed)
    if source.kind == "smoltalk":
        from playpen_attribution.core.modeling import load_tokenizer

        if cfg.model.base == TINY:
            raise UserError("data.source.kind = 'smoltalk' needs a real model.base: its token cap uses that tokenizer")
        tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.base, cfg.tokenize.chat_template)
        return load_smoltalk(source, seed, tokenizer, cfg.tokenize.format)
    raise UserError(f"data.source.kind = {source.kind!r} is not supported")


def with_pool_fraction(cfg: ExperimentConfig, source: SourceRows) -> SourceRows:
    """Keep a seeded `data.pool_fraction` of the source's pool (before synthetic rows join it); the rest is
    counted as dropped (`pool_fraction`)."""
    pool, fraction = source.splits["train_base"], cfg.data.pool_fraction
    if fraction == 1:
        return source
    kept = sample_rows(pool, round(fraction * len(pool)), cfg.data.seed)
    dropped = dict(Counter(source.dropped) + Counter({"pool_fraction": len(pool) - len(kept)}))
    return SourceRows(splits=source.splits | {"train_base": kept}, dropped=dropped, info=source.info)


def with_synthetic(cfg: ExperimentConfig, source: SourceRows) -> SourceRows:
    """Append the synthetic rows to the pool, counting what the filters drop."""
    if cfg.data.synthetic is None:
        return source
    pool, dropped = append_synthetic(source.splits["train_base"], cfg.data.synthetic, source.splits["eval"])
    counts = Counter(source.dropped)
    counts.update({f"synthetic:{k}": v for k, v in dropped.items()})
    added = len(pool) - len(source.splits["train_base"])
    info = source.info | {"synthetic_rows_added": added, "synthetic_path": str(cfg.data.synthetic.path)}
    return SourceRows(splits=source.splits | {"train_base": pool}, dropped=dict(counts), info=info)


def check_rows(rows: list[dict], split: str) -> None:
    """Every row has the schema's columns, a known outcome, a non-empty completion and a unique id."""
    seen = set()
    for index, row in enumerate(rows, start=1):  # 1-based, like every row number in a message
        missing = [c for c in ROW_COLUMNS if c not in row]
        if missing:
            raise UserError(f"split {split}, row {index}: missing column(s) {', '.join(missing)}")
        if row["outcome"] not in OUTCOMES:
            raise UserError(f"split {split}, row {index} ({row['example_id']}): unknown outcome {row['outcome']!r}")
        if not isinstance(row["completion"], str) or not row["completion"].strip():
            raise UserError(f"split {split}, row {index} ({row['example_id']}): empty completion")
        if row["example_id"] in seen:
            raise UserError(f"split {split}, row {index}: duplicate example_id {row['example_id']}")
        seen.add(row["example_id"])


OUTCOME_FIELDS = {"train_base": "pool_outcomes", "attr_query": "query_outcomes", "eval": "eval_outcomes"}
"""Split -> the `data:` field listing the outcomes it keeps."""


def clean_splits(cfg: ExperimentConfig, source: SourceRows) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """Keep each split's configured outcomes (`data.pool_outcomes`, `query_outcomes`, `eval_outcomes`),
    then drop exact duplicate rows (`without_duplicates`), counting every dropped row by split and
    reason, and check the rows left (`check_rows`; an example_id repeated with other content is refused)."""
    missing = [s for s in SPLITS if s not in source.splits]
    if missing:
        raise UserError(f"data source produced no split(s) {', '.join(missing)}")
    keep = {split: getattr(cfg.data, field) for split, field in OUTCOME_FIELDS.items()}
    dropped = Counter(source.dropped)
    splits = {}
    for split in SPLITS:
        rows = source.splits[split]
        kept = [r for r in rows if r.get("outcome") in keep[split]]
        for r in rows:
            if r.get("outcome") not in keep[split]:
                dropped[f"{split}:{r.get('outcome')}"] += 1
        if not kept:
            raise UserError(f"split {split} is empty after filtering (source gave {len(rows)} rows; "
                            f"data.{OUTCOME_FIELDS[split]} keeps {keep[split]})")
        splits[split] = kept
    splits = without_duplicates(splits, dropped)
    for split, rows in splits.items():
        check_rows(rows, split)
    all_ids = [r["example_id"] for s in splits.values() for r in s]
    if len(all_ids) != len(set(all_ids)):
        raise UserError("the same example_id appears in more than one split")
    return splits, dict(dropped)


def with_validation(cfg: ExperimentConfig, splits: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """With `data.validation_fraction`, a share of the eval split's groups becomes the `validation` split
    (what `train.keep_best: validation` selects a checkpoint on); eval keeps the other groups, so no row or
    group is shared with the reported eval."""
    if cfg.data.validation_fraction == 0:
        return splits
    fraction = cfg.data.validation_fraction
    parts = split_by_group(splits["eval"], {VALIDATION: fraction, "eval": 1 - fraction}, cfg.data.seed)
    for name, rows in parts.items():
        if not rows:
            raise UserError(f"data.validation_fraction = {fraction}: the {name} split would be empty "
                            f"({len(splits['eval'])} eval rows in {len({r['group_id'] for r in splits['eval']})} groups)")
    return splits | {"eval": parts["eval"], VALIDATION: parts[VALIDATION]}


def without_duplicates(splits: dict[str, list[dict]], dropped: Counter) -> dict[str, list[dict]]:
    """The splits without exact duplicate rows (`sources.duplicates`: the eval copy kept first, then the
    query's), each removal added to `dropped`; a split left empty is refused."""
    before = {split: len(rows) for split, rows in splits.items()}
    splits, removed = drop_duplicate_rows(splits)
    dropped.update(removed)
    for split, rows in splits.items():
        if not rows:
            raise UserError(f"split {split} is empty once exact duplicates are removed ({before[split]} rows, "
                            f"each a copy of an earlier row or of a row in another split)")
    return splits


def build_candidates(cfg: ExperimentConfig, splits: dict[str, list[dict]]) -> tuple[list[dict], dict[str, int], dict]:
    """The candidates split (`data.candidates`): (rows, dropped counts keyed `candidates:<reason>`, info)."""
    cand = cfg.data.candidates
    assert cand is not None, "called only when data.candidates is set"
    rows: list[dict] = []
    dropped: Counter = Counter()
    info: dict = {"seed": cand.seed}
    if cand.source is not None:
        loaded = load_source(cfg, cand.source, cand.seed)
        if cand.split not in loaded.splits:
            raise UserError(f"data.candidates.split = {cand.split!r}: the candidates' source gave no such split")
        rows = list(loaded.splits[cand.split])
        dropped.update(loaded.dropped)  # what the candidates' source filtered (e.g. other_category), counted too
        info |= {"source": {"kind": cand.source.kind, **loaded.info}, "split": cand.split}
    if cand.synthetic is not None:
        rows, synth_dropped = append_synthetic(rows, cand.synthetic, splits["eval"])
        dropped.update({f"synthetic:{k}": v for k, v in synth_dropped.items()})
        info["synthetic_path"] = str(cand.synthetic.path)
    kept = [r for r in rows if r.get("outcome") in cfg.data.pool_outcomes]
    dropped.update(Counter(str(r.get("outcome")) for r in rows if r.get("outcome") not in cfg.data.pool_outcomes))
    deduped, removed = drop_duplicate_rows(splits | {CANDIDATES: kept})  # the other splits are duplicate-free already
    dropped.update({k.removeprefix(f"{CANDIDATES}:"): v for k, v in removed.items()})
    taken_ids = {r["example_id"] for split in splits.values() for r in split}
    dropped["example_id_in_another_split"] += sum(r["example_id"] in taken_ids for r in deduped[CANDIDATES])
    kept = [r for r in deduped[CANDIDATES] if r["example_id"] not in taken_ids]
    dropped = +dropped  # counts of zero stay out
    if cand.max_rows is not None and len(kept) > cand.max_rows:
        dropped["over_max_rows"] += len(kept) - cand.max_rows
        kept = sample_rows(kept, cand.max_rows, cand.seed)
    if not kept:
        raise UserError(f"data.candidates: no candidate row is left ({len(rows)} read; removed: {dict(dropped)})")
    check_rows(kept, CANDIDATES)
    return kept, {f"{CANDIDATES}:{k}": v for k, v in dropped.items()}, info


def shared_groups(splits: dict[str, list[dict]]) -> dict[str, int]:
    """How many `group_id`s two splits share (0 for a grouped split; the demo shares its target words on
    purpose: its eval asks for seen words with clue combinations never seen)."""
    groups = {name: {r.get("group_id") for r in rows} for name, rows in splits.items()}
    names = list(groups)
    return {f"{a}&{b}": len(groups[a] & groups[b]) for i, a in enumerate(names) for b in names[i + 1:]}


def check_arm_sizes(cfg: ExperimentConfig, splits: dict[str, list[dict]]) -> None:
    """Every arm against the rows it is drawn from (the pool, or the candidates for predictor arms)."""
    plan = plan_arms(cfg.select, cfg.attribute.methods)
    where = {"train_base": "data.source gives {} pool rows", CANDIDATES: "data.candidates gives {} candidate rows"}
    for split in (s for s in ("train_base", CANDIDATES) if s in splits):
        arms = [a for a in plan if arm_split(cfg.select, a, CANDIDATES in splits) == split]
        problems = size_problems(arms, len(splits[split]), "the candidates" if split == CANDIDATES else "the pool")
        if problems:
            raise UserError(f"{problems[0]} ({where[split].format(len(splits[split]))})"
                            + (f"; also {len(problems) - 1} more arm(s)" if len(problems) > 1 else ""))


def run(cfg: ExperimentConfig, run_dir: Path, *, overwrite: bool = False) -> Path:
    def build(out: Path) -> dict:
        source = with_synthetic(cfg, with_pool_fraction(cfg, load_source(cfg)))
        splits, dropped = clean_splits(cfg, source)
        extra = {}
        if cfg.data.candidates is not None:
            candidates, cand_dropped, cand_info = build_candidates(cfg, splits)
            dropped = dropped | cand_dropped
            extra["candidates"] = cand_info | {"rows": len(candidates)}
            splits = splits | {CANDIDATES: candidates}
        elif cfg.select.predictor_split == CANDIDATES:
            raise UserError("select.predictor_split = 'candidates' but the config has no data.candidates section")
        splits = with_validation(cfg, splits)
        check_arm_sizes(cfg, splits)
        for split, rows in splits.items():
            artifacts.write_split(out, split, rows)
        return {
            "rows": {s: len(r) for s, r in splits.items()},
            "groups_shared": shared_groups(splits),
            "outcomes": {s: dict(Counter(r["outcome"] for r in rows)) for s, rows in splits.items()},
            "dropped": dropped,
            "source": {"kind": cfg.data.source.kind, **source.info},
        } | extra

    stage_cfg = {"data": cfg.data.model_dump(mode="json")}
    return run_stage(run_dir, artifacts.DATA, stage_cfg, {}, build, command=stage_table.command_line(stage_table.DATA, cfg, run_dir),
                     overwrite=overwrite)
