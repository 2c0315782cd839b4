import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from playpen_attribution.core.row_forward import row_losses_and_embeddings
from playpen_attribution.core.tokenization import TokenizeConfig, tokenize_rows


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    return LlamaForCausalLM(cfg)


def test_batched_losses_equal_one_row_at_a_time(model, tokenizer):
    rows = [{"example_id": str(i), "prompt": p, "completion": c} for i, (p, c) in enumerate([
        ("CLUE: fruit red", "GUESS: apple"), ("CLUE: pet bark loyal puppy", "GUESS: dog"), ("CLUE: sky", "GUESS: sun")])]
    ds = tokenize_rows(tokenizer, rows, TokenizeConfig(max_length=64))
    losses, emb = row_losses_and_embeddings(model, ds, tokenizer.pad_token_id, batch_size=3, embeddings=True)
    for i, (ids, labels) in enumerate(zip(ds["input_ids"], ds["labels"], strict=True)):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]), output_hidden_states=True)
        assert losses[i] == pytest.approx(out.loss.item(), rel=1e-4)
        assert np.allclose(emb[i], out.hidden_states[-1][0].mean(0).numpy(), atol=1e-5)


def test_row_without_completion_tokens_is_nan(model, tokenizer):
    from datasets import Dataset

    ds = Dataset.from_dict({"input_ids": [[2, 5, 6]], "labels": [[-100, -100, -100]]})
    losses, emb = row_losses_and_embeddings(model, ds, tokenizer.pad_token_id)
    assert np.isnan(losses[0]) and emb is None


def test_the_head_is_projected_in_chunks_and_soft_capping_is_kept(tokenizer, monkeypatch):
    """Chunked projection of the completion positions gives the model's own loss, soft-capped logits included."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from playpen_attribution.core import row_forward

    torch.manual_seed(1)
    gemma = Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=64, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"], final_logit_softcapping=3.0)).eval()
    rows = [{"example_id": str(i), "prompt": p, "completion": c} for i, (p, c) in enumerate([
        ("CLUE: fruit red sweet tree", "GUESS: apple"), ("CLUE: sky", "GUESS: sun moon star")])]
    ds = tokenize_rows(tokenizer, rows, TokenizeConfig(max_length=64))
    monkeypatch.setattr(row_forward, "LOGIT_BUDGET", 3 * len(tokenizer))  # three positions per chunk
    losses, _ = row_losses_and_embeddings(gemma, ds, tokenizer.pad_token_id, batch_size=2)
    for i, (ids, labels) in enumerate(zip(ds["input_ids"], ds["labels"], strict=True)):
        with torch.no_grad():
            assert losses[i] == pytest.approx(gemma(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item(),
                                              rel=1e-5)
