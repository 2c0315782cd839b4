"""The stage-folder contract.

A stage writes into `<run_dir>/<name>.part`, then renames it to `<run_dir>/<name>`, so a folder with
the final name is always whole. Each folder holds `config.yaml` (the stage's resolved config) and
`manifest.json` (what it consumed, with hashes; what it produced, with row counts and hashes;
package versions, git revision, start and end time; the stage's peak memory, `run.peak_memory`, and,
when the stage says how many tokens its model passes read (`tokens_processed`), `tokens_per_s` over
its wall time; a stage that measured its parts one by one returns their peaks as `part_peaks` and records
the highest). Running again with the same config and the same
inputs reuses the folder, but only while its files still match the hashes in its manifest (a folder
edited by hand is refused, or rebuilt with `overwrite`); a different config or changed inputs refuse
unless `overwrite` is set, naming the changed config fields, and then the new folder is built beside the
old one and swapped in only when it is complete. A build that fails removes its `.part`, except the
subfolders a stage marks `resumable` (training checkpoints), which a rerun with the same fingerprint
picks up; a `.part` left by a killed process is removed, and logged, by the next build.

Only one process builds a stage folder at a time: `run_stage` holds the folder's lock
(`core.locking`, `<run_dir>/.locks/<name>.lock`) from before it looks at the folder until the folder is
in place, so a second process (another terminal, a resubmitted job) waits, then reuses what the first
one built, and nothing empties a `.part` that a live process is writing. A folder is whole only when
every file its manifest lists is there with its hash, `config.yaml` included. A damaged `manifest.json`
(cut short, not JSON) is refused in one line naming it, and so is a folder of another stage-folder format
(`artifacts.FORMAT_VERSION`, recorded as the manifest's `format_version`: folders written before a change
of format are never read with compatibility code); `--overwrite` rebuilds either. A stage
records its inputs relative to the folder it works in (`consumed.<name>.path`), so a moved or copied
run folder is judged the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from playpen_attribution.core import atomic
from playpen_attribution.core.hashing import file_sha256, json_sha256
from playpen_attribution.core.interruption import working_on
from playpen_attribution.core.locking import locked
from playpen_attribution.core.yaml_config import dump
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger
from playpen_attribution.run import artifacts, peak_memory

PLANNING: ContextVar = ContextVar("planning", default=None)
"""The `run.plan.Plan` that `run_stage` hands each stage to instead of building it (`plan` command), or None."""

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


_VERIFIED: dict[tuple[str, int, int], str] = {}
"""(path, size, mtime_ns) -> sha256 of files already hashed in this process (a folder read by many stages
is hashed once)."""


def _cached_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = file_sha256(path)
    return _VERIFIED[key]


def changed_files(folder: Path) -> list[str]:
    """Files of a finished stage folder that no longer match its manifest: changed, missing or added
    (each as 'name (changed|missing|added)'); empty when the folder is as it was built."""
    folder = Path(folder)
    produced = artifacts.load_manifest(folder).produced
    on_disk = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    on_disk.pop(artifacts.MANIFEST_FILE, None)
    out = [f"{rel} (missing)" for rel in sorted(set(produced) - set(on_disk))]
    if artifacts.CONFIG_FILE not in produced:
        out.append(f"{artifacts.CONFIG_FILE} (not listed in the manifest)")
    out += [f"{rel} (added)" for rel in sorted(set(on_disk) - set(produced))]
    for rel in sorted(set(produced) & set(on_disk)):
        path, want = on_disk[rel], produced[rel]
        if path.stat().st_size != want.get("bytes") or _cached_sha256(path) != want.get("sha256"):
            out.append(f"{rel} (changed)")
    return out


def _verify(folder: Path, what: str) -> None:
    changed = changed_files(folder)
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise UserError(f"{folder}: {what} no longer matches its manifest: {', '.join(changed[:3])}{more}; "
                        f"rebuild it with --overwrite")


def changed_fields(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of the config fields that differ between two resolved configs."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b, name = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_fields(a, b, name + ".")
        elif a != b:
            out.append(name)
    return out


def _content_hash(files: dict[str, dict]) -> str:
    return json_sha256({k: v["sha256"] for k, v in files.items()})


def stale_stages(folders: dict[str, Path]) -> dict[str, str]:
    """Of the finished stage folders given (label -> folder), those that no longer agree with what is on
    disk, label -> why: files changed since the folder was built, or an upstream folder it was built from
    now gone or holding other content (replaced by a rebuild). Upstream folders are looked up beside the
    stage folder, by name, so a moved run directory is judged the same."""
    stale = {}
    for label, folder in folders.items():
        folder = Path(folder)
        changed = changed_files(folder)
        if changed:
            stale[label] = f"its files changed since it was built ({', '.join(changed[:3])})"
            continue
        problems = []
        for name, seen in sorted(artifacts.load_manifest(folder).consumed.items()):
            upstream = folder.parent / Path(seen["path"]).name
            if not artifacts.is_stage_folder(upstream):
                problems.append(f"{name} ({upstream.name}/ is gone)")
            elif artifacts.load_manifest(upstream).content_hash != seen["content_hash"]:
                now = artifacts.load_manifest(upstream).content_hash
                problems.append(f"{name} ({upstream.name}/ content {seen['content_hash'][:12]}, "
                                f"now {now[:12]}: rebuilt since)")
        if problems:
            stale[label] = "built from an upstream folder that changed: " + "; ".join(problems)
    return stale


def _fingerprint(config_yaml: str, inputs: dict[str, Path], where: Path, verify: bool = True) -> tuple[str, dict]:
    """The build's fingerprint (config and the inputs' content) and its inputs as recorded: each path relative
    to `where`, the folder the stage works in."""
    consumed = {}
    for name, folder in sorted(inputs.items()):
        if not artifacts.is_stage_folder(folder):
            raise UserError(f"input '{name}' is not a finished stage folder (no {artifacts.MANIFEST_FILE}): {folder}")
        if verify:
            _verify(folder, f"input '{name}'")
        consumed[name] = {"path": os.path.relpath(folder, where), "content_hash": artifacts.load_manifest(folder).content_hash}
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
    resumable: tuple[str, ...] = (),
    verify_inputs: bool = True,
) -> Path:
    """Run `build(part_dir)` under the contract and return the finished folder.

    `config` is the stage's resolved config (a dict of sections); `inputs` names the upstream stage
    folders it reads; `build` writes its files into the folder it is given and returns extra
    manifest fields (row counts, dropped rows, ...); `command` is the CLI call that rebuilds this
    folder alone (logged when the stage starts). `reuse=False` rebuilds even an up-to-date folder.
    `resumable` names subfolders of the `.part` that survive a failed build and are handed to the next
    build with the same fingerprint (`build` finds them in its folder); everything else is removed.
    `verify_inputs=False` skips checking the inputs' files against their manifests (a report that is
    told to accept stale folders). While a plan is made (`PLANNING`), the stage is only judged (`judge`).
    """
    if PLANNING.get() is not None:
        return PLANNING.get().decide(Path(run_dir) / name, config, inputs, reuse)
    run_dir = Path(run_dir)
    final = run_dir / name
    with locked(artifacts.lock_file(final), f"stage {final}"), working_on(f"stage {final}"):
        return _run_locked(run_dir, final, config, inputs, build, command, overwrite, reuse, resumable, verify_inputs)


def _previous_fingerprint(final: Path, overwrite: bool) -> str | None:
    """The fingerprint a finished folder was built with; None when it has no manifest, or (with `overwrite`)
    a damaged one or one of another stage-folder format. Either is refused without `overwrite`."""
    if not artifacts.is_stage_folder(final):
        return None
    try:
        return artifacts.load_manifest(final).fingerprint
    except UserError as exc:
        if not overwrite:
            raise
        logger.warning("%s (rebuilding it: --overwrite)", exc)
        return None


def _run_locked(run_dir, final, config, inputs, build, command, overwrite, reuse, resumable, verify_inputs) -> Path:
    name = final.name
    config_yaml = dump(config)
    fingerprint, consumed = _fingerprint(config_yaml, inputs, run_dir, verify_inputs)
    if final.exists():
        previous = _previous_fingerprint(final, overwrite)
        if previous == fingerprint and reuse:
            if not overwrite:
                _verify(final, "the finished folder")
                logger.info("[%s] reused: %s (same config and inputs)", name, final)
                return final
            if not changed_files(final):
                logger.info("[%s] reused: %s (same config and inputs)", name, final)
                return final
        if previous != fingerprint and not overwrite:
            raise UserError(f"{final} exists with {_difference(final, config)}; pass --overwrite to replace it "
                            f"(or choose another --run-dir)")
        logger.info("[%s] rebuilding %s (the old folder stays until the new one is complete)", name, final)
    logger.info("[%s] start: %s", name, command)
    logger.debug("[%s] resolved config:\n%s", name, config_yaml.rstrip())
    part = atomic.part_path(final)
    kept = _leftover(part, fingerprint, resumable)
    with atomic.building(final, replace=True, keep=kept) as part:
        artifacts.write_building_mark(part, fingerprint)
        artifacts.write_stage_config(part, config_yaml)
        started = datetime.now(UTC)
        rss_scope = peak_memory.reset_peaks()
        t0 = time.perf_counter()
        try:
            extra = build(part) or {}
            _check_intact(part, fingerprint, config_yaml)
        except BaseException:
            _after_failure(part, resumable)
            raise
        artifacts.remove_building_mark(part)
        seconds = time.perf_counter() - t0
        tokens = extra.get("tokens_processed")
        measured = peak_memory.highest(peak_memory.peaks(rss_scope), extra.pop("part_peaks", []))
        if tokens and seconds > 0:
            measured["tokens_per_s"] = round(tokens / seconds, 1)
        produced = _produced(part)
        artifacts.write_manifest(part, {
            "stage": name,
            "format_version": artifacts.FORMAT_VERSION,
            "fingerprint": fingerprint,
            "consumed": consumed,
            "produced": produced,
            "content_hash": _content_hash(produced),
            "command": command,
            **extra,
            **measured,
            "versions": _versions(),
            "git_revision": _git_revision(),
            "python": sys.version.split()[0],
            "started": started.isoformat(),
            "finished": datetime.now(UTC).isoformat(),
            "wall_seconds": round(seconds, 3),
        })
    logger.info("[%s] done in %.1f s -> %s", name, seconds, final)
    return final


def _check_intact(part: Path, fingerprint: str, config_yaml: str) -> None:
    """The `.part` still holds this build's mark and config (a process that ignored the lock, e.g. on a file
    system without locks, may have emptied it): otherwise the build is refused rather than finished."""
    config = part / artifacts.CONFIG_FILE
    if (artifacts.read_building_mark(part) != fingerprint or not config.is_file()
            or config.read_text() != config_yaml):
        raise UserError(f"{part} was changed by another process while this build wrote it; rerun to rebuild it")


def judge(final: Path, config: dict, inputs: dict[str, Path]) -> tuple[str, str]:
    """(decision, why) for a stage folder whose inputs are as on disk, without building it: `build` (no
    finished folder), `reuse` (same config and inputs, files as built) or `stale` (what `run_stage` would
    refuse without overwrite, and rebuild with it)."""
    if not artifacts.is_stage_folder(final):
        return "build", "no finished folder yet"
    missing = sorted(name for name, folder in inputs.items() if not artifacts.is_stage_folder(folder))
    if missing:
        return "stale", f"input {', '.join(missing)} is not a finished stage folder"
    try:
        previous = artifacts.load_manifest(final).fingerprint
    except UserError as exc:  # damaged, or of another stage-folder format
        return "stale", str(exc)
    if previous != _fingerprint(dump(config), inputs, final.parent, verify=False)[0]:
        return "stale", _difference(final, config)
    changed = changed_files(final)
    if changed:
        return "stale", f"its files changed since it was built ({', '.join(changed[:3])})"
    return "reuse", "same config and inputs"


def changed_config(final: Path, config: dict) -> list[str]:
    """Dotted names of the fields in which `config` differs from a finished folder's config.yaml."""
    import yaml

    old = artifacts.load_stage_config(final)
    return changed_fields(old if isinstance(old, dict) else {}, yaml.safe_load(dump(config)) or {})


def _difference(final: Path, config: dict) -> str:
    """What differs between a finished folder and a new build: the changed config fields, else the inputs."""
    import yaml

    try:
        old = artifacts.load_stage_config(final)
    except (UserError, yaml.YAMLError):
        return "a different config or inputs"
    fields = changed_fields(old if isinstance(old, dict) else {}, yaml.safe_load(dump(config)) or {})
    if not fields:
        return "a different config or inputs (the config is the same: an upstream stage changed)"
    more = f" and {len(fields) - 6} more" if len(fields) > 6 else ""
    return f"a different config or inputs (changed config fields: {', '.join(fields[:6])}{more})"


def _leftover(part: Path, fingerprint: str, resumable: tuple[str, ...]) -> tuple[str, ...]:
    """Decide what of a `.part` left by an earlier build survives: the resumable subfolders of a build
    with the same fingerprint; the rest is removed by `atomic.building`, and said so here."""
    if not part.exists():
        return ()
    same = artifacts.read_building_mark(part) == fingerprint
    kept = tuple(n for n in resumable if same and (part / n).is_dir())
    if kept:
        logger.info("[%s] resuming the unfinished build in %s (kept %s)", part.name, part, ", ".join(kept))
    else:
        logger.warning("removed %s, left by an earlier build that did not finish", part)
    return kept


def _after_failure(part: Path, resumable: tuple[str, ...]) -> None:
    """A failed build removes its `.part`, unless it holds a resumable subfolder (kept for the rerun)."""
    import shutil

    kept = [n for n in resumable if (part / n).is_dir()]
    if kept:
        logger.warning("build failed; %s keeps %s so that a rerun resumes", part, ", ".join(kept))
    else:
        shutil.rmtree(part, ignore_errors=True)

