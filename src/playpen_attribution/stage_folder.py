"""The stage-folder contract.

A stage writes into `<run_dir>/<name>.part`, then renames it to `<run_dir>/<name>`, so a folder with
the final name is always whole. Each folder holds `config.yaml` (the stage's resolved config) and
`manifest.json` (what it consumed, with hashes; what it produced, with row counts and hashes;
package versions, git revision, start and end time). Running again with the same config and the same
inputs reuses the folder; a different config or changed inputs refuse unless `overwrite` is set.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from playpen_attribution import artifacts
from playpen_attribution.config import to_yaml
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger

_PACKAGES = ("playpen-attribution", "torch", "transformers", "peft", "trl", "bergson", "datasets", "sae-lens")


def _versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _git_revision() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return rev.stdout.strip() or None


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _produced(folder: Path) -> dict[str, dict]:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel in (artifacts.MANIFEST_FILE,):
            continue
        files[rel] = {"bytes": path.stat().st_size, "sha256": _file_hash(path)}
    return files


def _content_hash(files: dict[str, dict]) -> str:
    return hashlib.sha256(json.dumps({k: v["sha256"] for k, v in files.items()}, sort_keys=True).encode()).hexdigest()


def _fingerprint(config_yaml: str, inputs: dict[str, Path]) -> tuple[str, dict]:
    consumed = {}
    for name, folder in sorted(inputs.items()):
        manifest_path = folder / artifacts.MANIFEST_FILE
        if not manifest_path.is_file():
            raise UserError(f"input '{name}' is not a finished stage folder (no {artifacts.MANIFEST_FILE}): {folder}")
        consumed[name] = {"path": str(folder), "content_hash": artifacts.load_manifest(folder)["content_hash"]}
    blob = json.dumps({"config": config_yaml, "inputs": {k: v["content_hash"] for k, v in consumed.items()}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest(), consumed


def run_stage(
    run_dir: Path,
    name: str,
    config: dict,
    inputs: dict[str, Path],
    build: Callable[[Path], dict],
    overwrite: bool = False,
) -> Path:
    """Run `build(part_dir)` under the contract and return the finished folder.

    `config` is the stage's resolved config (a dict of sections); `inputs` names the upstream stage
    folders it reads; `build` writes its files into the folder it is given and returns extra
    manifest fields (row counts, dropped rows, ...).
    """
    run_dir = Path(run_dir)
    final = run_dir / name
    config_yaml = to_yaml(config)
    fingerprint, consumed = _fingerprint(config_yaml, inputs)
    if final.exists():
        manifest_path = final / artifacts.MANIFEST_FILE
        previous = artifacts.load_manifest(final) if manifest_path.is_file() else {}
        if previous.get("fingerprint") == fingerprint:
            logger.info("[%s] reused: %s (same config and inputs)", name, final)
            return final
        if not overwrite:
            raise UserError(
                f"{final} exists with a different config or inputs; pass --overwrite to replace it "
                f"(or choose another --run-dir)"
            )
        logger.info("[%s] overwriting %s", name, final)
        shutil.rmtree(final)
    part = run_dir / f"{name}.part"
    if part.exists():
        shutil.rmtree(part)
    part.mkdir(parents=True)
    logger.info("[%s] start; resolved config:\n%s", name, config_yaml.rstrip())
    logger.info("[%s] equivalent command: %s", name, _command_line(name, run_dir))
    (part / artifacts.CONFIG_FILE).write_text(config_yaml)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    extra = build(part) or {}
    seconds = time.perf_counter() - t0
    produced = _produced(part)
    manifest = {
        "stage": name,
        "fingerprint": fingerprint,
        "consumed": consumed,
        "produced": produced,
        "content_hash": _content_hash(produced),
        **extra,
        "versions": _versions(),
        "git_revision": _git_revision(),
        "python": sys.version.split()[0],
        "started": started.isoformat(),
        "finished": datetime.now(timezone.utc).isoformat(),
        "wall_seconds": round(seconds, 3),
    }
    (part / artifacts.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    part.rename(final)
    logger.info("[%s] done in %.1f s -> %s", name, seconds, final)
    return final


def _command_line(name: str, run_dir: Path) -> str:
    """The CLI call that rebuilds just this stage folder (`run` where no single-stage command exists)."""
    run_dir = Path(run_dir)
    seed = re.fullmatch(r"seed_(-?\d+)", run_dir.name)
    top = run_dir.parent if seed else run_dir
    base = "playpen-attribution {} --config <config.yaml> --run-dir " + str(top)
    on_seed = f" --seed {seed.group(1)}" if seed else ""
    if name == artifacts.BASE_MODEL:
        return base.format("model")
    if name.startswith("train_"):
        arm = "" if name == artifacts.TRAIN_BASE else f" --arm {name.removeprefix('train_')}"
        return base.format("train") + arm + on_seed
    if name.startswith("eval_"):
        return base.format("evaluate") + f" --model {name.removeprefix('eval_')}" + on_seed
    if name.startswith("rank_"):
        return base.format("predict") + f" --rows <rows.jsonl> --name {name.removeprefix('rank_')}"
    if name == artifacts.SELECT:
        return base.format("select")  # every seed's selection
    if seed or name not in (artifacts.DATA, artifacts.ATTRIBUTE, artifacts.SAE, artifacts.PREDICT):
        return f"playpen-attribution run <config.yaml> --run-dir {top}"  # per-seed attribution, baselines
    return base.format(name)