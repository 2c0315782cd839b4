"""Batch sizes chosen by the stages: train's auto_batch, attribute's token_batch_size auto, the SAE
pass's batch_tokens (tiny models built in code, GPU paths simulated with monkeypatch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import small_demo_dict, small_training_setup

from playpen_attribution.config import parse_config
from playpen_attribution.core.batch_sizing import bergson_token_batch
from playpen_attribution.core.tiny_model import build_tiny_model
from playpen_attribution.stages import attribute, train
from playpen_attribution.taboo.demo import DemoSource, corpus_text, generate_demo

# --- train: auto_batch -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_train(tmp_path_factory):
    cfg, rows, model_dir = small_training_setup(tmp_path_factory)
    accumulating = cfg.train.model_copy(update={"batch_size": 1, "grad_accum": 8})
    return cfg, rows, model_dir, accumulating


def test_auto_batch_is_skipped_on_cpu(tiny_train, tmp_path, monkeypatch):
    cfg, rows, model_dir, accumulating = tiny_train
    assert cfg.train.auto_batch and not train.auto_batch_applies(accumulating)

    def never(*args):
        raise AssertionError("probed on CPU")

    monkeypatch.setattr(train, "probe_batch", never)
    trainer = train.build_trainer(rows, model_dir, accumulating, cfg, tmp_path)
    assert (trainer.args.per_device_train_batch_size, trainer.args.gradient_accumulation_steps) == (1, 8)


def test_auto_batch_applies_only_with_accumulation_on_a_gpu(monkeypatch):
    monkeypatch.setattr(train, "device", lambda: "cuda")
    base = parse_config({}).train
    assert train.auto_batch_applies(base)
    assert not train.auto_batch_applies(base.model_copy(update={"grad_accum": 1}))
    assert not train.auto_batch_applies(base.model_copy(update={"auto_batch": False}))


def test_batch_candidates():
    base = parse_config({}).train  # batch_size 1 x grad_accum 16
    assert train.batch_candidates(base, 1000) == [2, 4, 8, 16, 1]
    assert train.batch_candidates(base, 5) == [2, 4, 1]  # no batch larger than the rows
    odd = base.model_copy(update={"batch_size": 3, "grad_accum": 8})  # 24 rows per step
    assert train.batch_candidates(odd, 1000) == [4, 8, 3]


def _oom_above(threshold: int, seen: list):
    real = train.probe_batch

    def probe(trainer, rows):
        seen.append(len(rows))
        if len(rows) > threshold:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        real(trainer, rows)  # a real forward + backward on CPU

    return probe


def test_fit_batch_picks_the_largest_batch_that_fits_and_keeps_rows_per_step(tiny_train, tmp_path, monkeypatch):
    cfg, rows, model_dir, accumulating = tiny_train
    seen = []
    monkeypatch.setattr(train, "probe_batch", _oom_above(4, seen))
    trainer = train.build_trainer(rows, model_dir, accumulating, cfg, tmp_path)
    fitted = train.fit_batch(trainer, accumulating)
    assert (fitted.batch_size, fitted.grad_accum) == (4, 2) and seen == [8, 4]
    assert all(p.grad is None for p in trainer.model.parameters())  # the probe leaves no gradients


def test_fit_batch_probes_the_longest_rows(tiny_train, tmp_path, monkeypatch):
    cfg, rows, model_dir, accumulating = tiny_train
    trainer = train.build_trainer(rows, model_dir, accumulating, cfg, tmp_path)
    probed = []
    monkeypatch.setattr(train, "probe_batch", lambda t, r: probed.append([len(x["input_ids"]) for x in r]))
    train.fit_batch(trainer, accumulating)
    longest = sorted((len(x) for x in trainer.train_dataset["input_ids"]), reverse=True)
    assert probed == [longest[:8]]


def test_probe_runs_forward_and_backward_and_leaves_no_gradients(tiny_train, tmp_path):
    cfg, rows, model_dir, accumulating = tiny_train
    trainer = train.build_trainer(rows, model_dir, accumulating, cfg, tmp_path)
    backward = []
    head = trainer.model.get_base_model().lm_head
    handle = head.register_full_backward_hook(lambda *a: backward.append(1))
    try:
        train.probe_batch(trainer, [trainer.train_dataset[i] for i in range(2)])
    finally:
        handle.remove()
    assert backward == [1]
    assert all(p.grad is None for p in trainer.model.parameters())


def test_build_trainer_on_a_gpu_uses_the_fitted_batch(tiny_train, tmp_path, monkeypatch):
    cfg, rows, model_dir, accumulating = tiny_train
    monkeypatch.setattr(train, "auto_batch_applies", lambda t: True)  # as on a GPU; the trainer stays on CPU
    monkeypatch.setattr(train, "probe_batch", _oom_above(2, []))
    trainer = train.build_trainer(rows, model_dir, accumulating, cfg, tmp_path)
    assert (trainer.args.per_device_train_batch_size, trainer.args.gradient_accumulation_steps) == (2, 4)


def test_train_rows_reports_batch_runtime_and_throughput(tiny_train, tmp_path):
    cfg, rows, model_dir, _ = tiny_train
    short = cfg.train.model_copy(update={"epochs": 1, "batch_size": 4, "grad_accum": 2})
    result = train.train_rows(rows, model_dir, short, cfg, tmp_path)
    assert (result["batch_size"], result["grad_accum"]) == (4, 2)
    assert result["train_runtime_s"] > 0 and result["train_tokens_per_s"] > 0


# --- attribute: token_batch_size auto --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    rows = generate_demo(DemoSource(n_train=60, n_query=10, n_eval=10), seed=0).splits["train_base"]
    cfg = parse_config(small_demo_dict()).model.tiny  # max_position_embeddings 64
    model_dir = tmp_path_factory.mktemp("tm") / "model"
    build_tiny_model(corpus_text(rows), cfg, model_dir)
    return str(model_dir)


def _attr_cfg(token_batch_size="auto", max_pos=64):
    d = small_demo_dict()
    d["model"]["tiny"]["max_position_embeddings"] = max_pos
    d["attribute"] = {"projection_dim": 8, "token_batch_size": token_batch_size}
    return parse_config(d)


def _rows(*lengths):
    return [{"input_ids": [[1] * n for n in lengths]}]


def test_explicit_token_batch_is_kept(tiny_model_dir):
    cfg = _attr_cfg(32)
    assert attribute.scoring_for(cfg).token_batch_size == 32
    assert attribute.scoring_for(cfg, tiny_model_dir, _rows(60)).token_batch_size == 32  # as today: Bergson checks


def test_auto_token_batch_on_cpu(tiny_model_dir):
    cfg = _attr_cfg()
    settings = attribute.scoring_for(cfg, tiny_model_dir, _rows(10, 40))
    assert (settings.token_batch_size, settings.precision) == (64, "fp32")  # min(max_pos 64, 2048), fp32 on CPU
    assert attribute.scoring_for(cfg).token_batch_size == 64  # tiny without a model path: its context
    assert attribute.scoring_for(parse_config({})).token_batch_size == 256  # the old default, on the default model


def test_auto_token_batch_is_at_least_the_longest_row_and_at_most_the_context(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(attribute, "CPU_TOKEN_BATCH", 16)
    assert attribute.token_batch_size(_attr_cfg(), tiny_model_dir, _rows(5, 40)) == 40


def test_auto_token_batch_on_a_gpu_comes_from_free_memory(tiny_model_dir, monkeypatch):
    from transformers import AutoConfig

    monkeypatch.setattr(attribute, "device", lambda: "cuda")
    free = 10 * 2**20
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (free, 80 * 2**30))
    cfg = _attr_cfg(max_pos=4096)
    text = AutoConfig.from_pretrained(tiny_model_dir)
    expected = bergson_token_batch(free, text.vocab_size, text.hidden_size, text.num_hidden_layers,
                                   text.max_position_embeddings, 30)
    assert attribute.token_batch_size(cfg, tiny_model_dir, _rows(30)) == expected
    assert 30 <= expected <= text.max_position_embeddings and expected & (expected - 1) == 0


# --- SAE: batch_tokens -----------------------------------------------------------------------------


def test_sae_batch_tokens_give_the_same_features(tiny_model_dir):
    from playpen_attribution.core.modeling import load_model, load_tokenizer
    from playpen_attribution.core.tokenization import TokenizeConfig, tokenize_rows
    from playpen_attribution.sae.config import SaeConfig
    from playpen_attribution.sae.features import extract_features, load_sae

    rows = generate_demo(DemoSource(n_train=40, n_query=10, n_eval=10), seed=1).splits["train_base"][:20]
    tokenizer = load_tokenizer(tiny_model_dir)
    dataset = tokenize_rows(tokenizer, rows, TokenizeConfig(max_length=64))
    model = load_model(tiny_model_dir, dtype="float32")
    sae = load_sae(SaeConfig(layer=0, d_sae=16), model.config.hidden_size)
    plain = extract_features(model, sae, 0, dataset, "all", 64, 8, tokenizer.pad_token_id)
    packed = extract_features(model, sae, 0, dataset, "all", 64, 8, tokenizer.pad_token_id, batch_tokens=100)
    assert packed.example_ids == plain.example_ids
    for name in ("stats", "feature_mean", "feature_presence", "residual_mean", "residual_last", "topk_values"):
        np.testing.assert_allclose(getattr(packed, name), getattr(plain, name), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(packed.pooled_tokens, plain.pooled_tokens)
    assert SaeConfig(layer=0).batch_tokens is None
