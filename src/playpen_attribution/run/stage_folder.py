"""The stage-folder contract.

A stage writes into `<run_dir>/<name>.part`, then renames it to `<run_dir>/<name>`, so a folder with
the final name is always whole. Each folder holds `config.yaml` (the stage's resolved config) and
`manifest.json` (what it consumed, with hashes; what it produced, with row counts and hashes;
package versions, git revision, start and end time). Running again with the same config and the same
inputs reuses the folder; a different config or changed inputs refuse unless `overwrite` is set,
and then the new folder is built beside the old one and swapped in only when it is complete.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from playpen_attribution.core import atomic
from playpen_attribution.core.hashing import file_sha256, json_sha256
from playpen_attribution.core.yaml_config import dump
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger
from playpen_attribution.run import artifacts

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
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return rev.stdout.strip() or None


def _produced(folder: Path) -> dict[str, dict]:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel != artifacts.MANIFEST_FILE:
            files[rel] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    return files


def _content_hash(files: dict[str, dict]) -> str:
    return json_sha256({k: v["sha256"] for k, v in files.items()})


def _fingerprint(config_yaml: str, inputs: dict[str, Path]) -> tuple[str, dict]:
    consumed = {}
    for name, folder in sorted(inputs.items()):
        if not artifacts.is_stage_folder(folder):
            raise UserError(f"input '{name}' is not a finished stage folder (no {artifacts.MANIFEST_FILE}): {folder}")
        consumed[name] = {"path": str(folder), "content_hash": artifacts.load_manifest(folder).content_hash}
    blob = {"config": config_yaml, "inputs": {k: v["content_hash"] for k, v in consumed.items()}}
    return json_sha256(blob), consumed


def run_stage(
    run_dir: Path,
    name: str,
    config: dict,
    inputs: dict[str, Path],
    build: Callable[[Path], dict],
    *,
    command: str,
    overwrite: bool = False,
    reuse: bool = True,
) -> Path:
    """Run `build(part_dir)` under the contract and return the finished folder.

    `config` is the stage's resolved config (a dict of sections); `inputs` names the upstream stage
    folders it reads; `build` writes its files into the folder it is given and returns extra
    manifest fields (row counts, dropped rows, ...); `command` is the CLI call that rebuilds this
    folder alone (logged when the stage starts). `reuse=False` rebuilds even an up-to-date folder.
    """
    run_dir = Path(run_dir)
    final = run_dir / name
    config_yaml = dump(config)
    fingerprint, consumed = _fingerprint(config_yaml, inputs)
    if final.exists():
        previous = artifacts.load_manifest(final).fingerprint if artifacts.is_stage_folder(final) else None
        if previous == fingerprint and reuse:
            logger.info("[%s] reused: %s (same config and inputs)", name, final)
            return final
        if previous != fingerprint and not overwrite:
            raise UserError(
                f"{final} exists with a different config or inputs; pass --overwrite to replace it "
                f"(or choose another --run-dir)"
            )
        logger.info("[%s] rebuilding %s (the old folder stays until the new one is complete)", name, final)
    logger.info("[%s] start; resolved config:\n%s", name, config_yaml.rstrip())
    logger.info("[%s] equivalent command: %s", name, command)
    with atomic.building(final, replace=True) as part:
        artifacts.write_stage_config(part, config_yaml)
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        extra = build(part) or {}
        seconds = time.perf_counter() - t0
        produced = _produced(part)
        artifacts.write_manifest(part, {
            "stage": name,
            "fingerprint": fingerprint,
            "consumed": consumed,
            "produced": produced,
            "content_hash": _content_hash(produced),
            "command": command,
            **extra,
            "versions": _versions(),
            "git_revision": _git_revision(),
            "python": sys.version.split()[0],
            "started": started.isoformat(),
            "finished": datetime.now(UTC).isoformat(),
            "wall_seconds": round(seconds, 3),
        })
    logger.info("[%s] done in %.1f s -> %s", name, seconds, final)
    return final


def cli_command(subcommand: str, folder: Path, *, seed: int | None = None, **options) -> str:
    """The CLI call that rebuilds one stage folder: `playpen-attribution <subcommand> --config <config.yaml>
    --run-dir D [--seed S] [--opt value ...]`. `folder` is the folder the stage works in: the run
    directory, or with `seed` that seed's folder (the run directory is then its parent). Options whose
    value is None are left out, True gives a bare flag."""
    run_dir = Path(folder).parent if seed is not None else Path(folder)
    parts = ["playpen-attribution", subcommand, "--config", "<config.yaml>", "--run-dir", str(run_dir)]
    for key, value in {**options, "seed": seed}.items():
        if value is None or value is False:
            continue
        parts.append("--" + key.replace("_", "-"))
        if value is not True:
            parts.append(str(value))
    return " ".join(parts)
