"""The project's train, attribute, sae and evaluate stages held against what the hardware does without
them, in one run, on a randomly initialised model of Gemma-3-1B's shape (no hub, no network).

    uv run python benchmarks/gpu_check.py            # one H100/H200: Gemma-3-1B shape, 512-token rows, < 5 min
    uv run python benchmarks/gpu_check.py --tiny     # CPU smoke test (a 4-block Gemma-3; the test suite runs it)
    uv run python benchmarks/gpu_check.py --model models/gemma-3-270m --threads 2   # a real model (CPU or GPU)

What it builds, in `--workdir` (a temp folder by default):
- `model/`: `Gemma3ForCausalLM` from a `Gemma3TextConfig` written in this file (Gemma-3-1B: vocab
  262,144, width 1,152, 26 blocks, 4 heads, 1 KV head, head_dim 256, MLP 6,912), random weights in
  bf16 on a GPU, and a word-level tokenizer trained on the synthetic rows' words;
- `rows/*.jsonl`: synthetic prompt/completion rows of `--row-tokens` tokens (random words), read by
  the data stage's generic source, so every stage runs exactly as in an experiment.

With `--model PATH` (a prepared Hugging Face folder such as `models/gemma-3-270m` from `prepare-model`)
the checks run on that model's weights and tokenizer instead: a real architecture with its real
vocabulary (262k for Gemma-3), rows left-truncated to `--row-tokens` of its tokens. On a CPU this uses
the `REAL_CPU` sizes (a few minutes on 2 cores for Gemma-3-270M).

Then, side by side (each reference on the same rows and settings as the stage it is held against):

| check | project path | reference |
|---|---|---|
| train | train stage (TRL SFTTrainer, LoRA r=16 on every projection), trainer loop | raw LoRA forward+backward+AdamW loop, same batch, same steps |
| attribute | attribute stage end to end | the bare `bergson` command (one process: query Hessian, query index, pool scores) |
| sae | sae stage (forward to block L, SAE encode, pooling) | a plain forward pass of the whole model; and the attribute stage (gradient scoring) |
| evaluate | evaluate stage generation (batched by length, KV cache) | `generate` one row at a time |

One JSON line per measurement on stdout: `check`, `path`, `tokens` (or `rows`), `seconds`,
`tokens_per_s` (or `rows_per_s`), and for a project path its `reference`, `ratio` = project speed /
reference speed (above 1: the project path is faster) and the issue's `target`. The attribute line
adds `seconds_ratio` = stage seconds / bare-command seconds (target <= 1.1); the sae-vs-gradients
line gives `speedup` = attribute-stage seconds / sae-stage seconds (target >= 6). The train stage's
trainer loop and the raw loop are both timed from a cold start (first kernels, allocator); the raw
line adds its steady rate after the first step. With vLLM installed (GPU), the evaluate stage runs
once more with `evaluate.backend: vllm` and the line counts outputs identical to the hf backend's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
from bergson_direct import (  # benchmarks/ is on sys.path when run as a script
    direct_steps,
    run_bare_command,
)

from playpen_attribution.config import parse_config
from playpen_attribution.core.modeling import device, load_model, load_tokenizer
from playpen_attribution.core.tiny_model import train_word_tokenizer
from playpen_attribution.core.tokenization import prompt_ids, tokenize_rows
from playpen_attribution.run import artifacts
from playpen_attribution.stages import attribute, data, evaluate, sae, train

GEMMA_3_1B = {"vocab_size": 262_144, "hidden_size": 1152, "intermediate_size": 6912, "num_hidden_layers": 26,
                  "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "max_position_embeddings": 32_768,
                  "sliding_window": 512}
"""google/gemma-3-1b-pt's text config, the parts that set its cost."""

TINY_GEMMA_3 = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                    "num_key_value_heads": 1, "head_dim": 16, "max_position_embeddings": 256, "sliding_window": 64}
"""The same architecture, small enough for the CPU smoke test (vocab = the tokenizer's)."""


@dataclass(frozen=True)
class Sizes:
    row_tokens: int      # words per row (prompt + completion), ~ tokens
    pool_rows: int       # attribution / SAE pool (train_base)
    query_rows: int
    eval_rows: int
    train_steps: int     # optimizer steps of the train stage and of the raw loop
    batch: int           # rows per training batch (both paths)
    sae_layer: int
    d_sae: int
    sae_batch: int
    eval_batch: int
    new_tokens: int
    single_rows: int     # rows generated one at a time for the evaluate reference
    words: int           # distinct words in the synthetic vocabulary


GPU = Sizes(row_tokens=512, pool_rows=2048, query_rows=64, eval_rows=256, train_steps=64, batch=8, sae_layer=17,
            d_sae=16_384, sae_batch=16, eval_batch=64, new_tokens=16, single_rows=16, words=8000)
REAL_CPU = Sizes(row_tokens=128, pool_rows=32, query_rows=4, eval_rows=8, train_steps=8, batch=4, sae_layer=12,
                 d_sae=1024, sae_batch=8, eval_batch=8, new_tokens=8, single_rows=4, words=2000)
"""A real model (`--model`) on a CPU: Gemma-3-270M's 18 blocks, SAE on block 12."""
TINY = Sizes(row_tokens=48, pool_rows=32, query_rows=4, eval_rows=8, train_steps=4, batch=4, sae_layer=2,
             d_sae=64, sae_batch=16, eval_batch=8, new_tokens=4, single_rows=4, words=300)


RESULTS = sys.stdout
"""Measurement lines go here; whatever the libraries print (trainer logs) is sent to stderr."""


def emit(record: dict) -> None:
    """One measurement as one JSON line on stdout (the package itself never prints)."""
    RESULTS.write(json.dumps(record) + "\n")
    RESULTS.flush()


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    synchronize()
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    synchronize()
    return result, time.perf_counter() - start


# ---------------------------------------------------------------- inputs: rows, model, config


def synthetic_rows(sizes: Sizes, n: int, split: str, rng: np.random.Generator) -> list[dict]:
    """Random-word Taboo-shaped rows: a long prompt, a `GUESS: <word>` completion of ~1/8 of the row."""
    completion_words = max(3, sizes.row_tokens // 8)
    prompt_words = sizes.row_tokens - completion_words - 2  # BOS and EOS
    rows = []
    for i in range(n):
        words = [f"w{j}" for j in rng.integers(0, sizes.words, size=prompt_words + completion_words)]
        guess = words[prompt_words]
        rows.append({
            "example_id": f"{split}-{i}", "prompt": " ".join(words[:prompt_words]),
            "completion": "GUESS: " + " ".join(words[prompt_words : prompt_words + completion_words - 2]),
            "target_word": guess, "task_id": i,
        })
    return rows


def write_rows(sizes: Sizes, work: Path) -> tuple[dict[str, Path], list[str]]:
    """Synthetic rows as JSONL per split: (paths, texts for a word-level tokenizer)."""
    rng = np.random.default_rng(0)
    paths = {}
    (work / "rows").mkdir(parents=True, exist_ok=True)
    texts = []
    for split, n in (("train_base", sizes.pool_rows), ("attr_query", sizes.query_rows), ("eval", sizes.eval_rows)):
        rows = synthetic_rows(sizes, n, split, rng)
        paths[split] = work / "rows" / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in rows))
        texts += [r["prompt"] + " " + r["completion"] for r in rows]
    return paths, texts


def write_inputs(sizes: Sizes, tiny: bool, work: Path) -> tuple[Path, dict[str, Path]]:
    """Synthetic rows as JSONL per split, and the random model + tokenizer folder."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, GenerationConfig

    paths, texts = write_rows(sizes, work)
    tokenizer = train_word_tokenizer(texts + [" ".join(f"w{j}" for j in range(sizes.words))])
    shape = dict(TINY_GEMMA_3 if tiny else GEMMA_3_1B)
    shape["vocab_size"] = max(shape.get("vocab_size", 0), len(tokenizer))
    config = Gemma3TextConfig(**shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device() == "cuda" else torch.float32
    with torch.device(device()):
        model = Gemma3ForCausalLM(config).to(dtype)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model_dir = work / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    del model
    return model_dir, paths


def experiment_config(sizes: Sizes, model_dir: Path, paths: dict[str, Path], on_cpu: bool,
                      token_batch: int | None = None):
    """The experiment the stages run: project defaults except sizes and the synthetic source.

    The CPU checks (--tiny, --model on a CPU) project gradients to 16 per side (the demo's width) instead of 32: on a CPU
    the preconditioner's eigendecompositions (one per LoRA module, 1024 x 1024 at width 32) would
    take most of its time.
    """
    return parse_config({
        "name": "gpu_check",
        "model": {"base": str(model_dir)},
        "tokenize": {"format": "raw", "max_length": sizes.row_tokens + 8},
        "data": {"source": {"kind": "generic", "splits": {k: str(v) for k, v in paths.items()}}},
        "train": {"max_steps": sizes.train_steps, "batch_size": sizes.batch, "grad_accum": 1, "warmup_ratio": 0.0,
                  "scheduler": "constant", "learning_rate": 1e-4, "auto_batch": False},
        "sae": {"layer": sizes.sae_layer, "d_sae": sizes.d_sae, "model": "base_adapter",
                "batch_size": sizes.sae_batch},
        "evaluate": {"max_new_tokens": sizes.new_tokens, "batch_size": sizes.eval_batch},
        "select": {"k": max(1, sizes.pool_rows // 4)},  # the attribute stage's top-k summary
        "attribute": ({"projection_dim": 16} if on_cpu else {}) | ({"token_batch_size": token_batch} if token_batch else {}),
    }, source="benchmarks/gpu_check.py")


# ---------------------------------------------------------------- references


def raw_train_loop(cfg, model_path: str, rows: list[dict], steps: int, batch: int) -> tuple[int, float, float]:
    """(tokens, seconds, seconds after the first step) of a plain LoRA forward+backward+AdamW loop: what
    the train stage wraps. Timed from a cold start like the stage's own loop (first kernels, allocator);
    the steady rate leaves the first step out."""
    import torch

    tokenizer = load_tokenizer(model_path)
    dataset = tokenize_rows(tokenizer, rows, cfg.tokenize)
    model = train.new_adapter(load_model(model_path, dtype=cfg.model.dtype), cfg.train)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.learning_rate)
    dev = next(model.parameters()).device
    ids_all, labels_all = dataset["input_ids"], dataset["labels"]

    def step(i: int) -> int:
        idx = [(i * batch + j) % len(ids_all) for j in range(batch)]
        width = max(len(ids_all[k]) for k in idx)
        ids = torch.full((batch, width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, width), -100, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for row, k in enumerate(idx):
            n = len(ids_all[k])
            ids[row, :n], labels[row, :n], mask[row, :n] = torch.tensor(ids_all[k]), torch.tensor(labels_all[k]), 1
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=labels.to(dev)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return int(mask.sum())

    first, first_seconds = timed(step, 0)
    rest, rest_seconds = timed(lambda: sum(step(i) for i in range(1, steps)))  # model freed on return
    return first + rest, first_seconds + rest_seconds, rest_seconds


def head_cost(cfg, model_path: str, adapter: Path, rows: list[dict], batch: int) -> dict[str, float]:
    """Seconds of a LoRA forward+backward over the rows with the LM head applied at every position (as
    Bergson's loss does: `model(x).logits`) and at the supervised positions only (as the train stage
    does): where attribution's time goes on a large vocabulary."""
    import torch

    tokenizer = load_tokenizer(model_path)
    dataset = tokenize_rows(tokenizer, rows, cfg.tokenize)
    model = load_model(model_path, adapter, dtype=cfg.model.dtype, trainable=True)
    dev = next(model.parameters()).device
    head = model.get_output_embeddings()
    pairs = list(zip(dataset["input_ids"], dataset["labels"], strict=True))

    def loss_of(ids, labels, everywhere: bool):
        if everywhere:
            logits = model(input_ids=ids).logits[:, :-1]
            return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels[:, 1:].flatten())
        hidden = model(input_ids=ids, output_hidden_states=True, logits_to_keep=1).hidden_states[-1][:, :-1]
        keep = labels[:, 1:] != -100
        return torch.nn.functional.cross_entropy(head(hidden[keep]).float(), labels[:, 1:][keep])

    out = {}
    for everywhere in (True, False):
        def run(everywhere: bool = everywhere) -> None:
            for start in range(0, len(pairs), batch):
                chunk = pairs[start : start + batch]
                width = max(len(i) for i, _ in chunk)
                ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
                labels = torch.full((len(chunk), width), -100, dtype=torch.long)
                for row, (i, lab) in enumerate(chunk):
                    ids[row, : len(i)], labels[row, : len(lab)] = torch.tensor(i), torch.tensor(lab)
                loss_of(ids.to(dev), labels.to(dev), everywhere).backward()
                model.zero_grad(set_to_none=True)

        out["every position" if everywhere else "supervised positions"] = timed(run)[1]
    return out


def plain_forward(cfg, model_path: str, adapter: Path, rows: list[dict], batch: int) -> tuple[int, float]:
    """(tokens, seconds) of a full no-grad forward pass over the rows, batches sorted by length."""
    import torch

    tokenizer = load_tokenizer(model_path)
    dataset = tokenize_rows(tokenizer, rows, cfg.tokenize)
    model = load_model(model_path, adapter, dtype=cfg.sae.dtype).eval()
    dev = next(model.parameters()).device
    ids_all = sorted(dataset["input_ids"], key=len)

    def run() -> int:
        tokens = 0
        for start in range(0, len(ids_all), batch):
            chunk = ids_all[start : start + batch]
            width = max(map(len, chunk))
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, seq in enumerate(chunk):
                ids[row, : len(seq)], mask[row, : len(seq)] = torch.tensor(seq), 1
            with torch.no_grad():
                model(input_ids=ids.to(dev), attention_mask=mask.to(dev))
            tokens += int(mask.sum())
        return tokens

    return timed(run)


def single_row_generation(cfg, model_path: str, adapter: Path, rows: list[dict]) -> tuple[list[str], float]:
    """Greedy generation one row at a time (no batching): the evaluate reference."""
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, adapter, dtype=cfg.model.dtype)
    prompts = [prompt_ids(tokenizer, r, cfg.tokenize.format) for r in rows]
    texts, seconds = timed(lambda: [
        evaluate.generate(model, tokenizer, [p], cfg.evaluate.max_new_tokens, 1, "single-row generation")[0]
        for p in prompts])
    return texts, seconds


# ---------------------------------------------------------------- the checks


def manifest(folder: Path) -> dict:
    return artifacts.load_manifest(folder).fields


def fresh(run_dir: Path, name: str) -> None:
    shutil.rmtree(run_dir / name, ignore_errors=True)


def check_train(cfg, run_dir: Path, model_path: str, sizes: Sizes) -> None:
    pool = artifacts.load_split(run_dir / artifacts.DATA, "train_base")
    tokens, seconds, steady_seconds = raw_train_loop(cfg, model_path, pool, sizes.train_steps, sizes.batch)
    raw = tokens / seconds
    steady = tokens * (sizes.train_steps - 1) / sizes.train_steps / steady_seconds if sizes.train_steps > 1 else raw
    emit({"check": "train", "path": "raw LoRA forward+backward+AdamW loop", "tokens": tokens,
          "seconds": round(seconds, 3), "tokens_per_s": round(raw, 1), "batch": sizes.batch,
          "steady_tokens_per_s": round(steady, 1)})
    fresh(run_dir, artifacts.TRAIN_BASE)
    _, wall = timed(train.run, cfg, run_dir)
    info = manifest(run_dir / artifacts.TRAIN_BASE)
    stage_tokens = tokens  # same steps x batch over rows of one length
    loop_seconds = info.get("train_runtime_s", wall)
    emit({"check": "train", "path": "train stage: trainer loop", "tokens": stage_tokens,
          "seconds": round(loop_seconds, 3), "tokens_per_s": round(stage_tokens / loop_seconds, 1),
          "reference": "raw LoRA forward+backward+AdamW loop", "ratio": round(stage_tokens / loop_seconds / raw, 3),
          "target": ">= 0.8"})
    emit({"check": "train", "path": "train stage: end to end (load, tokenize, train, save adapter, manifest)",
          "tokens": stage_tokens, "seconds": round(wall, 3), "tokens_per_s": round(stage_tokens / wall, 1),
          "reference": "raw LoRA forward+backward+AdamW loop", "ratio": round(stage_tokens / wall / raw, 3)})


def pool_tokens(cfg, run_dir: Path, model_path: str) -> int:
    tokenizer = load_tokenizer(model_path)
    pool = artifacts.load_split(run_dir / artifacts.DATA, "train_base")
    query = artifacts.load_split(run_dir / artifacts.DATA, "attr_query")
    return sum(len(ids) for ids in tokenize_rows(tokenizer, pool + query, cfg.tokenize)["input_ids"])


def check_attribute(cfg, run_dir: Path, model_path: str, work: Path) -> float:
    """Returns the attribute stage's seconds (the gradient-scoring cost the SAE path is held against)."""
    cfg = cfg.model_copy(update={"attribute": cfg.attribute.model_copy(update={"cache_dir": str(work / "cache")})})
    tokens = pool_tokens(cfg, run_dir, model_path)
    fresh(run_dir, artifacts.ATTRIBUTE)
    shutil.rmtree(work / "cache", ignore_errors=True)
    _, stage_seconds = timed(attribute.run, cfg, run_dir)
    stage_dir = run_dir / artifacts.ATTRIBUTE
    rows = work / "bergson_rows"
    shutil.rmtree(rows, ignore_errors=True)
    for name in ("pool.hf", "query.hf"):
        shutil.copytree(stage_dir / artifacts.BERGSON_DIR / name, rows / name)
    settings = attribute.scoring_for(cfg, model_path)
    token_batch = manifest(stage_dir).get("token_batch_size")
    if isinstance(token_batch, int):
        settings = replace(settings, token_batch_size=token_batch)
    adapter = run_dir / artifacts.TRAIN_BASE / artifacts.ADAPTER_DIR
    steps = direct_steps(settings, model_path, adapter, rows, work / "bare_bergson")
    _, bare_seconds = timed(run_bare_command, steps, work / "bare_bergson", work / "bare_bergson.log")
    emit({"check": "attribute", "path": "bare bergson command (hessian + build + score, one process)",
          "tokens": tokens, "seconds": round(bare_seconds, 3), "tokens_per_s": round(tokens / bare_seconds, 1),
          "token_batch_size": settings.token_batch_size})
    emit({"check": "attribute", "path": "attribute stage (end to end)", "tokens": tokens,
          "seconds": round(stage_seconds, 3), "tokens_per_s": round(tokens / stage_seconds, 1),
          "reference": "bare bergson command", "ratio": round(bare_seconds / stage_seconds, 3),
          "seconds_ratio": round(stage_seconds / bare_seconds, 3), "target": "seconds_ratio <= 1.1"})
    pool = artifacts.load_split(run_dir / artifacts.DATA, "train_base")
    costs = head_cost(cfg, model_path, adapter, pool, cfg.train.batch_size)
    emit({"check": "attribute", "path": "where its time goes: LoRA fwd+bwd, LM head at every position (Bergson's loss)",
          "rows": len(pool), "seconds": round(costs["every position"], 3),
          "reference": "the same with the LM head at the supervised positions only (the train stage's loss)",
          "reference_seconds": round(costs["supervised positions"], 3),
          "ratio": round(costs["every position"] / costs["supervised positions"], 3)})
    return stage_seconds


def check_sae(cfg, run_dir: Path, model_path: str, gradient_seconds: float) -> None:
    pool = artifacts.load_split(run_dir / artifacts.DATA, "train_base")
    adapter = run_dir / artifacts.TRAIN_BASE / artifacts.ADAPTER_DIR
    tokens, forward_seconds = plain_forward(cfg, model_path, adapter, pool, cfg.sae.batch_size)
    emit({"check": "sae", "path": "plain forward pass, all blocks and the LM head", "tokens": tokens,
          "seconds": round(forward_seconds, 3), "tokens_per_s": round(tokens / forward_seconds, 1)})
    fresh(run_dir, artifacts.SAE)
    _, seconds = timed(sae.run, cfg, run_dir)
    emit({"check": "sae", "path": f"sae stage (forward to block {cfg.sae.layer} + SAE encode + pooling)",
          "tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
          "reference": "plain forward pass", "ratio": round(forward_seconds / seconds, 3)})
    emit({"check": "sae", "path": "sae stage vs gradient scoring of the same pool", "tokens": tokens,
          "seconds": round(seconds, 3), "reference": "attribute stage", "reference_seconds": round(gradient_seconds, 3),
          "speedup": round(gradient_seconds / seconds, 3), "target": ">= 6"})


def check_evaluate(cfg, run_dir: Path, model_path: str, sizes: Sizes) -> None:
    rows = artifacts.load_split(run_dir / artifacts.DATA, "eval")
    adapter = run_dir / artifacts.TRAIN_BASE / artifacts.ADAPTER_DIR
    single, seconds = single_row_generation(cfg, model_path, adapter, rows[: sizes.single_rows])
    reference = len(single) / seconds
    emit({"check": "evaluate", "path": "generate one row at a time", "rows": len(single),
          "seconds": round(seconds, 3), "rows_per_s": round(reference, 2)})
    name = "base_adapter"
    fresh(run_dir, artifacts.eval_dir(name))
    _, wall = timed(evaluate.run, cfg, run_dir, model=name)
    speed = artifacts.load_metrics(run_dir / artifacts.eval_dir(name)).speed
    rate = speed.get("generation_rows_per_s") or len(rows) / wall
    emit({"check": "evaluate", "path": "evaluate stage generation (hf, batched by length, KV cache)",
          "rows": len(rows), "rows_per_s": round(rate, 2), "stage_seconds": round(wall, 3),
          "reference": "generate one row at a time", "ratio": round(rate / reference, 3), "speed": speed})
    predictions = artifacts.eval_dir(name)
    same = _same_as_single(run_dir / predictions, single)
    emit({"check": "evaluate", "path": "batched vs one-at-a-time outputs", "rows": len(single),
          "identical": same})
    check_vllm(cfg, run_dir, model_path, name)


def _same_as_single(eval_folder: Path, single: list[str]) -> int:
    generated = [p.generated for p in artifacts.load_predictions(eval_folder)[: len(single)]]
    return sum(g == text for g, text in zip(generated, single, strict=True))


def check_vllm(cfg, run_dir: Path, model_path: str, hf_name: str) -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        emit({"check": "evaluate", "path": "vllm backend", "skipped": "vllm is not installed"})
        return
    if device() != "cuda":
        emit({"check": "evaluate", "path": "vllm backend", "skipped": "no CUDA device"})
        return
    vcfg = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"backend": "vllm"})})
    vllm_dir = run_dir.with_name(run_dir.name + "_vllm")  # the same base adapter, evaluated under its own name
    shutil.rmtree(vllm_dir, ignore_errors=True)
    vllm_dir.mkdir()
    for name in (artifacts.DATA, artifacts.TRAIN_BASE):
        (vllm_dir / name).symlink_to(run_dir / name, target_is_directory=True)
    _, wall = timed(evaluate.run, vcfg, vllm_dir, model=hf_name)
    folder = vllm_dir / artifacts.eval_dir(hf_name)
    hf = [p.generated for p in artifacts.load_predictions(run_dir / artifacts.eval_dir(hf_name))]
    vl = [p.generated for p in artifacts.load_predictions(folder)]
    emit({"check": "evaluate", "path": "evaluate stage generation (vllm)", "rows": len(vl),
          "rows_per_s": artifacts.load_metrics(folder).speed.get("generation_rows_per_s"), "stage_seconds": round(wall, 3),
          "identical_to_hf": sum(a == b for a, b in zip(hf, vl, strict=True)), "of": len(vl)})


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: a 4-block Gemma-3 and a few short rows")
    parser.add_argument("--full-shape", action="store_true",
                        help="with --tiny: keep the Gemma-3-1B shape (slow on a CPU; checks that shape's code path)")
    parser.add_argument("--model", default=None,
                        help="a prepared Hugging Face model folder (e.g. models/gemma-3-270m) instead of a random model")
    parser.add_argument("--workdir", default=None, help="where model, rows and stage folders go (default: temp)")
    parser.add_argument("--pool-rows", type=int, help="rows scored by attribute and sae")
    parser.add_argument("--row-tokens", type=int, help="tokens per row")
    parser.add_argument("--train-steps", type=int, help="optimizer steps of the train check")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--only", nargs="*", choices=["train", "attribute", "sae", "evaluate"],
                        help="run only these checks (sae needs attribute's seconds; it runs attribute too)")
    args = parser.parse_args(argv)
    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the bare bergson process gets the same
    real_cpu = args.model is not None and device() != "cuda"
    sizes = TINY if args.tiny else REAL_CPU if real_cpu else GPU
    overrides = {k: v for k, v in (("pool_rows", args.pool_rows), ("row_tokens", args.row_tokens),
                                   ("train_steps", args.train_steps)) if v}
    sizes = replace(sizes, **overrides)
    if not args.tiny and not args.model and device() != "cuda":
        parser.error("the full check needs a CUDA GPU; use --tiny (or --model PATH) on a CPU")
    if args.model and not (Path(args.model) / "config.json").is_file():
        parser.error(f"--model {args.model}: no config.json there (prepare one: playpen-attribution prepare-model gemma-3-270m)")
    only = set(args.only or ["train", "attribute", "sae", "evaluate"])
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_check_"))
    run_dir = work / "run"
    started = time.perf_counter()
    emit({"check": "setup", "device": torch.cuda.get_device_name(0) if device() == "cuda" else platform.processor()
          or platform.machine(), "date": date.today().isoformat(), "torch": torch.__version__,
          "transformers": transformers.__version__, "threads": torch.get_num_threads(),
          "model": args.model or ("tiny Gemma-3" if args.tiny and not args.full_shape else "Gemma-3-1B shape, random weights"),
          "sizes": sizes.__dict__})
    if args.model:
        (paths, _), seconds = timed(write_rows, sizes, work)
        model_dir = Path(args.model)
    else:
        (model_dir, paths), seconds = timed(write_inputs, sizes, args.tiny and not args.full_shape, work)
    # a real 262k vocabulary on a CPU: 1,024 tokens per Bergson batch (2,048 took 13 GB in the bare
    # command, beside this process's own, and was killed for memory on a 24 GB machine)
    cfg = experiment_config(sizes, model_dir, paths, args.tiny or real_cpu, 1024 if real_cpu else None)
    model_path = str(model_dir.resolve())
    data.run(cfg, run_dir, overwrite=True)
    emit({"check": "setup", "path": "synthetic rows written" + ("" if args.model else " + random model"),
          "seconds": round(seconds, 3)})
    if "train" in only or not (run_dir / artifacts.TRAIN_BASE).exists():
        check_train(cfg, run_dir, model_path, sizes)
    gradient_seconds = None
    if only & {"attribute", "sae"}:
        gradient_seconds = check_attribute(cfg, run_dir, model_path, work)
    if "sae" in only:
        check_sae(cfg, run_dir, model_path, gradient_seconds)
    if "evaluate" in only:
        check_evaluate(cfg, run_dir, model_path, sizes)
    emit({"check": "done", "seconds": round(time.perf_counter() - started, 1), "workdir": str(work)})


if __name__ == "__main__":
    with contextlib.redirect_stdout(sys.stderr):
        main()
