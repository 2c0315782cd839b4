"""No stage projects the 262k-token vocabulary at a position whose loss it does not read: training (TRL's
head), Bergson's scoring loss, the eval loss and the choice scorer, counted by `VocabProjections` on a tiny
Gemma-3 with the real tokenizer. Rows are Taboo-shaped (a long prompt, a short `GUESS:` completion), so a
head applied at every position would project about ten times the positions read."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from helpers import build_tiny_gemma
from vocab_projections import VocabProjections, read_positions

from playpen_attribution.attribution import bergson_loss
from playpen_attribution.attribution import bergson_runs as runs
from playpen_attribution.attribution import scoring as bs
from playpen_attribution.attribution.config import AttributeConfig
from playpen_attribution.config import parse_config
from playpen_attribution.core.choice import choice_log_likelihoods
from playpen_attribution.core.modeling import load_model, load_tokenizer
from playpen_attribution.core.row_forward import row_losses_and_embeddings
from playpen_attribution.core.tokenization import TokenizeConfig, tokenize_rows
from playpen_attribution.stages import train

VOCAB, HIDDEN = 262144, 64
WORDS = ["apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach", "pear", "plum"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one intra-op thread (tests/conftest.py)


@pytest.fixture(scope="module")
def gemma(tmp_path_factory, gemma_270m_dir):
    root = tmp_path_factory.mktemp("vocab")
    model_dir = build_tiny_gemma(root / "model", gemma_270m_dir)
    rows = [{"example_id": f"r{i}", "prompt": "CLUE: " + " ".join(WORDS[(i + j) % 10] for j in range(30 + 4 * i)),
             "completion": f"GUESS: {WORDS[i % 10]}"} for i in range(8)]
    cfg = parse_config({
        "name": "vocab", "model": {"base": str(model_dir)}, "tokenize": {"format": "raw", "max_length": 128},
        "data": {"source": {"kind": "generic", "splits": {"train_base": "x", "attr_query": "y", "eval": "z"}}},
        "train": {"lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "epochs": 1, "batch_size": 4, "grad_accum": 1,
                  "auto_batch": False}})
    tokenizer = load_tokenizer(model_dir)
    dataset = tokenize_rows(tokenizer, rows, TokenizeConfig(max_length=128))
    assert sum(map(len, dataset["input_ids"])) > 10 * read_positions(dataset["labels"])  # Taboo-shaped rows
    return {"dir": model_dir, "root": root, "rows": rows, "cfg": cfg, "tokenizer": tokenizer, "dataset": dataset}


@pytest.mark.parametrize("batching", ["length_grouped", "padding_free", "padded"])
def test_training_projects_only_the_completion_positions(gemma, batching):
    cfg = gemma["cfg"]
    trainer = train.build_trainer(gemma["rows"], str(gemma["dir"]), cfg.train.model_copy(update={"batching": batching}),
                                  cfg, gemma["root"] / f"scratch_{batching}")
    read = read_positions(trainer.train_dataset["labels"])
    with VocabProjections(VOCAB, HIDDEN) as seen, train.completion_only_head():
        trainer.train()  # one epoch: every row once
    assert read <= seen.positions <= 2 * read  # forward, and TRL's chunked head recomputes them in the backward


def test_eval_loss_projects_only_the_completion_positions(gemma):
    model = load_model(gemma["dir"])
    with VocabProjections(VOCAB, HIDDEN) as seen:
        losses, _ = row_losses_and_embeddings(model, gemma["dataset"], gemma["tokenizer"].pad_token_id, batch_size=3)
    assert np.isfinite(losses).all() and seen.positions == read_positions(gemma["dataset"]["labels"])


def test_the_choice_scorer_projects_only_the_choice_positions(gemma):
    tok, model = gemma["tokenizer"], load_model(gemma["dir"])
    prompts = [tok(r["prompt"] + "\nGUESS:", add_special_tokens=False)["input_ids"] for r in gemma["rows"][:3]]
    options = [tok(f" {w} pie", add_special_tokens=False)["input_ids"] for w in WORDS[:4]]
    assert len({o[0] for o in options}) == len(options)  # nothing shared: every choice token is scored
    with VocabProjections(VOCAB, HIDDEN) as seen:
        choice_log_likelihoods(model, prompts, [options] * 3, tok.pad_token_id)
    # each prompt's last position (read for every choice's first token), then each choice's later tokens
    assert seen.positions == 3 + 3 * sum(len(o) - 1 for o in options)


@pytest.fixture(scope="module")
def scoring(gemma):
    import peft
    from transformers import AutoModelForCausalLM

    adapter = gemma["root"] / "adapter"
    lora = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    peft.get_peft_model(AutoModelForCausalLM.from_pretrained(gemma["dir"]), lora).save_pretrained(adapter)
    ds = gemma["dataset"]
    pool = datasets.Dataset.from_dict({k: ds[k] for k in ("example_id", "input_ids", "labels")})
    settings = runs.Scoring(AttributeConfig(projection_dim=4, token_batch_size=256), token_batch_size=256,
                            precision="fp32", tokenizer=str(gemma["dir"]))
    return {"adapter": adapter, "pool": pool, "query": pool.select(range(3)), "settings": settings}


def test_bergson_scoring_projects_only_the_labelled_positions_and_scores_as_bergsons_own_loss(gemma, scoring, monkeypatch):
    pool, query = scoring["pool"], scoring["query"]
    with VocabProjections(VOCAB, HIDDEN) as seen:
        ours = bs.score_pool(gemma["dir"], scoring["adapter"], pool, query, gemma["root"] / "ours", scoring["settings"])
    # the query Hessian and the query index read the query rows, the scores the pool rows
    assert seen.positions == 2 * read_positions(query["labels"]) + read_positions(pool["labels"])
    monkeypatch.setattr(bergson_loss, "_SWAPS", ())  # Bergson's own loss: the head at every position
    with VocabProjections(VOCAB, HIDDEN) as seen:
        theirs = bs.score_pool(gemma["dir"], scoring["adapter"], pool, query, gemma["root"] / "theirs",
                               scoring["settings"])
    assert seen.positions > 8 * read_positions(pool["labels"])
    assert np.allclose(ours.scores, theirs.scores, rtol=1e-5, atol=1e-6)
    assert np.allclose(ours.row_losses, theirs.row_losses, rtol=1e-5)


def test_bergson_with_label_smoothing_and_summed_loss_scores_as_its_own(gemma, scoring, monkeypatch):
    from dataclasses import replace

    attribute = scoring["settings"].attribute.model_copy(
        update={"label_smoothing": 0.1, "loss_reduction": "sum", "preconditioning": "none"})
    settings = replace(scoring["settings"], attribute=attribute)
    args = (gemma["dir"], scoring["adapter"], scoring["pool"], scoring["query"])
    ours = bs.score_pool(*args, gemma["root"] / "ours_smooth", settings)
    monkeypatch.setattr(bergson_loss, "_SWAPS", ())
    theirs = bs.score_pool(*args, gemma["root"] / "theirs_smooth", settings)
    assert np.allclose(ours.scores, theirs.scores, rtol=1e-5, atol=1e-6)


def test_bergsons_loss_reaches_every_layer_without_the_tied_embeddings_gradient(gemma):
    """Bergson makes the input embedding require grad; on Gemma-3 that is the tied head's `[vocab, width]` matrix
    too. Our loss feeds the embedded rows instead: the same gradients reach the layers, none the matrix."""
    ds = gemma["dataset"]
    x = torch.tensor([ds["input_ids"][0]])
    y = torch.tensor([ds["labels"][0]])

    def gradients(ours: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        model = load_model(gemma["dir"])
        model.requires_grad_(False)
        embedding = model.get_input_embeddings()
        embedding.requires_grad_(True)  # as Bergson's setup_model_and_peft
        seen = []
        model.model.layers[0].self_attn.q_proj.register_full_backward_hook(lambda m, gi, go: seen.append(go[0]))
        if ours:
            logits, target, _ = bergson_loss.labelled_logits(model, x, y)
        else:
            logits, target = model(x).logits[0, :-1], y[0, 1:]
        torch.nn.functional.cross_entropy(logits, target, ignore_index=-100).backward()
        assert embedding.weight.requires_grad  # Bergson's setting is left as it was
        return seen[0], embedding.weight.grad

    ours, ours_weight_grad = gradients(ours=True)
    theirs, theirs_weight_grad = gradients(ours=False)
    assert ours_weight_grad is None and theirs_weight_grad is not None
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-7) and ours.abs().sum() > 0
