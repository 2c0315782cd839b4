"""Loading the base model, its tokenizer and a LoRA adapter: the one path every stage uses; `model_facts` reads
the facts about a model the stages size things by (context length, vocabulary, width, depth), in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from playpen_attribution.core.adapters import check_adapter_base
from playpen_attribution.core.tokenization import check_tokenizer, turn_end_id
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device() == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


@dataclass(frozen=True)
class ModelFacts:
    """A model's sizes, from its (text) config."""

    max_positions: int | None
    """`max_position_embeddings`: the longest sequence it accepts (None when the config has none)."""
    vocab_size: int
    hidden_size: int
    num_layers: int


def model_facts(model_path: str | Path) -> ModelFacts:
    """The model's sizes from its config (a multimodal config's text part), the one place they are read."""
    from transformers import AutoConfig

    text = AutoConfig.from_pretrained(str(model_path)).get_text_config()
    return ModelFacts(getattr(text, "max_position_embeddings", None), int(text.vocab_size), int(text.hidden_size),
                      int(text.num_hidden_layers))


CHAT_TEMPLATES = Path(__file__).with_name("chat_templates")
"""Shipped chat templates, by name (`<name>.jinja`): for base weights whose tokenizer has none."""


def chat_template_text(template: str) -> str:
    """A chat template's Jinja text: a shipped name (`gemma3`) or a file path; UserError when neither."""
    shipped = CHAT_TEMPLATES / f"{template}.jinja"
    path = shipped if shipped.is_file() else Path(template)
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in CHAT_TEMPLATES.glob("*.jinja")))
        raise UserError(f"tokenize.chat_template = {template!r}: no such file and no shipped template of that name "
                        f"(shipped: {names})")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason})") from None


def load_tokenizer(tokenizer_path: str | Path, chat_template: str | None = None):
    """The tokenizer every stage uses (pad = EOS when it has no pad token), with `chat_template` (a
    shipped name or a Jinja file, `tokenize.chat_template`) replacing its own when given."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path))
    check_tokenizer(tokenizer, f"tokenizer of {tokenizer_path}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template is not None:
        tokenizer.chat_template = chat_template_text(chat_template)
    return tokenizer


def load_model(model_path: str | Path, adapter_path: Path | None = None, dtype: str = "auto", trainable: bool = False):
    """Base model from `from_pretrained`, with the adapter on top when given (checked against the base)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch_dtype(dtype))
    if adapter_path is not None:
        from peft import PeftModel

        check_adapter_base(adapter_path, model_path)
        return PeftModel.from_pretrained(model, str(adapter_path), is_trainable=trainable).to(device())
    return model.to(device())  # type: ignore[arg-type]  # transformers wraps `to` in functools.wraps: read unbound


TWIN_COSINE = 0.99
"""Input embeddings closer than this (cosine) are twins: the model can hardly tell the tokens apart."""


def embedding_twins(model, token_id: int, cosine: float = TWIN_COSINE) -> int:
    """How many other tokens' input embeddings have cosine > `cosine` with `token_id`'s. Tokens a
    pretrained model never saw keep near-identical embeddings (Gemma-3-270M's base weights: 4,665
    twins of `<end_of_turn>`, none of EOS), so a LoRA that must learn to emit such a token has to
    separate it from all its twins; until it does, generation ends in glitch tokens instead."""
    import torch

    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        unit = torch.nn.functional.normalize(weight.float(), dim=1)
        return int((unit @ unit[token_id] > cosine).sum()) - 1


TWINS_WARNING = 10
"""More embedding twins than this and the turn-end token is called untrained in the log."""


def turn_end_check(model, tokenizer, fmt: str) -> dict:
    """The supervised turn-end token and its embedding twins (`core.modeling.embedding_twins`), with a
    warning when the base model never learned it (the chat template's end-of-turn on base weights)."""
    token_id = turn_end_id(tokenizer, fmt)
    twins = embedding_twins(model, token_id)
    token = tokenizer.convert_ids_to_tokens(token_id)
    if twins > TWINS_WARNING:
        logger.warning(f"the completion's end token {token} (id {token_id}) looks untrained in this model: {twins} "
                       f"tokens have nearly the same input embedding (cosine > {TWIN_COSINE}); until LoRA separates "
                       "it, generations may run on into glitch tokens (format raw ends with EOS instead)")
    return {"id": token_id, "token": token, "embedding_twins": twins}
