"""Batch sizes from the hardware, pure helpers: out-of-memory is faked above a threshold (no GPU here).
How the stages use them is in tests/integration/test_stage_batch_choices.py."""

from __future__ import annotations

import pytest
import torch

from playpen_attribution.core.batch_sizing import (
    NoBatchFits,
    bergson_token_batch,
    check_token_batch,
    divisors,
    largest_fitting,
    length_batches,
    pad_batch,
    power_of_two_divisors,
    split_batch,
)
from playpen_attribution.errors import UserError


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
    from playpen_attribution.core import batch_sizing

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


def test_the_one_token_batch_check_names_the_limit_that_is_broken():
    check_token_batch(64, 64, 64, "m")  # a row as long as the context, a batch as long as the context: fine
    check_token_batch(2048, None, 900, "hub/model")  # a hub model's context is Bergson's to check
    with pytest.raises(UserError, match="70 tokens.*max_position_embeddings=64.*tokenize.max_length"):
        check_token_batch(128, 64, 70, "m")
    with pytest.raises(UserError, match="token_batch_size=128 exceeds.*max_position_embeddings=64.*token_batch_size=64"):
        check_token_batch(128, 64, 30, "m")
    with pytest.raises(UserError, match="40 tokens, more than attribute.token_batch_size=32"):
        check_token_batch(32, 64, 40, "m")


def test_pad_batch_pads_right_or_left_and_cuts_to_a_width():
    right = pad_batch([[5, 6, 7], [8]], pad_id=0, labels=[[-100, 6, 7], [8]])
    assert right.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert right.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert right.labels.tolist() == [[-100, 6, 7], [8, -100, -100]]
    left = pad_batch([[5, 6, 7], [8]], pad_id=0, left=True)
    assert left.input_ids.tolist() == [[5, 6, 7], [0, 0, 8]] and left.labels is None
    assert left.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    cut = pad_batch([[5, 6, 7], [8]], pad_id=0, labels=[[1, 2, 3], [4]], width=2)
    assert cut.input_ids.tolist() == [[5, 6], [8, 0]] and cut.labels.tolist() == [[1, 2], [4, -100]]
