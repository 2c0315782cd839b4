"""Batch sizes from the hardware: the pure helpers, and how train, attribute and SAE use them on CPU.

No GPU here: out-of-memory is faked above a threshold, free GPU memory is monkeypatched, and every
GPU-only path is checked to be skipped on CPU (so CPU results stay exactly as before).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import small_demo_dict, small_training_setup
from playpen_attribution.batch_sizing import (
    NoBatchFits, bergson_token_batch, divisors, largest_fitting, length_batches, power_of_two_divisors, split_batch,
)
from playpen_attribution.config import DemoSource, parse_config
from playpen_attribution.demo.task import corpus_text, generate_demo
from playpen_attribution.errors import UserError
from playpen_attribution.stages import attribute, train
from playpen_attribution.tiny_model import build_tiny_model


def fake_try(threshold: int, error=torch.cuda.OutOfMemoryError, calls: list | None = None):
    """A try function that runs out of memory above `threshold` rows."""

    def try_batch(n: int) -> None:
        if calls is not None:
            calls.append(n)
        if n > threshold:
            raise error("CUDA out of memory. Tried to allocate 2.00 GiB")

    return try_batch


# --- largest_fitting -------------------------------------------------------------------------------


def test_largest_fitting_tries_largest_first_and_stops_at_the_first_fit():
    calls = []
    assert largest_fitting(fake_try(5, calls=calls), [1, 2, 4, 8, 16]) == 4
    assert calls == [16, 8, 4]


def test_largest_fitting_takes_the_largest_when_everything_fits():
    calls = []
    assert largest_fitting(fake_try(100, calls=calls), [4, 1, 2]) == 4
    assert calls == [4]


def test_runtime_error_saying_out_of_memory_counts_as_oom():
    assert largest_fitting(fake_try(2, error=RuntimeError), [1, 2, 4]) == 2


def test_other_errors_propagate():
    def broken(n):
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError, match="shape mismatch"):
        largest_fitting(broken, [1, 2])
    with pytest.raises(RuntimeError, match="device-side assert"):
        largest_fitting(lambda n: (_ for _ in ()).throw(RuntimeError("device-side assert")), [1, 2])


def test_nothing_fits_is_a_clear_error():
    with pytest.raises(NoBatchFits, match=r"no batch size fits in memory \(tried 4, 2\)") as info:
        largest_fitting(fake_try(1), [2, 4])
    assert isinstance(info.value, UserError)


def test_no_candidates_is_rejected():
    with pytest.raises(ValueError, match="candidates"):
        largest_fitting(fake_try(1), [])


def test_memory_is_freed_between_tries(monkeypatch):
    from playpen_attribution import batch_sizing

    freed = []
    monkeypatch.setattr(batch_sizing, "free_memory", lambda: freed.append(1))
    largest_fitting(fake_try(2), [8, 4, 2, 1])
    assert len(freed) == 3  # after 8 and 4 failed, and after 2 fitted


# --- split_batch and divisors ----------------------------------------------------------------------


def test_divisors():
    assert divisors(12) == [1, 2, 3, 4, 6, 12]
    assert power_of_two_divisors(24) == [1, 2, 4, 8]
    assert power_of_two_divisors(7) == [1]
    with pytest.raises(ValueError):
        divisors(0)


@pytest.mark.parametrize("rows, per_device, expected", [(16, 4, (4, 4)), (16, 16, (16, 1)), (16, 1, (1, 16)),
                                                        (24, 8, (8, 3)), (12, 3, (3, 4))])
def test_split_batch_keeps_rows_per_step(rows, per_device, expected):
    assert split_batch(rows, per_device) == expected
    assert expected[0] * expected[1] == rows


def test_split_batch_needs_a_divisor():
    with pytest.raises(ValueError, match="does not divide"):
        split_batch(16, 3)
    with pytest.raises(ValueError):
        split_batch(16, 0)


# --- bergson_token_batch ---------------------------------------------------------------------------

GEMMA_1B = {"vocab_size": 262144, "hidden_size": 1152, "num_layers": 26, "max_position_embeddings": 32768}


def test_token_batch_follows_the_estimate_rounded_to_a_power_of_two():
    per_token = 3 * 262144 * 4 + 26 * 1152 * 40
    free = 80 * 2**30
    tokens = bergson_token_batch(free, **GEMMA_1B, longest_row=1024)
    assert tokens == 1 << (int(free / 2 / per_token).bit_length() - 1) == 8192
    assert bergson_token_batch(free // 2, **GEMMA_1B, longest_row=1024) == 4096


def test_token_batch_is_clamped_to_the_context_and_the_longest_row():
    assert bergson_token_batch(10**15, **GEMMA_1B, longest_row=10) == 32768  # at most the context
    assert bergson_token_batch(10**6, **GEMMA_1B, longest_row=700) == 700  # at least the longest row
    small = GEMMA_1B | {"max_position_embeddings": 512}
    assert bergson_token_batch(10**6, **small, longest_row=600) == 600  # the row wins; Bergson then rejects it


# --- length_batches --------------------------------------------------------------------------------


def test_length_batches_without_a_token_budget_are_the_old_chunks():
    lengths = [5, 3, 9, 3, 7, 1, 8]
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    assert length_batches(lengths, 3) == [order[0:3], order[3:6], order[6:]]
    assert length_batches(lengths, 3, None, cap=4) == length_batches(lengths, 3)


def test_length_batches_fill_up_to_the_token_budget():
    lengths = [2, 2, 2, 2, 4, 4, 8, 20]
    batches = length_batches(lengths, max_rows=10, max_tokens=8)
    assert batches == [[0, 1, 2, 3], [4, 5], [6], [7]]  # 20 > 8 tokens: a row of its own
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 8
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))


def test_length_batches_respect_max_rows_and_the_cap():
    assert length_batches([1] * 5, max_rows=2, max_tokens=100) == [[0, 1], [2, 3], [4]]
    # widths capped at 4: the long rows pack as 4-token rows (order still by full length)
    assert length_batches([3, 50, 40], max_rows=8, max_tokens=8, cap=4) == [[0, 2], [1]]
    assert length_batches([], 4, 16) == []


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
    return str(build_tiny_model(corpus_text(rows), cfg, tmp_path_factory.mktemp("tm") / "model"))


def _attr_cfg(token_batch_size="auto", max_pos=64):
    d = small_demo_dict()
    d["model"]["tiny"]["max_position_embeddings"] = max_pos
    d["attribute"] = {"projection_dim": 8, "token_batch_size": token_batch_size}
    return parse_config(d)


def _rows(*lengths):
    return [{"input_ids": [[1] * n for n in lengths]}]


def test_explicit_token_batch_is_kept(tiny_model_dir):
    cfg = _attr_cfg(32)
    assert attribute.settings_for(cfg).token_batch_size == 32
    assert attribute.settings_for(cfg, tiny_model_dir, _rows(60)).token_batch_size == 32  # as today: Bergson checks


def test_auto_token_batch_on_cpu(tiny_model_dir):
    cfg = _attr_cfg()
    settings = attribute.settings_for(cfg, tiny_model_dir, _rows(10, 40))
    assert (settings.token_batch_size, settings.precision) == (64, "fp32")  # min(max_pos 64, 2048), fp32 on CPU
    assert attribute.settings_for(cfg).token_batch_size == 64  # tiny without a model path: its context
    assert attribute.settings_for(parse_config({})).token_batch_size == 256  # the old default, on the default model


def test_auto_token_batch_is_at_least_the_longest_row_and_at_most_the_context(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(attribute, "CPU_TOKEN_BATCH", 16)
    assert attribute.token_batch_size(_attr_cfg(), tiny_model_dir, _rows(5, 40)) == 40
    with pytest.raises(UserError, match="70 tokens.*max_position_embeddings=64"):
        attribute.token_batch_size(_attr_cfg(), tiny_model_dir, _rows(70))


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


def test_auto_passes_the_config_check_and_an_explicit_int_is_still_checked():
    assert _attr_cfg("auto", max_pos=32).attribute.token_batch_size == "auto"
    with pytest.raises(UserError, match="token_batch_size"):
        _attr_cfg(128, max_pos=64)


# --- SAE: batch_tokens -----------------------------------------------------------------------------


def test_sae_batch_tokens_give_the_same_features(tiny_model_dir):
    from playpen_attribution.modeling import load_model, load_tokenizer
    from playpen_attribution.sae_config import SaeConfig
    from playpen_attribution.sae_features import extract_features, load_sae
    from playpen_attribution.tokenization import tokenize_rows

    rows = generate_demo(DemoSource(n_train=40, n_query=10, n_eval=10), seed=1).splits["train_base"][:20]
    tokenizer = load_tokenizer(tiny_model_dir)
    dataset = tokenize_rows(tokenizer, rows, "raw", 64)
    model = load_model(tiny_model_dir, dtype="float32")
    sae = load_sae(SaeConfig(layer=0, d_sae=16), model.config.hidden_size)
    plain = extract_features(model, sae, 0, dataset, "all", 64, 8, tokenizer.pad_token_id)
    packed = extract_features(model, sae, 0, dataset, "all", 64, 8, tokenizer.pad_token_id, batch_tokens=100)
    assert packed.example_ids == plain.example_ids
    for name in ("stats", "feature_mean", "feature_presence", "residual_mean"):
        np.testing.assert_allclose(getattr(packed, name), getattr(plain, name), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(packed.pooled_tokens, plain.pooled_tokens)
    assert SaeConfig(layer=0).batch_tokens is None
