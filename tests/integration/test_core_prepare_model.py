"""prepare-model: the user errors (fast, no conversion), the folder bookkeeping with the conversion
stubbed out, and the real Gemma-3-270M conversion checked against the GGUF it came from."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import sys
import types
from contextlib import contextmanager
from dataclasses import replace

import pytest

from playpen_attribution.cli import main
from playpen_attribution.core import prepare_model as pm
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger

GEMMA = pm.KNOWN_MODELS["gemma-3-270m"]
FAKE_GGUF = b"not really a gguf file"


@pytest.fixture
def fake_source(monkeypatch):
    """A known model 'fake' whose package writes FAKE_GGUF and whose conversion writes one small file."""
    module = types.ModuleType("fake_gguf_source")
    module.assemble = lambda target, overwrite=False: target.write_bytes(FAKE_GGUF)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    spec = replace(GEMMA, module=module.__name__, sha256=hashlib.sha256(FAKE_GGUF).hexdigest(), license_files=())
    monkeypatch.setitem(pm.KNOWN_MODELS, "fake", spec)
    monkeypatch.setattr(pm, "_convert", lambda gguf, out: (out / "config.json").write_text("{}"))
    return spec


@contextmanager
def _logged():
    """The package logger's records (INFO and up) while the block runs."""
    records, handler, level = [], logging.Handler(), logger.level
    handler.emit = records.append
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _cli_error(argv) -> list[str]:
    """Run the CLI, assert exit status 2, return the error lines it logged."""
    with _logged() as records:
        assert main(argv) == 2
    return [r.getMessage() for r in records if r.levelno == logging.ERROR]


def test_unknown_model_names_the_known_ones(tmp_path):
    with pytest.raises(UserError, match="unknown model 'gemma-9b'; known models: gemma-3-270m"):
        pm.prepare_model("gemma-9b", tmp_path / "out")
    lines = _cli_error(["prepare-model", "gemma-9b", "--out-dir", str(tmp_path / "out")])
    assert len(lines) == 1 and "known models: gemma-3-270m" in lines[0]


@pytest.mark.parametrize("package_check_fails", [False, True])
def test_sha256_mismatch_names_the_file_and_both_hashes(tmp_path, monkeypatch, fake_source,
                                                        package_check_fails):
    monkeypatch.setitem(pm.KNOWN_MODELS, "fake", replace(fake_source, sha256="0" * 64))
    if package_check_fails:  # the package's own check raises after writing; ours still names the file
        def assemble(target, overwrite=False):
            target.write_bytes(FAKE_GGUF)
            raise ValueError("Assembled file sha256 did not match expected value")

        monkeypatch.setattr(sys.modules[fake_source.module], "assemble", assemble)
    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        pm.prepare_model("fake", out)
    message = str(err.value)
    assert "\n" not in message and str(out.with_name("out.part") / GEMMA.gguf_file) in message
    assert "0" * 64 in message and hashlib.sha256(FAKE_GGUF).hexdigest() in message
    assert not out.exists()
    lines = _cli_error(["prepare-model", "fake", "--out-dir", str(out)])
    assert len(lines) == 1 and "does not match the expected" in lines[0]


@pytest.mark.parametrize("missing", ["gguf", GEMMA.module])
def test_missing_extra_says_how_to_install_it(tmp_path, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import <missing>` raise ImportError
    with pytest.raises(UserError) as err:
        pm.prepare_model("gemma-3-270m", tmp_path / "out")
    assert "uv sync --extra gemma" in str(err.value) and missing in str(err.value)
    lines = _cli_error(["prepare-model", "gemma-3-270m", "--out-dir", str(tmp_path / "out")])
    assert len(lines) == 1 and "uv sync --extra gemma" in lines[0]


def test_folder_is_built_atomically_reused_and_rebuilt(tmp_path, monkeypatch, fake_source):
    out = tmp_path / "models" / "fake"
    assert pm.prepare_model("fake", out) == out
    assert not out.with_name("fake.part").exists() and not (out / GEMMA.gguf_file).exists()
    prepared = json.loads((out / pm.PREPARED_JSON).read_text())
    assert prepared["source"]["sha256"] == fake_source.sha256 and prepared["dtype"] == "float32"
    assert [f["path"] for f in prepared["files"]] == ["README.md", "config.json"]
    assert "Gemma Terms of Use" in (out / "README.md").read_text()

    monkeypatch.setitem(sys.modules, "gguf", None)  # reusing needs neither the extra nor a conversion
    with _logged() as records:
        assert pm.prepare_model("fake", out) == out
    assert [r.getMessage() for r in records] == [f"prepare-model: reusing {out} (it verifies against prepared.json)"]

    (out / "config.json").write_text("{ }")  # a listed file changed size: no longer verifies
    with pytest.raises(UserError, match="lacks config.json .* pass --overwrite"):
        pm.prepare_model("fake", out)
    monkeypatch.delitem(sys.modules, "gguf")
    pm.prepare_model("fake", out, overwrite=True)
    assert pm.verify_folder(out, fake_source) is None


def test_prepared_gemma_folder_loads_plainly(gemma_270m_dir):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = json.loads((gemma_270m_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert AutoConfig.from_pretrained(gemma_270m_dir).layer_types[:6] == ["sliding_attention"] * 5 + ["full_attention"]
    model, info = AutoModelForCausalLM.from_pretrained(gemma_270m_dir, output_loading_info=True)
    assert not any(info.values())
    assert type(model).__name__ == "Gemma3ForCausalLM" and model.config.vocab_size == 262144
    assert model.config.sliding_window == 512 and model.config.tie_word_embeddings
    tok = AutoTokenizer.from_pretrained(gemma_270m_dir)
    assert len(tok) == 262144 and (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (2, 1, 0)
    for special, token_id in (("<start_of_turn>", 105), ("<end_of_turn>", 106)):
        assert tok.encode(special, add_special_tokens=False) == [token_id]
    assert tok("The capital of France is").input_ids[0] == tok.bos_token_id
    prepared = json.loads((gemma_270m_dir / pm.PREPARED_JSON).read_text())
    assert prepared["source"]["sha256"] == GEMMA.sha256 and {"model.safetensors", "tokenizer.json",
           "GEMMA_TERMS.html", "NOTICE.md"} <= {f["path"] for f in prepared["files"]}


@pytest.mark.slow  # loading the GGUF again costs about 100 s; run with -m slow (it passed when this was written)
def test_prepared_gemma_folder_predicts_like_the_gguf(gemma_270m_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = importlib.import_module(GEMMA.module).assemble(tmp_path / GEMMA.gguf_file)
    from_gguf = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    saved = AutoModelForCausalLM.from_pretrained(gemma_270m_dir)
    tok = AutoTokenizer.from_pretrained(gemma_270m_dir)
    gguf_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    prompt = "The capital of France is"
    ids = tok(prompt, return_tensors="pt").input_ids
    assert ids.tolist() == gguf_tok(prompt, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        a, b = saved(ids).logits[0, -1], from_gguf(ids).logits[0, -1]
    assert a.argmax() == b.argmax()
    torch.testing.assert_close(a, b)
