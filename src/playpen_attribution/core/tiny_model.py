"""Build a tiny causal LM as an ordinary Hugging Face model folder.

A word-level tokenizer is trained on the given texts and a small randomly initialised Llama is
written next to it with `save_pretrained`, so every stage loads it with `from_pretrained` exactly as
it would load `google/gemma-3-1b-it`. Tests and the offline demo use it; nothing here downloads.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class TinyModelConfig(BaseModel):
    """A tiny randomly initialised Llama built in code, with a word-level tokenizer trained on the pool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden_size: int = Field(128, gt=0, description="Width of the residual stream.")
    num_layers: int = Field(2, gt=0, description="Number of transformer blocks.")
    num_heads: int = Field(4, gt=0, description="Attention heads (num_key_value_heads = heads // 2).")
    intermediate_size: int = Field(256, gt=0, description="MLP width.")
    max_position_embeddings: int = Field(256, gt=0, description="Longest sequence the model accepts.")
    seed: int = Field(0, description="Seed of the random initialisation.")

SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<bos>", "eos_token": "<eos>"}
CHAT_TEMPLATE = (
    "{% for m in messages %}<bos> {{ m['role'] }} : {{ m['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}<bos> assistant : {% endif %}"
)


def train_word_tokenizer(texts: list[str], eos: bool = True):
    """A word-level `PreTrainedTokenizerFast` (BOS prepended, whitespace and punctuation split)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>"] + (["<eos>"] if eos else [])
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=specials))
    bos_id = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos_id)])
    special = dict(SPECIAL_TOKENS) if eos else {k: v for k, v in SPECIAL_TOKENS.items() if k != "eos_token"}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(texts: list[str], cfg: TinyModelConfig, out_dir: Path) -> Path:
    """Write tokenizer + randomly initialised Llama to `out_dir`; returns it."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = train_word_tokenizer(texts)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=max(1, cfg.num_heads // 2),
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
