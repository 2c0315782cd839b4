"""Stage `model`: the base model every later stage loads.

For a hub id or local folder nothing is written and the name is used as is (`run.model_paths`). For
`base: tiny` the stage reads `data/` and writes `base_model/model/`: a word-level tokenizer trained
on the splits' text (the candidates' too, when data/ has them; plus the demo lexicon) and a tiny
Llama, an ordinary Hugging Face folder. With
`model.tiny.pretrain_epochs` the Llama is first pretrained in full on the lexicon's descriptions in
another format than the task (`taboo.demo.description_rows`), so it knows its words before any LoRA;
the manifest records the pretraining loss per epoch.
"""

from __future__ import annotations

from pathlib import Path

from playpen_attribution.config import ExperimentConfig
from playpen_attribution.core.rows import CANDIDATES, SPLITS
from playpen_attribution.core.tiny_model import build_tiny_model
from playpen_attribution.run import artifacts, stage_table
from playpen_attribution.run.model_paths import TINY
from playpen_attribution.run.stage_folder import run_stage
from playpen_attribution.taboo.demo import corpus_text, description_rows


def run(cfg: ExperimentConfig, run_dir: Path, *, overwrite: bool = False) -> Path | None:
    """Build the tiny model (`model.base: tiny`); None for a named model, which needs no folder."""
    if cfg.model.base != TINY:
        return None
    run_dir = Path(run_dir)
    data_dir = run_dir / artifacts.DATA

    def build(out: Path) -> dict:
        splits = [*SPLITS, CANDIDATES] if artifacts.split_path(data_dir, CANDIDATES).is_file() else SPLITS
        rows = [r for s in splits for r in artifacts.load_split(data_dir, s)]
        tiny = cfg.model.tiny
        pretrain = description_rows(tiny.seed, tiny.pretrain_rows_per_word) if tiny.pretrain_epochs else None
        stats = build_tiny_model(corpus_text(rows), tiny, out / artifacts.MODEL_DIR, pretrain)
        return {"texts": len(rows), **stats}

    stage_cfg = {"model": cfg.model.model_dump(mode="json")}
    return run_stage(run_dir, artifacts.BASE_MODEL, stage_cfg, {"data": data_dir}, build,
                     command=stage_table.command_line(stage_table.BASE_MODEL, cfg, run_dir), overwrite=overwrite)
