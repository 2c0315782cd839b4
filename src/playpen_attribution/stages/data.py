"""Stage `data`: build the dataset manifest and the three splits.

Reads: the configured source (`data.source.kind`: demo, instruct_demo, playpen_data, clembench, smoltalk, generic)
and, when `data.synthetic` is set, the synth command's rows, appended to the pool after filtering.
Writes `data/`: `splits/{train_base,attr_query,eval}.jsonl` (rows of `playpen_attribution.core.rows`),
`config.yaml`, `manifest.json` with row counts per split and outcome, and the count of every row a
filter dropped (by default: aborted games everywhere, failed games in the query set; failed games
stay in the eval set, as in the published eval), plus whatever the source records (e.g. the demo's
planted row ids). Every arm's size is checked against the pool here (`arms.size_problems`), so a k
larger than the pool stops the run before any training.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from playpen_attribution.attribution.arms import plan_arms, size_problems
from playpen_attribution.config import ExperimentConfig
from playpen_attribution.core.rows import OUTCOMES, ROW_COLUMNS, SPLITS, SourceRows
from playpen_attribution.errors import UserError
from playpen_attribution.run import artifacts
from playpen_attribution.run.model_paths import TINY
from playpen_attribution.run.stage_folder import cli_command, run_stage
from playpen_attribution.sources.clembench import load_clembench
from playpen_attribution.sources.generic import load_generic
from playpen_attribution.sources.instruct_demo import generate_instruct_demo
from playpen_attribution.sources.playpen_data import load_playpen_data
from playpen_attribution.sources.smoltalk import load_smoltalk
from playpen_attribution.sources.synthetic import append_synthetic
from playpen_attribution.taboo.demo import generate_demo


def load_source(cfg: ExperimentConfig) -> SourceRows:
    """The one seam where sources plug in; each source returns rows already split."""
    source, seed = cfg.data.source, cfg.data.seed
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
    counting every dropped row by split and outcome."""
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
        check_rows(kept, split)
        splits[split] = kept
    all_ids = [r["example_id"] for s in splits.values() for r in s]
    if len(all_ids) != len(set(all_ids)):
        raise UserError("the same example_id appears in more than one split")
    return splits, dict(dropped)


def shared_groups(splits: dict[str, list[dict]]) -> dict[str, int]:
    """How many `group_id`s two splits share (0 for a grouped split; the demo shares its target words on
    purpose: its eval asks for seen words with clue combinations never seen)."""
    groups = {name: {r.get("group_id") for r in rows} for name, rows in splits.items()}
    names = list(groups)
    return {f"{a}&{b}": len(groups[a] & groups[b]) for i, a in enumerate(names) for b in names[i + 1:]}


def run(cfg: ExperimentConfig, run_dir: Path, *, overwrite: bool = False) -> Path:
    def build(out: Path) -> dict:
        source = with_synthetic(cfg, load_source(cfg))
        splits, dropped = clean_splits(cfg, source)
        problems = size_problems(plan_arms(cfg.select), len(splits["train_base"]))
        if problems:
            raise UserError(f"{problems[0]} (data.source gives {len(splits['train_base'])} pool rows)"
                            + (f"; also {len(problems) - 1} more arm(s)" if len(problems) > 1 else ""))
        for split, rows in splits.items():
            artifacts.write_split(out, split, rows)
        return {
            "rows": {s: len(r) for s, r in splits.items()},
            "groups_shared": shared_groups(splits),
            "outcomes": {s: dict(Counter(r["outcome"] for r in rows)) for s, rows in splits.items()},
            "dropped": dropped,
            "source": {"kind": cfg.data.source.kind, **source.info},
        }

    stage_cfg = {"data": cfg.data.model_dump(mode="json")}
    return run_stage(run_dir, artifacts.DATA, stage_cfg, {}, build, command=cli_command("data", run_dir),
                     overwrite=overwrite)
