"""Bergson's per-row loss with the vocabulary projected only where a label is read.

Bergson 2.5 takes each row's gradient from `model(x).logits[:, :-1]`: the output head at every
position, although its cross-entropy reads only the positions with a label (the completion tokens;
-100 elsewhere). On Gemma-3's 262k-token vocabulary that head is most of the work: a Taboo row of
~150 tokens has ~6 labelled ones, and on Gemma-3-270M the head costs 0.34 GFLOP per position forward
(as much again backward) against ~0.4 per token for the rest of a LoRA step. `labelled_positions_only()` swaps Bergson's loss
factory (`collector.fwd_bwd_factory`, used by Build and Score) for one that passes the model a boolean `logits_to_keep` mask (transformers' own
option: the model slices its final hidden states to the True positions before its head, soft-capping
included, and returns `[positions, vocab]` logits), so the head runs at the labelled positions only.
The loss is Bergson's: the same cross-entropy (label smoothing, `sum` or `mean` reduction), the same
backward and return value; scores equal Bergson's own (tested). Its other losses (`kl`, `log_odds`,
rows with an `advantage`) fall through to Bergson's code. Bergson's Hessian fits go through another
factory (`fwd_bwd_hessian_factory`: the query autocorrelation Hessian, the mixed Hessian, K-FAC/EK-FAC,
TRAK's Gram), which is not swapped: they still run the head at every position.

Bergson's worker processes (`nproc_per_node` > 1) are spawned fresh and would import Bergson's
factories again, so its spawned entry point (`distributed.dist_worker`) is swapped too, for one that
installs the same factory in the child before running the worker. If Bergson renames either,
nothing is swapped and a warning says so: scores stay right, only slower.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from playpen_attribution.log import logger

IGNORE = -100


@contextmanager
def _frozen(weight) -> Iterator[None]:
    flag = weight.requires_grad
    weight.requires_grad_(False)
    try:
        yield
    finally:
        weight.requires_grad_(flag)


def labelled_logits(model, x, y):
    """(logits `[n, vocab]` at the positions whose next token has a label, their targets `[n]`, mask `[B, T-1]`).

    Bergson makes the input embedding's weight require grad so that the backward pass reaches every layer's
    hooks; with tied embeddings that is the output head's weight too, whose `[vocab, width]` gradients (two
    dense 671 MB copies on Gemma-3-270M) nothing reads. Here the embedded input itself requires grad
    instead, with the weight frozen for the pass: the backward reaches the same hooks with the same gradients.
    """
    import torch

    mask = y[:, 1:] != IGNORE
    keep = torch.zeros_like(x, dtype=torch.bool)
    keep[:, :-1] = mask  # position t predicts token t + 1
    embedding = model.get_input_embeddings()
    with _frozen(embedding.weight):
        embedded = embedding(x).detach().requires_grad_(True)
        logits = model(inputs_embeds=embedded, logits_to_keep=keep).logits
    if logits.ndim != 2 or logits.shape[0] != int(mask.sum()):
        raise RuntimeError(f"{type(model).__name__} ignored a boolean logits_to_keep (logits {tuple(logits.shape)}); "
                           "it needs transformers >= 5.24")
    return logits, y[:, 1:][mask], mask


def _per_row(values, mask):
    """Per-token values at the mask's True positions, summed per row (a differentiable zero for a row without any)."""
    return values.new_zeros(mask.shape).masked_scatter(mask, values).sum(1)


def fwd_bwd_factory(cfg) -> Callable:
    """Bergson's `fwd_bwd_factory(cfg)` with the head applied at the labelled positions only (`ce` loss)."""
    import torch.nn.functional as F

    bergsons = _ORIGINAL["fwd_bwd_factory"](cfg)
    if cfg.loss_fn != "ce":
        return bergsons

    def fwd_bwd(model, x, y, batch: dict):
        if "advantage" in batch:
            return bergsons(model, x, y, batch)
        logits, target, mask = labelled_logits(model, x, y)
        nll = F.cross_entropy(logits, target, reduction="none", label_smoothing=cfg.label_smoothing)
        denoms = mask.sum(dim=1, dtype=model.dtype) if cfg.loss_reduction == "mean" else 1.0
        losses = _per_row(nll, mask) / denoms
        losses.sum().backward()
        model.zero_grad()
        return losses

    return fwd_bwd


def dist_worker(*args):
    """Bergson's spawned-worker entry (`bergson.distributed.dist_worker`), run with the factory above
    installed in the child process (a spawned child imports Bergson afresh)."""
    from bergson.distributed import dist_worker as bergsons

    if bergsons is dist_worker:
        raise RuntimeError("bergson_loss.dist_worker runs in Bergson's spawned children only")
    with labelled_positions_only():
        return bergsons(*args)


_SWAPS = (
    ("bergson.collector.collector", "fwd_bwd_factory", fwd_bwd_factory),
    ("bergson.distributed", "dist_worker", dist_worker),
)
_ORIGINAL: dict[str, Callable] = {}
"""Bergson's own functions while swapped (the fallbacks for other losses)."""


@contextmanager
def labelled_positions_only() -> Iterator[None]:
    """While inside, Bergson's commands run in this process (and the workers it spawns) apply the output
    head only at labelled positions."""
    modules = [(importlib.import_module(module), name, ours) for module, name, ours in _SWAPS]
    missing = [f"{m.__name__}.{name}" for m, name, _ in modules if not callable(getattr(m, name, None))]
    if missing or _ORIGINAL:  # Bergson changed, or already swapped (nested): leave it as it is
        if missing:
            logger.warning("Bergson has no %s: its loss applies the output head at every position (slower, same "
                           "scores)", ", ".join(missing))
        yield
        return
    for module, name, ours in modules:
        _ORIGINAL[name] = getattr(module, name)
        setattr(module, name, ours)
    try:
        yield
    finally:
        for module, name, _ in modules:
            setattr(module, name, _ORIGINAL.pop(name))
