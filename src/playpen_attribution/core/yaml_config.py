"""YAML config files and their validation errors, shared by the experiment config and `synth`.

`read_mapping` reads a YAML file that must hold a mapping (one UserError naming the file otherwise);
`validate` builds a pydantic model and turns every problem into one line naming the source, the
field, the value and what was expected; `dump` renders a config replayably.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from playpen_attribution.errors import UserError


def read_mapping(path: Path | str, what: str = "config") -> dict | None:
    """The mapping in a YAML file; None for an empty file. UserError for a missing, undecodable or
    non-mapping file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of {what} fields, got {type(data).__name__}")
    return data


def describe(error: dict) -> str:
    """One pydantic error as `field 'a.b' = value: message` (or `unknown field 'a.b'`)."""
    field = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"unknown field '{field}'"
    shown = "missing" if error["type"] == "missing" else repr(error.get("input"))
    return f"field '{field}' = {shown}: {error['msg']}"


def validate(model: type[BaseModel], data: dict, source: str) -> BaseModel:
    """`model.model_validate(data)`, or one UserError naming the source and every bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{source}: " + "; ".join(describe(e) for e in exc.errors())) from None


def dump(section: BaseModel | dict) -> str:
    """A replayable YAML rendering of a config or config section (field order kept)."""
    data = section.model_dump(mode="json") if isinstance(section, BaseModel) else section
    return yaml.safe_dump(data, sort_keys=False)
