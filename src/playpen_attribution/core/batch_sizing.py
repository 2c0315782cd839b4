"""Batch sizes chosen from the hardware, and length batches as padded tensors; unit-tested on CPU.

- `largest_fitting`: try batch sizes from the largest down until one does not run out of memory.
- `split_batch`: a per-device batch and gradient accumulation that keep rows per optimizer step.
- `bergson_token_batch`: Bergson's tokens per batch from free GPU memory (a heuristic estimate);
  `check_token_batch`: the one check of a token batch against the model's context and the rows.
- `length_batches`: rows sorted by length, packed into batches of at most so many padded tokens.
- `pad_batch`: one such batch of token-id lists as padded `input_ids`, `attention_mask` (and
  `labels`) tensors, right padded for forward passes or left padded for generation.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from playpen_attribution.core.tokenization import IGNORE_INDEX
from playpen_attribution.errors import UserError

if TYPE_CHECKING:
    import torch


class NoBatchFits(UserError, RuntimeError):
    """Every candidate batch size ran out of memory."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a CUDA out-of-memory error (torch's own class, or a RuntimeError saying so)."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory() -> None:
    """Drop what a failed try left behind (Python garbage, then torch's cached CUDA blocks)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def largest_fitting(try_batch: Callable[[int], None], candidates: Sequence[int]) -> int:
    """The largest candidate for which `try_batch(candidate)` does not run out of memory.

    Candidates are tried from the largest to the smallest; memory is freed after every try. Only
    out-of-memory errors (`torch.cuda.OutOfMemoryError`, or a RuntimeError whose message contains
    "out of memory") move on to the next candidate; any other exception propagates. Raises
    `NoBatchFits` when no candidate fits (or there are none).
    """
    sizes = sorted(set(candidates), reverse=True)
    if not sizes or sizes[-1] <= 0:
        raise ValueError(f"candidates must be positive batch sizes, got {list(candidates)}")
    for size in sizes:
        fits = True
        try:
            try_batch(size)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            fits = False
        free_memory()  # outside the except block: the traceback no longer holds the try's tensors
        if fits:
            return size
    raise NoBatchFits(
        f"no batch size fits in memory (tried {', '.join(map(str, sizes))}); "
        "use shorter rows (tokenize.max_length), a smaller model or a larger GPU"
    )


def divisors(n: int) -> list[int]:
    """Every positive divisor of n, ascending."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    return [d for d in range(1, n + 1) if n % d == 0]


def power_of_two_divisors(n: int) -> list[int]:
    """Divisors of n that are powers of two (1, 2, 4, ...), ascending."""
    return [d for d in divisors(n) if d & (d - 1) == 0]


def split_batch(rows_per_step: int, per_device: int) -> tuple[int, int]:
    """(per-device batch, gradient accumulation) with per_device * grad_accum == rows_per_step."""
    if rows_per_step <= 0 or per_device <= 0:
        raise ValueError(f"rows_per_step and per_device must be positive, got {rows_per_step}, {per_device}")
    if rows_per_step % per_device:
        raise ValueError(f"per-device batch {per_device} does not divide {rows_per_step} rows per optimizer step")
    return per_device, rows_per_step // per_device


def bergson_token_batch(
    free_bytes: int, vocab_size: int, hidden_size: int, num_layers: int, max_position_embeddings: int,
    longest_row: int,
) -> int:
    """Tokens per Bergson batch that should fit in `free_bytes` of GPU memory. A heuristic.

    Estimate of the memory one token of a batch costs in a forward + backward pass:
    the logits dominate for large vocabularies: about 3 fp32 copies of a vocab-wide row
    (logits, log-softmax, their gradient) = 3 * vocab_size * 4 bytes; the activations kept for the
    backward pass are about num_layers * hidden_size * 40 bytes (attention and MLP inputs and
    outputs, a few values per channel, bf16/fp32 mixed). Half of the free memory is budgeted (the
    rest is for the model weights, Bergson's projections and per-row gradients, allocator slack):

        tokens = free_bytes / 2 / (3 * vocab_size * 4 + num_layers * hidden_size * 40)

    rounded down to a power of two, then clamped to [longest_row, max_position_embeddings] (Bergson
    needs every row to fit in one batch and no batch longer than the model's context). When the
    longest row exceeds max_position_embeddings the lower bound wins (Bergson then rejects it with
    its own error). Not a guarantee: a model with unusual activations can still run out of memory;
    set `attribute.token_batch_size` explicitly then.
    """
    per_token = 3 * vocab_size * 4 + num_layers * hidden_size * 40
    tokens = max(1, int(free_bytes // 2 // per_token))
    tokens = 1 << (tokens.bit_length() - 1)  # round down to a power of two
    return max(longest_row, min(tokens, max_position_embeddings))


def check_token_batch(token_batch: int, max_positions: int | None, longest_row: int, model: str) -> None:
    """UserError unless every row fits the model's context and one token batch, and the batch fits the
    context (Bergson needs each row in one batch and no batch longer than max_position_embeddings)."""
    if max_positions is not None and longest_row > max_positions:
        raise UserError(f"a tokenized row has {longest_row} tokens, more than the model's max_position_embeddings="
                        f"{max_positions} ({model}); lower tokenize.max_length to at most {max_positions}")
    if max_positions is not None and token_batch > max_positions:
        raise UserError(f"attribute.token_batch_size={token_batch} exceeds the model's max_position_embeddings="
                        f"{max_positions} ({model}); set token_batch_size={max_positions} or smaller")
    if longest_row > token_batch:
        raise UserError(f"a tokenized row has {longest_row} tokens, more than attribute.token_batch_size="
                        f"{token_batch}; raise token_batch_size or lower tokenize.max_length")


def length_batches(
    lengths: Sequence[int], max_rows: int, max_tokens: int | None = None, cap: int | None = None,
) -> list[list[int]]:
    """Row indices sorted by length (stable, shortest first), cut into batches.

    A batch has at most `max_rows` rows and, when `max_tokens` is set, at most `max_tokens` padded
    tokens (rows x its longest row's width), unless a single row is wider than that (it then gets a
    batch of its own). A row's width is min(length, cap) when `cap` is set (the order still follows
    the full length). With `max_tokens=None` the batches are plain chunks of `max_rows` sorted rows.
    """
    if max_rows <= 0:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    if max_tokens is not None and max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if max_tokens is None:
        return [order[start : start + max_rows] for start in range(0, len(order), max_rows)]
    batches: list[list[int]] = []
    batch: list[int] = []
    width = 0
    for i in order:
        w = min(lengths[i], cap) if cap is not None else lengths[i]
        grown = max(width, w)
        if batch and (len(batch) >= max_rows or (len(batch) + 1) * grown > max_tokens):
            batches.append(batch)
            batch, grown = [], w
        batch.append(i)
        width = grown
    if batch:
        batches.append(batch)
    return batches


@dataclass
class PaddedBatch:
    """Padded tensors of one batch of rows (torch.long, [rows, width])."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    """1 on real tokens, 0 on padding."""
    labels: torch.Tensor | None
    """The rows' labels padded with -100 (None when no labels were given)."""


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, labels: Sequence[Sequence[int]] | None = None,
    width: int | None = None, left: bool = False,
) -> PaddedBatch:
    """Stack token-id lists into [rows, width] tensors (width: the longest row, or `width`, which cuts
    longer rows to their first `width` tokens). Right padding unless `left` (generation prompts)."""
    import torch

    width = width if width is not None else max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    lab = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long) if labels is not None else None
    for row, seq in enumerate(sequences):
        k = min(len(seq), width)
        span = slice(width - k, width) if left else slice(0, k)
        ids[row, span] = torch.tensor(list(seq[:k]), dtype=torch.long)
        mask[row, span] = 1
        if lab is not None and labels is not None:
            lab[row, span] = torch.tensor(list(labels[row][:k]), dtype=torch.long)
    return PaddedBatch(ids, mask, lab)
