"""Stage `model`: the base model every later stage loads.

For a hub id or local folder nothing is written and the name is used as is. For `base: tiny` the
stage reads `data/` and writes `base_model/model/`: a word-level tokenizer trained on the pool's
text (plus the demo lexicon) and a randomly initialised tiny Llama, an ordinary Hugging Face folder.
"""

from __future__ import annotations

from pathlib import Path

from playpen_attribution import artifacts
from playpen_attribution.config import ExperimentConfig
from playpen_attribution.demo.task import corpus_text
from playpen_attribution.stage_folder import run_stage
from playpen_attribution.tiny_model import build_tiny_model


def model_path(cfg: ExperimentConfig, run_dir: Path) -> str:
    """Where the base model lives: the tiny model's folder, or the configured hub id / path."""
    if cfg.model.base == "tiny":
        return str((Path(run_dir) / artifacts.BASE_MODEL / artifacts.MODEL_DIR).resolve())
    return cfg.model.base


def with_base_model(cfg: ExperimentConfig, run_dir: Path, inputs: dict[str, Path]) -> dict[str, Path]:
    """A stage's `inputs`, plus `base_model/` when the run builds its tiny model (an input like any other)."""
    if cfg.model.base == "tiny":
        return {**inputs, "base_model": Path(run_dir) / artifacts.BASE_MODEL}
    return inputs


def run(cfg: ExperimentConfig, run_dir: Path, overwrite: bool = False) -> Path | None:
    if cfg.model.base != "tiny":
        return None
    data_dir = Path(run_dir) / artifacts.DATA

    def build(out: Path) -> dict:
        rows = [r for s in ("train_base", "attr_query", "eval") for r in artifacts.load_split(data_dir, s)]
        build_tiny_model(corpus_text(rows), cfg.model.tiny, out / artifacts.MODEL_DIR)
        return {"texts": len(rows)}

    stage_cfg = {"model": cfg.model.model_dump(mode="json")}
    return run_stage(run_dir, artifacts.BASE_MODEL, stage_cfg, {"data": data_dir}, build, overwrite)
