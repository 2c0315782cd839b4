"""Build a tiny causal LM as an ordinary Hugging Face model folder.

A word-level tokenizer is trained on the given texts and a small randomly initialised Llama is
written next to it with `save_pretrained`, so every stage loads it with `from_pretrained` exactly as
it would load `google/gemma-3-1b-it`. Tests and the offline demo use it; nothing here downloads.

With `pretrain_epochs` the model first gets a short full-parameter pretraining pass on the given
(prompt, completion) rows (loss on the completion only, the one tokenization rule), so that it
arrives knowing its words the way a real pretrained model does and LoRA alone can learn the task.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from playpen_attribution.core.section import Section


class TinyModelConfig(Section):
    """A tiny randomly initialised Llama built in code, with a word-level tokenizer trained on the pool."""

    hidden_size: int = Field(128, gt=0, description="Width of the residual stream.")
    num_layers: int = Field(2, gt=0, description="Number of transformer blocks.")
    num_heads: int = Field(4, gt=0, description="Attention heads (num_key_value_heads = heads // 2).")
    intermediate_size: int = Field(256, gt=0, description="MLP width.")
    max_position_embeddings: int = Field(256, gt=0, description="Longest sequence the model accepts.")
    seed: int = Field(0, description="Seed of the random initialisation (and of the pretraining order).")
    pretrain_epochs: int = Field(
        0, ge=0, description="Full-parameter pretraining passes over the lexicon's descriptions before any LoRA "
        "(0 = a random model); the demo uses it so LoRA alone can learn the task.",
    )
    pretrain_rows_per_word: int = Field(40, gt=0, description="Pretraining rows per lexicon word.")
    pretrain_learning_rate: float = Field(3e-3, gt=0, description="AdamW learning rate of pretraining (linear decay).")
    pretrain_batch_size: int = Field(64, gt=0, description="Rows per pretraining batch.")

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


def build_tiny_model(texts: list[str], cfg: TinyModelConfig, out_dir: Path,
                     pretrain_rows: list[dict] | None = None) -> dict:
    """Write tokenizer + tiny Llama to `out_dir` (pretrained on `pretrain_rows` when `cfg.pretrain_epochs`);
    returns what the pretraining did (empty without it)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    pretrain_rows = pretrain_rows or []
    tokenizer = train_word_tokenizer(texts + [r["prompt"] + " " + r["completion"] for r in pretrain_rows])
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
    stats = pretrain(model, tokenizer, pretrain_rows, cfg) if cfg.pretrain_epochs and pretrain_rows else {}
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return stats


def pretrain(model, tokenizer, rows: list[dict], cfg: TinyModelConfig) -> dict:
    """Full-parameter AdamW on `rows` (completion-only loss, linear decay), in place; loss per epoch."""
    import random

    import torch
    from tqdm import tqdm

    from playpen_attribution.core.batch_sizing import pad_batch
    from playpen_attribution.core.tokenization import TokenizeConfig, tokenize_row

    rule = TokenizeConfig(max_length=cfg.max_position_embeddings)
    encoded = [tokenize_row(tokenizer, r, rule) for r in rows]
    batches_per_epoch = -(-len(encoded) // cfg.pretrain_batch_size)
    steps = cfg.pretrain_epochs * batches_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    order, rng, losses = list(range(len(encoded))), random.Random(cfg.seed), []
    model.train()
    for _ in tqdm(range(cfg.pretrain_epochs), desc="pretrain tiny model", unit="epoch", leave=False):
        rng.shuffle(order)
        total = 0.0
        for start in range(0, len(order), cfg.pretrain_batch_size):
            chunk = [encoded[i] for i in order[start : start + cfg.pretrain_batch_size]]
            batch = pad_batch([e["input_ids"] for e in chunk], tokenizer.pad_token_id, labels=[e["labels"] for e in chunk])
            loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            total += float(loss.detach())
        losses.append(round(total / batches_per_epoch, 6))
    model.eval()
    return {"pretrain_rows": len(rows), "pretrain_steps": steps, "pretrain_loss_per_epoch": losses}
