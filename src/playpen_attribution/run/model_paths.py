"""Where a run's base model and tokenizer are: the tiny model built in `base_model/model/`, or the
configured names (`model.base`, and `model.tokenizer` when the tokenizer is another model's).

Every stage derives the model it loads from the config's `model` section and the folder it works in
with `base_model`: the model's path, its tokenizer's, and `base_model/` among the stage's inputs when the
run builds its tiny model (so a rebuilt tiny model makes every stage that read the old one stale). `adapter_base` is what an
adapter records as its base: the configured name as given, or the tiny model's path relative to the
adapter folder, so the run folder can move (`core.adapters.resolved_base` reads it back).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from playpen_attribution.run import artifacts

if TYPE_CHECKING:
    from playpen_attribution.config import ModelConfig

TINY = "tiny"
"""`model.base` value that builds a tiny model in code instead of naming one."""


def model_path(base: str, run_dir: Path) -> str:
    """The tiny model's folder (absolute, through the seed folder's link) or the configured hub id / path."""
    if base == TINY:
        return str((Path(run_dir) / artifacts.BASE_MODEL / artifacts.MODEL_DIR).resolve())
    return base


def adapter_base(base: str, model: str, adapter_dir: Path) -> str:
    """`base_model_name_or_path` of an adapter trained on `model` (what `model_path(base, ...)` gave): `base`
    as configured, or for the tiny model inside the run folder its path relative to `adapter_dir`."""
    return os.path.relpath(model, adapter_dir) if base == TINY else base


def tokenizer_path(base: str, tokenizer: str | None, run_dir: Path) -> str:
    """The tokenizer every stage loads: `model.tokenizer`, else the base model's own."""
    return tokenizer if tokenizer is not None else model_path(base, run_dir)


@dataclass(frozen=True)
class BaseModel:
    """The base model a stage loads, as seen from the folder it works in."""

    path: str                # what `load_model` loads: the tiny model's folder, or `model.base`
    tokenizer: str           # `model.tokenizer`, else the model's own
    folder: Path | None      # `base_model/`, when the run builds its tiny model

    def inputs(self, upstream: dict[str, Path]) -> dict[str, Path]:
        """A stage's `upstream` inputs, plus `base_model/` when the run builds its tiny model (an input like
        any other)."""
        return upstream if self.folder is None else {**upstream, "base_model": self.folder}


def base_model(model: ModelConfig, run_dir: Path) -> BaseModel:
    """The base model of the config's `model` section, for a stage working in `run_dir` (the run directory
    or a seed's folder)."""
    folder = Path(run_dir) / artifacts.BASE_MODEL if model.base == TINY else None
    return BaseModel(model_path(model.base, run_dir), tokenizer_path(model.base, model.tokenizer, run_dir), folder)
