"""Where a run's base model and tokenizer are: the tiny model built in `base_model/model/`, or the
configured names (`model.base`, and `model.tokenizer` when the tokenizer is another model's).

Every stage derives the model it loads from the config and the folder it works in with `model_path`,
and lists `base_model/` among its inputs with `with_base_model` when the run builds its tiny model
(so a rebuilt tiny model makes every stage that read the old one stale). `adapter_base` is what an
adapter records as its base: the configured name as given, or the tiny model's path relative to the
adapter folder, so the run folder can move (`core.adapters.resolved_base` reads it back).
"""

from __future__ import annotations

import os
from pathlib import Path

from playpen_attribution.run import artifacts

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


def with_base_model(base: str, run_dir: Path, inputs: dict[str, Path]) -> dict[str, Path]:
    """A stage's `inputs`, plus `base_model/` when the run builds its tiny model (an input like any other)."""
    if base == TINY:
        return {**inputs, "base_model": Path(run_dir) / artifacts.BASE_MODEL}
    return inputs
