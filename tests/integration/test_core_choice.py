"""The cached choice scorer equals scoring every (prompt + choice) sequence on its own (up to what every choice
of a prompt shares, which it reads as part of the prompt)."""

import numpy as np
import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

from playpen_attribution.core import choice
from playpen_attribution.core.choice import choice_log_likelihoods


def _llama(tokenizer):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                        max_position_embeddings=64)).eval()


def _gemma(tokenizer):
    torch.manual_seed(1)
    return Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=64, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"], final_logit_softcapping=3.0)).eval()


def _one_by_one(model, prompt: list[int], option: list[int]) -> float:
    ids = torch.tensor([prompt + option])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    return float(sum(logp[len(prompt) - 1 + j, t] for j, t in enumerate(option)))


@pytest.mark.parametrize("build", [_llama, _gemma])
def test_cached_scores_equal_full_sequences(tokenizer, build, monkeypatch):
    model = build(tokenizer)

    def encode(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompts = [encode("CLUE: fruit red sweet tree orchard"), encode("CLUE: sky"), encode("CLUE: pet bark")]
    options = [encode(f"GUESS: {w}") + [tokenizer.eos_token_id] for w in ("apple", "sun", "dog", "moon star")]
    choices = [options, options[1:], [options[0], options[2]]]
    monkeypatch.setattr(choice, "CACHE_TOKEN_BUDGET", 16)  # several batches, prompts of unequal length in one
    got = choice_log_likelihoods(model, prompts, choices, tokenizer.pad_token_id)
    for prompt, row, values in zip(prompts, choices, got, strict=True):
        assert values.shape == (len(row),)
        expected = np.array([_one_by_one(model, prompt, option) for option in row])
        shared = _one_by_one(model, prompt, encode("GUESS:"))  # every choice starts with it: read as prompt
        assert np.allclose(values, expected - shared, atol=1e-4)


def test_choices_with_nothing_in_common_are_scored_whole(tokenizer):
    model = _llama(tokenizer)

    def encode(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompt, options = encode("CLUE: sky"), [encode("sun moon"), encode("apple")]
    (values,) = choice_log_likelihoods(model, [prompt], [options], tokenizer.pad_token_id)
    assert np.allclose(values, [_one_by_one(model, prompt, o) for o in options], atol=1e-4)


def test_empty_choices_are_refused(tokenizer):
    with pytest.raises(ValueError, match="non-empty"):
        choice_log_likelihoods(_llama(tokenizer), [[1, 2]], [[]], 0)
