"""What a PEFT adapter folder says about itself (`adapter_config.json`), read and written in one place.

Bergson and PEFT load an adapter through the base model named in its `base_model_name_or_path`, so
the training stage writes the base there and every loader checks it against the run's base model.
A base outside the run folder is recorded as the config gives it (a hub id, a path); one inside it (the
tiny model the run builds) relative to the adapter folder, so a moved or copied run folder still names
it: `resolved_base` turns the record into a loadable name at use, and `for_bergson` hands Bergson (which
loads the base from the record itself) a view of the adapter naming the resolved base.
`modules_to_save` lists modules trained in full beside LoRA: Bergson does not track them and vLLM
cannot serve them, so both callers read them from here.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from playpen_attribution.core import atomic
from playpen_attribution.core.jsonl import dumps
from playpen_attribution.errors import UserError

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class AdapterInfo:
    """The fields of an adapter's config the project uses."""

    path: Path
    """The adapter folder."""
    base_model: str | None
    """`base_model_name_or_path`: the base the adapter was trained on (None when missing)."""
    rank: int
    """The largest LoRA rank (`r`, or the largest value of `rank_pattern`)."""
    target_modules: tuple[str, ...]
    """Module names that carry LoRA matrices."""
    modules_to_save: tuple[str, ...]
    """Modules trained in full next to LoRA (empty when none)."""


def config_file(adapter_dir: Path) -> Path:
    return Path(adapter_dir) / ADAPTER_CONFIG


def read_adapter(adapter_dir: Path) -> AdapterInfo:
    """The adapter's metadata; UserError when the folder is not a PEFT adapter."""
    path = config_file(adapter_dir)
    if not path.is_file():
        raise UserError(f"{adapter_dir} is not a PEFT adapter folder (no {ADAPTER_CONFIG})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    ranks = [int(raw.get("r") or 8), *map(int, (raw.get("rank_pattern") or {}).values())]
    targets = raw.get("target_modules") or ()
    return AdapterInfo(
        path=Path(adapter_dir), base_model=raw.get("base_model_name_or_path") or None, rank=max(ranks),
        target_modules=tuple([targets] if isinstance(targets, str) else targets),
        modules_to_save=tuple(raw.get("modules_to_save") or ()),
    )


def set_base_model(adapter_dir: Path, base_model: str) -> None:
    """Write `base_model_name_or_path` (what Bergson and PEFT load the base from)."""
    path = config_file(adapter_dir)
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["base_model_name_or_path"] = base_model
    atomic.write_text(path, dumps(raw, indent=2) + "\n")


def resolved_base(info: AdapterInfo) -> str | None:
    """The adapter's base as a loadable name: a relative path that exists from the adapter folder (a base
    inside the run folder) resolved from there; anything else as recorded (a hub id, an absolute path, a
    path relative to the working directory)."""
    base = info.base_model
    if base and not Path(base).is_absolute() and (info.path / base).exists():
        return str((info.path / base).resolve())
    return base


@contextmanager
def for_bergson(adapter_dir: Path, model_path: str | Path) -> Iterator[Path]:
    """The adapter as Bergson must see it: a folder whose config names `model_path` as given here (Bergson
    loads the base from the config, relative paths from the working directory). The adapter itself when it
    already does; otherwise a temporary view (the adapter's files linked, the config rewritten), removed
    after the block."""
    adapter_dir = Path(adapter_dir)
    raw = json.loads(config_file(adapter_dir).read_text(encoding="utf-8"))
    if raw.get("base_model_name_or_path") == str(model_path):
        yield adapter_dir
        return
    with tempfile.TemporaryDirectory(prefix="adapter-") as tmp:
        view = Path(tmp)
        for entry in adapter_dir.iterdir():
            if entry.name != ADAPTER_CONFIG:
                (view / entry.name).symlink_to(entry.resolve())
        config_file(view).write_text(dumps({**raw, "base_model_name_or_path": str(model_path)}, indent=2) + "\n")
        yield view


def same_model(a: str, b: str) -> bool:
    """Two model names or paths denote the same model (local paths compared after resolving)."""
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a.rstrip("/") == b.rstrip("/")


def check_adapter_base(adapter_dir: Path, model_path: str | Path) -> AdapterInfo:
    """The adapter's metadata, refusing an adapter trained on another base model."""
    info = read_adapter(adapter_dir)
    where = config_file(adapter_dir)
    base = resolved_base(info)  # None only when the adapter names no base
    if not base:
        raise UserError(f"{where}: base_model_name_or_path is missing; set it to the base model")
    if not same_model(base, str(model_path)):
        raise UserError(f"{where}: adapter was trained on base model '{info.base_model}' "
                        f"(base_model_name_or_path), but this run's base model is '{model_path}'")
    return info
