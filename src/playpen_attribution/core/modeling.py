"""Loading the base model, its tokenizer and a LoRA adapter: the one path every stage uses."""

from __future__ import annotations

from pathlib import Path

from playpen_attribution.core.adapters import check_adapter_base
from playpen_attribution.core.tokenization import check_tokenizer


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device() == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def load_tokenizer(model_path: str | Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    check_tokenizer(tokenizer, f"tokenizer of {model_path}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_path: str | Path, adapter_path: Path | None = None, dtype: str = "auto", trainable: bool = False):
    """Base model from `from_pretrained`, with the adapter on top when given (checked against the base)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch_dtype(dtype))
    if adapter_path is not None:
        from peft import PeftModel

        check_adapter_base(adapter_path, model_path)
        model = PeftModel.from_pretrained(model, str(adapter_path), is_trainable=trainable)
    return model.to(device())
