"""Greedy generation from pre-tokenized prompts, with two backends on the same settings.

`hf` (`generate`): transformers `generate`, prompts sorted by length and batched with left padding,
KV cache on, in the model's dtype (bf16 on a GPU). `vllm` (`vllm_generate`): vLLM's offline engine
(optional extra `vllm`, CUDA) fed the same token ids, the adapter as a `LoRARequest`. Both stop at
the given stop ids (the tokenization rule's `stop_ids`: EOS, and the chat template's turn end such as
Gemma's `<end_of_turn>`) after at most `max_new_tokens` and decode the new tokens with the project's
tokenizer, `skip_special_tokens=True`, so the texts are comparable row for row.
"""

from __future__ import annotations

import gc
import itertools
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from playpen_attribution.core.adapters import (
    check_adapter_base,
    config_file,
    read_adapter,
)
from playpen_attribution.core.batch_sizing import length_batches, pad_batch
from playpen_attribution.errors import UserError

VLLM_INSTALL = ("evaluate.backend is 'vllm' but vLLM is not installed: install it with `uv sync --extra vllm` "
                "(or `pip install vllm` into this environment; it needs a CUDA GPU), or set evaluate.backend: hf")
_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
_engine: tuple[tuple, Any] | None = None  # (key, vllm.LLM): one engine reused across evaluations
_lora_ids = itertools.count(1)  # a fresh id per request, so vLLM never serves a cached older adapter


def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int, desc: str,
             stop: list[int] | None = None) -> list[str]:
    """Greedy continuations of pre-tokenized prompts, batched by length with left padding, in input order,
    stopping at any of `stop` (default: the tokenizer's EOS)."""
    import torch

    out: list[str] = [""] * len(prompts)
    model.eval()
    dev = next(model.parameters()).device
    for idx in tqdm(length_batches([len(p) for p in prompts], batch_size), desc=desc, unit="batch", leave=False):
        batch = pad_batch([prompts[i] for i in idx], tokenizer.pad_token_id, left=True)
        ids, mask = batch.input_ids, batch.attention_mask
        width = ids.shape[1]
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new_tokens, use_cache=True,
                do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=stop or tokenizer.eos_token_id,
            )
        for row, i in enumerate(idx):
            out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
    return out


def require_vllm() -> None:
    """Raise a UserError saying how to install vLLM when it cannot be imported."""
    try:
        import vllm  # noqa: F401
        from vllm.lora.request import LoRARequest  # noqa: F401
    except ImportError as exc:
        raise UserError(f"{VLLM_INSTALL} ({exc})") from None


def vllm_lora_rank(adapter_path: Path) -> int:
    """The `max_lora_rank` vLLM needs for a PEFT adapter; UserError for what vLLM cannot serve."""
    info = read_adapter(adapter_path)
    where = config_file(adapter_path)
    if info.modules_to_save:
        raise UserError(
            f"{where}: the adapter trains {list(info.modules_to_save)} in full (modules_to_save), which "
            "vLLM's LoRA cannot serve; set evaluate.backend: hf for this run"
        )
    fits = [r for r in _LORA_RANKS if r >= info.rank]
    if not fits:
        raise UserError(f"{where}: LoRA rank {info.rank} is above vLLM's largest max_lora_rank {_LORA_RANKS[-1]}")
    return fits[0]


def _vllm_engine(model_path: str, dtype: str, lora_rank: int | None):
    """The cached engine when it fits (same model and dtype, LoRA rank high enough), else a new one."""
    global _engine
    import torch
    from vllm import LLM

    key = (model_path, dtype)
    if _engine is not None and _engine[0][:2] == key and (lora_rank is None or (_engine[0][2] or 0) >= lora_rank):
        return _engine[1]
    _engine = None  # drop the old engine (its GPU memory) before starting another
    gc.collect()
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    lora = {"enable_lora": True, "max_lora_rank": lora_rank, "max_loras": 1} if lora_rank else {}
    llm = LLM(model=model_path, dtype=dtype, seed=0, generation_config="vllm",
              gpu_memory_utilization=round(0.5 * free / total, 3), **lora)
    _engine = ((model_path, dtype, lora_rank), llm)
    return llm


def vllm_generate(
    model_path: str | Path, adapter_path: Path | None, tokenizer, prompts: list[list[int]], max_new_tokens: int,
    dtype: str = "auto", stop: list[int] | None = None,
) -> tuple[list[str], float]:
    """Greedy continuations through vLLM (token-id prompts, adapter as a LoRARequest), in input order,
    and the seconds spent starting the engine (0 when the cached one is reused).

    `generation_config="vllm"` keeps the model's generation_config out, so, as in `generate`, decoding
    is plain greedy and stops only at the tokenizer's EOS.
    """
    require_vllm()
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    model_path = str(model_path)
    rank = None
    if adapter_path is not None:
        check_adapter_base(adapter_path, model_path)
        rank = vllm_lora_rank(adapter_path)
    t0 = time.perf_counter()
    llm = _vllm_engine(model_path, "bfloat16" if dtype == "auto" else dtype, rank)
    setup = time.perf_counter() - t0
    lora = None
    if adapter_path is not None:
        lora_id = next(_lora_ids)
        lora = LoRARequest(f"adapter{lora_id}", lora_id, str(Path(adapter_path).resolve()))
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=stop or [tokenizer.eos_token_id],
                            detokenize=False)
    outputs = llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, lora_request=lora)
    return [tokenizer.decode(list(o.outputs[0].token_ids), skip_special_tokens=True) for o in outputs], setup
