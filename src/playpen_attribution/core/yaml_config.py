"""YAML config files and their validation errors, shared by the experiment config and `synth`.

`read_mapping` reads a YAML file that must hold a mapping (one UserError naming the file otherwise);
`validate` builds a pydantic model and turns every problem into one line naming the source, the
field, the value and what was expected; `dump` renders a config replayably.
"""

from __future__ import annotations

import types
import typing
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


def _kinds(annotation) -> tuple:
    """The alternatives of a (possibly optional or annotated) union annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _kinds(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return tuple(k for a in typing.get_args(annotation) for k in _kinds(a))
    return (annotation,)


def _model_for(kinds: tuple, value: dict) -> type[BaseModel] | None:
    """The config section a mapping is validated as: the only model alternative, or the one whose `kind`
    literal matches the mapping's `kind` (a discriminated source)."""
    models = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
    if len(models) > 1:
        models = [m for m in models if "kind" in m.model_fields
                  and value.get("kind") in typing.get_args(m.model_fields["kind"].annotation)]
    return models[0] if len(models) == 1 else None


def _strict_value(kinds: tuple, value, name: str) -> list[str]:
    if value is None:
        return []
    literals = [v for k in kinds if typing.get_origin(k) is typing.Literal for v in typing.get_args(k)]
    if isinstance(value, str) and value in literals:
        return []
    if bool in kinds and not isinstance(value, bool):
        return [f"field '{name}' = {value!r}: expected true or false"]
    if (int in kinds or float in kinds) and bool not in kinds and str not in kinds:
        allowed = (int, float) if float in kinds else (int,)
        if isinstance(value, bool) or not isinstance(value, allowed):
            return [f"field '{name}' = {value!r}: expected {'a number' if float in kinds else 'a whole number'}"]
    if isinstance(value, dict) and (section := _model_for(kinds, value)) is not None:
        return strict_errors(section, value, name + ".")
    if isinstance(value, list):
        inner = tuple(a for k in kinds if typing.get_origin(k) is list for a in _kinds(typing.get_args(k)[0]))
        return [e for i, v in enumerate(value) for e in _strict_value(inner, v, f"{name}.{i}")] if inner else []
    return []


def strict_errors(model: type[BaseModel], data: dict, prefix: str = "") -> list[str]:
    """Counts and flags as written, not coerced: an int field refuses `true`, `2.5` and `"300"`, a float
    field `true` and `"1e-4"`; a bool field refuses anything but true/false (pydantic alone would turn `"300"` into 300 and `1` into true).
    Walks nested sections, lists and discriminated sources; other mistakes are pydantic's to report."""
    if not isinstance(data, dict):
        return []
    out = []
    for name, spec in model.model_fields.items():
        if name in data:
            out += _strict_value(_kinds(spec.annotation), data[name], prefix + name)
    return out


def validate(model: type[BaseModel], data: dict, source: str) -> BaseModel:
    """`model.model_validate(data)` with strict counts and flags (`strict_errors`), or one UserError
    naming the source and every bad field."""
    problems = strict_errors(model, data)
    if problems:
        raise UserError(f"{source}: " + "; ".join(problems))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{source}: " + "; ".join(describe(e) for e in exc.errors())) from None


def dump(section: BaseModel | dict) -> str:
    """A replayable YAML rendering of a config or config section (field order kept)."""
    data = section.model_dump(mode="json") if isinstance(section, BaseModel) else section
    return yaml.safe_dump(data, sort_keys=False)
