"""Counting where a model projects onto its vocabulary, however the projection is computed: the output
head (`lm_head`, tied or not), TRL's chunked head (vocabulary slices of the head into a buffer), Bergson's
loss. Every matrix product whose right operand is (a slice of) the `[vocab, hidden]` head matrix and
contracts over the hidden width adds rows x columns / vocab: the positions projected onto the whole
vocabulary. Tests hold those counts against the positions whose loss is read."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
_RIGHT_OPERAND = {aten.mm.default: 1, aten.mm.out: 1, aten.addmm.default: 2, aten.addmm.out: 2, aten.addmm_.default: 2}


class VocabProjections(TorchDispatchMode):
    """`with VocabProjections(vocab, hidden) as seen:` ... `seen.positions`: positions projected onto the
    vocabulary in forward products (a recomputation, e.g. in a backward pass, counts again)."""

    def __init__(self, vocab_size: int, hidden_size: int):
        super().__init__()
        self.vocab_size, self.hidden_size, self.columns = vocab_size, hidden_size, 0

    @property
    def positions(self) -> float:
        return self.columns / self.vocab_size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        index = _RIGHT_OPERAND.get(func)
        if index is not None and len(args) > index:
            a, b = args[index - 1], args[index]
            head_bytes = self.vocab_size * self.hidden_size * b.element_size()
            if b.untyped_storage().nbytes() == head_bytes and b.shape[0] == self.hidden_size:
                self.columns += a.shape[0] * b.shape[1]
        return out


def read_positions(labels: list[list[int]]) -> int:
    """Positions whose next-token loss is read: one per label other than -100 after a row's first token."""
    return sum(sum(1 for t in row[1:] if t != -100) for row in labels)
