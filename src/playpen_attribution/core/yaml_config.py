"""YAML config files, their composition and their validation errors, shared by the experiment config and `synth`.

`read_mapping` reads a YAML file that must hold a mapping (one UserError naming the file otherwise; a
syntax error as one line with file, line and column); `read_composed` also follows `extends: <file>`
(relative to the file that says it, chains allowed, cycles refused); `deep_merge` is the one merge rule
(mappings merge key by key, anything else replaces); `apply_overrides` applies `--set a.b=value` items
(values parsed as YAML). `validate` builds a pydantic model in strict mode (a count refuses `true`,
`2.5` and `"300"`, a flag anything but true/false) and turns every problem into one line naming the
source, the field, the value and what was expected, all of them at once; `dump` renders a config replayably.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from playpen_attribution.errors import UserError

M = TypeVar("M", bound=BaseModel)

EXTENDS = "extends"
"""The key of a config file naming the file it starts from."""


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, reading `1e-4` as the number YAML 1.2 says it is (PyYAML's 1.1 rules need a dot:
    `1.0e-4`), in files and in `--set` values alike."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                              list("-+0123456789."))


def load_yaml(text: str):
    """The value of a YAML document (`_Loader`)."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """A YAML syntax error as `file:line:column: not valid YAML: problem (context)`, one line."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")


def read_mapping(path: Path | str, what: str = "config") -> dict | None:
    """The mapping in a YAML file; None for an empty file. UserError for a missing, undecodable or
    non-mapping file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise UserError(_yaml_error(path, exc)) from None
    if data is not None and not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of {what} fields, got {type(data).__name__}")
    return data


def deep_merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`: mappings merge key by key; a list, a value or null replaces; a mapping
    whose `kind` differs from the base's (another data source) replaces it whole."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and value.get("kind", old.get("kind")) == old.get("kind"):
            out[key] = deep_merge(old, value)
        else:
            out[key] = value
    return out


def read_composed(path: Path | str, what: str = "config", chain: tuple[Path, ...] = ()) -> dict | None:
    """`read_mapping`, with `extends: <file>` followed: the file named (relative to this one) is read the
    same way and this file's keys are merged on top (`deep_merge`)."""
    path = Path(path)
    if path.resolve() in chain:
        names = " -> ".join(p.name for p in (*chain, path.resolve()))
        raise UserError(f"{path}: `{EXTENDS}` makes a cycle: {names}")
    data = read_mapping(path, what)
    if data is None or EXTENDS not in data:
        return data
    data = dict(data)
    parent = data.pop(EXTENDS)
    if not isinstance(parent, str) or not parent:
        raise UserError(f"{path}: {EXTENDS} = {parent!r}: expected the name of a YAML file")
    parent_path = path.parent / parent
    if not parent_path.is_file():
        raise UserError(f"{path}: {EXTENDS} = {parent!r}: no such file ({parent_path})")
    return deep_merge(read_composed(parent_path, what, (*chain, path.resolve())) or {}, data)


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """`data` with each `a.b=value` of `overrides` set (the value parsed as YAML, so `[1, 2]` is a list and
    `null` removes a section), merged like a file's keys (`deep_merge`)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. select.k=200")
        try:
            value = load_yaml(raw)
        except yaml.YAMLError as exc:
            raise UserError(f"--set {item!r}: the value is not valid YAML ({getattr(exc, 'problem', exc)})") from None
        for part in reversed(key.split(".")):
            value = {part: value}
        data = deep_merge(data, value)
    return data


def _field(loc: tuple, data) -> str:
    """The dotted field an error's location names in the user's data: parts that are not keys there
    (pydantic's names of union members and discriminated sources) are left out."""
    parts, node = [], data
    for i, part in enumerate(loc):
        inside = part in node if isinstance(node, dict) else isinstance(part, int) and 0 <= part < len(node) \
            if isinstance(node, list) else False
        if inside:
            parts.append(str(part))
            node = node[part]
        elif isinstance(node, dict) and i == len(loc) - 1 and str(part).isidentifier():
            parts.append(str(part))  # a missing or unknown field: its name is the last part
    return ".".join(parts) or "(top level)"


def problems(exc: ValidationError, data: dict, hidden: tuple[str, ...] = ()) -> list[str]:
    """Every error of a validation, one entry per field: `field 'a.b' = value: expectation[, or another]`
    (or `unknown field 'a.b'`); fields in `hidden` (and below them) are left out."""
    by_field: dict[str, list] = {}
    for error in exc.errors():
        field = _field(error["loc"], data)
        if any(field == h or field.startswith(h + ".") for h in hidden):
            continue
        by_field.setdefault(field, []).append(error)
    out = []
    for field, errors in by_field.items():
        if any(other.startswith(field + ".") for other in by_field):
            continue  # a union's other alternatives (a name instead of a custom arm): the deeper error is the one

        if errors[0]["type"] == "extra_forbidden":
            out.append(f"unknown field '{field}'")
            continue
        messages = list(dict.fromkeys(e["msg"] for e in errors))
        if field == "(top level)":  # a check across sections: its message names the fields, the input is the config
            out.append(", or ".join(m.removeprefix("Value error, ") for m in messages))
            continue
        shown = "missing" if errors[0]["type"] == "missing" else repr(errors[0].get("input"))
        out.append(f"field '{field}' = {shown}: {', or '.join(messages)}")
    return out


def validate(model: type[M], data: dict, source: str, hidden: tuple[str, ...] = ()) -> M:
    """`model` built from `data` in strict mode (counts and flags as written, not coerced: pydantic alone
    would turn `"300"` into 300 and `1` into true; YAML's strings still fill path fields and its lists
    tuple fields), or one UserError naming the source and every bad field (`problems`)."""
    try:
        return model.model_validate_json(json.dumps(data, default=str), strict=True)
    except ValidationError as exc:
        raise UserError(f"{source}: " + "; ".join(problems(exc, data, hidden))) from None


def dump(section: BaseModel | dict) -> str:
    """A replayable YAML rendering of a config or config section (field order kept)."""
    data = section.model_dump(mode="json") if isinstance(section, BaseModel) else section
    return yaml.safe_dump(data, sort_keys=False)
