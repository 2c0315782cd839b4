"""Loading the base model, its tokenizer and a LoRA adapter: the one path every stage uses."""

from __future__ import annotations

import json
from pathlib import Path

from playpen_attribution.errors import UserError
from playpen_attribution.tokenization import check_tokenizer


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


def _same_model(a: str, b: str) -> bool:
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a.rstrip("/") == b.rstrip("/")


def check_adapter_base(adapter_path: Path, model_path: str | Path) -> None:
    """Refuse an adapter trained on another base model (Bergson needs the name to load it, too)."""
    config_file = Path(adapter_path) / "adapter_config.json"
    if not config_file.is_file():
        raise UserError(f"{adapter_path} is not a PEFT adapter folder (no adapter_config.json)")
    base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    if not base:
        raise UserError(f"{config_file}: base_model_name_or_path is missing; set it to the base model")
    if not _same_model(str(base), str(model_path)):
        raise UserError(
            f"{config_file}: adapter was trained on base model '{base}', but this run's base model is '{model_path}'"
        )


def load_model(model_path: str | Path, adapter_path: Path | None = None, dtype: str = "auto", trainable: bool = False):
    """Base model from `from_pretrained`, with the adapter on top when given (checked against the base)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch_dtype(dtype))
    if adapter_path is not None:
        from peft import PeftModel

        check_adapter_base(adapter_path, model_path)
        model = PeftModel.from_pretrained(model, str(adapter_path), is_trainable=trainable)
    return model.to(device())
