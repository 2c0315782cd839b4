"""Evaluation speed: length-batched generation changes no output, rows/s in metrics, the vllm backend's guards."""

import json
import random
import sys

import pytest
import torch
from helpers import small_demo_dict
from transformers import LlamaConfig, LlamaForCausalLM

from playpen_attribution.config import parse_config
from playpen_attribution.core.generation import generate, vllm_lora_rank
from playpen_attribution.core.tokenization import TokenizeConfig, prompt_ids
from playpen_attribution.errors import UserError
from playpen_attribution.stages.evaluate import evaluate_rows

PROMPTS = ["CLUE: fruit red", "CLUE: pet bark loyal puppy", "CLUE: sky", "CLUE: cold white snow falls in winter",
           "CLUE: bird", "CLUE: you read it, pages and a cover", "CLUE: sea", "CLUE: hot drink morning", "CLUE: king"]
WORDS = ["apple", "dog", "sun"]
ROWS = [{"example_id": f"r{i}", "prompt": p, "completion": f"GUESS: {WORDS[i % 3]}", "target_word": WORDS[i % 3]}
        for i, p in enumerate(PROMPTS)]


def _llama(vocab: int, hidden: int = 32, heads: int = 2, init: float = 0.5) -> LlamaForCausalLM:
    """A tiny random Llama whose logits are peaked (large init), so greedy picks have no near-ties."""
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
        num_attention_heads=heads, num_key_value_heads=1, max_position_embeddings=64, initializer_range=init))


@pytest.fixture(scope="module")
def model(tokenizer):
    return _llama(len(tokenizer)).eval()


def _cfg(**evaluate):
    return parse_config(small_demo_dict(evaluate={"max_new_tokens": 6, "batch_size": 8} | evaluate))


def test_length_batched_generation_is_the_same_whatever_the_batch_and_order(model, tokenizer):
    prompts = [prompt_ids(tokenizer, r, "raw") for r in ROWS]
    one_by_one = generate(model, tokenizer, prompts, 6, batch_size=1, desc="b1")
    batched = generate(model, tokenizer, prompts, 6, batch_size=8, desc="b8")
    order = list(range(len(prompts)))
    random.Random(0).shuffle(order)
    shuffled = generate(model, tokenizer, [prompts[i] for i in order], 6, batch_size=8, desc="shuffled")
    assert batched == one_by_one
    assert [shuffled[order.index(i)] for i in range(len(prompts))] == one_by_one
    assert any(text.strip() for text in one_by_one)  # something was generated


def test_metrics_carry_rows_per_second(model, tokenizer):
    preds, metrics = evaluate_rows(_cfg(), ROWS, model, tokenizer, "base")
    speed = metrics["speed"]
    assert set(speed) == {"loss_rows_per_s", "choice_rows_per_s", "generation_rows_per_s", "generation_backend"}
    assert speed["loss_rows_per_s"] > 0 and speed["generation_rows_per_s"] > 0 and speed["generation_backend"] == "hf"
    assert metrics["total"] == len(ROWS) and len(preds) == len(ROWS)
    json.dumps(metrics)  # metrics.json stays plain JSON

    _, loss_only = evaluate_rows(_cfg(generate=False, choices=None), ROWS, model, tokenizer, "base")
    assert set(loss_only["speed"]) == {"loss_rows_per_s"} and loss_only["speed"]["loss_rows_per_s"] > 0


def test_the_choice_metric_ranks_the_target_among_the_eval_words(model, tokenizer):
    """Format-robust: each row's completion with every eval target word as the guess, ranked by likelihood."""
    from playpen_attribution.core.choice import choice_log_likelihoods
    from playpen_attribution.core.tokenization import prompt_and_completions

    rows = ROWS + [{"example_id": "no-guess", "prompt": "CLUE: red", "completion": "apple", "target_word": "apple"}]
    preds, metrics = evaluate_rows(_cfg(generate=False), rows, model, tokenizer, "base")
    assert metrics["choice_total"] == len(ROWS) and metrics["choice_skipped"] == 1  # no GUESS: to substitute
    assert "choice_rank" not in preds[-1]
    for row, pred in zip(ROWS, preds[:-1], strict=True):  # the last row has no guess
        words = [row["target_word"]] + [w for w in WORDS if w != row["target_word"]]
        prompt, options = prompt_and_completions(tokenizer, row, [f"GUESS: {w}" for w in words], TokenizeConfig(max_length=64))
        (scores,) = choice_log_likelihoods(model, [prompt], [options], tokenizer.pad_token_id)
        assert pred["choice_rank"] == 1 + int((scores[1:] >= scores[0]).sum()) and pred["choices"] == 3
        assert pred["choice_correct"] == (pred["choice_rank"] == 1)
    ranks = [p["choice_rank"] for p in preds[:-1]]
    assert metrics["choice_accuracy"] == pytest.approx(sum(r == 1 for r in ranks) / len(ranks))
    assert metrics["choice_mrr"] == pytest.approx(sum(1 / r for r in ranks) / len(ranks))
    _, two = evaluate_rows(_cfg(generate=False, choices=2), ROWS, model, tokenizer, "base")  # target + one other
    assert two["choice_mrr"] >= 0.5 and two["choice_total"] == len(ROWS)


def test_vllm_backend_without_vllm_names_the_setting(model, tokenizer, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError even where it is installed
    with pytest.raises(UserError, match=r"evaluate\.backend.*uv sync --extra vllm.*pip install vllm"):
        evaluate_rows(_cfg(backend="vllm"), ROWS, model, tokenizer, "base", model_path="unused")
    _, metrics = evaluate_rows(_cfg(backend="vllm", generate=False), ROWS, model, tokenizer, "base")
    assert "generation_backend" not in metrics["speed"]  # loss only: vLLM is never needed


def test_vllm_refuses_modules_to_save_and_rounds_the_rank_up(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 12, "modules_to_save": ["lm_head"]}))
    with pytest.raises(UserError, match="modules_to_save"):
        vllm_lora_rank(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 12, "rank_pattern": {"q_proj": 24}}))
    assert vllm_lora_rank(tmp_path) == 32


def test_config_rejects_an_unknown_backend():
    with pytest.raises(UserError, match=r"evaluate\.backend.*'tgi'"):
        parse_config(small_demo_dict(evaluate={"backend": "tgi"}))
    assert parse_config(small_demo_dict()).evaluate.backend == "hf"


@pytest.mark.gpu
def test_vllm_and_hf_generate_the_same_texts(tokenizer, tmp_path):
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU")
    from peft import LoraConfig, get_peft_model

    from playpen_attribution.core.generation import vllm_generate
    from playpen_attribution.core.modeling import load_model

    base = tmp_path / "base"
    _llama(len(tokenizer), hidden=128, heads=2, init=0.1).save_pretrained(base)  # head_dim 64 suits vLLM kernels
    tokenizer.save_pretrained(base)
    peft = get_peft_model(_llama(len(tokenizer), hidden=128, heads=2, init=0.1),
                          LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.peft_config["default"].base_model_name_or_path = str(base)
    peft.save_pretrained(tmp_path / "adapter")
    prompts = [prompt_ids(tokenizer, r, "raw") for r in ROWS]
    for adapter in (None, tmp_path / "adapter"):
        hf = generate(load_model(base, adapter, dtype="float32"), tokenizer, prompts, 8, batch_size=4, desc="hf")
        vllm, _ = vllm_generate(base, adapter, tokenizer, prompts, 8, dtype="float32")
        assert vllm == hf
