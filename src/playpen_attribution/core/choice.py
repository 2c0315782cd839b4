"""Scoring fixed continuations of a prompt: the summed log-likelihood of each choice, the multiple-choice
idea of lm-eval, computed with one forward pass over the prompt.

`choice_log_likelihoods(model, prompts, choices)` returns, per prompt, the summed log-probability of
each of its choices (token id lists) given the prompt and the tokens all its choices share (`GUESS:`
for Taboo: common to every choice, it does not change their order). The prompts of a batch run once with the KV
cache (left padded, positions from the attention mask, as generation runs them); the cache is then
repeated once per choice and only the choices' tokens run on it. The first choice token is read from
the prompt's last position; the others from the choice positions, with the vocabulary projected only
where a choice token is scored (`row_forward.completion_nll`), so a 262k-token head is never applied
to a prompt position. Batches are sized so that at most `CACHE_TOKEN_BUDGET` cached positions (prompt
tokens times choices) exist at once.

Equal to scoring every (prompt + choice) sequence on its own (tested against that, on a tiny Llama
and on a tiny Gemma-3 with sliding-window layers), only cheaper: the prompt's cost is paid once per
row, not once per choice.
"""

from __future__ import annotations

import numpy as np

from playpen_attribution.core.row_forward import completion_nll, no_logits
from playpen_attribution.core.tokenization import IGNORE_INDEX

CACHE_TOKEN_BUDGET = 1 << 15
"""Cached positions (prompt tokens x choices) held at once; each costs layers x 2 x kv width values."""


def _batches(prompts: list[list[int]], n_choices: list[int]) -> list[list[int]]:
    """Row indices in batches of similar prompt length whose cache, repeated per choice, fits the budget."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:  # sorted by length: the row added is the longest
        if current and len(prompts[i]) * (sum(n_choices[j] for j in current) + n_choices[i]) > CACHE_TOKEN_BUDGET:
            batches.append(current)
            current = []
        current.append(i)
    return batches + ([current] if current else [])


def _shared_prefix(choices: list[list[int]]) -> int:
    """How many leading tokens every choice shares (at most the shortest one's length - 1)."""
    shortest = min(len(c) for c in choices)
    n = 0
    while n < shortest - 1 and all(c[n] == choices[0][n] for c in choices):
        n += 1
    return n


def _padded(seqs: list[list[int]], pad_id: int, left: bool = False) -> tuple:
    """[len(seqs), longest] token ids and 0/1 mask (numpy), padded on the right or the left."""
    width = max(len(s) for s in seqs)
    ids, mask = np.full((len(seqs), width), pad_id, dtype=np.int64), np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        span = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, span], mask[i, span] = s, 1
    return ids, mask


def _score_batch(model, prompts: list[list[int]], choices: list[list[list[int]]], pad_id: int) -> list[np.ndarray]:
    import torch

    dev = next(model.parameters()).device
    ids, mask = (torch.from_numpy(a).to(dev) for a in _padded(prompts, pad_id, left=True))  # as generation pads
    out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=True,
                logits_to_keep=1)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    counts = [len(c) for c in choices]
    owner = torch.repeat_interleave(torch.arange(len(prompts), device=dev), torch.tensor(counts, device=dev))
    flat = [c for row in choices for c in row]
    total = first[owner, torch.tensor([c[0] for c in flat], device=dev)].double()
    if max(len(c) for c in flat) > 1:  # the later choice tokens run on copies of the prompt's cache
        cache = out.cache
        cache.batch_select_indices(owner)
        tokens, used = (torch.from_numpy(a).to(dev) for a in _padded([c[:-1] for c in flat], pad_id))
        target_np = np.full(tokens.shape, IGNORE_INDEX, dtype=np.int64)
        for i, c in enumerate(flat):
            target_np[i, : len(c) - 1] = c[1:]  # position j predicts choice token j + 1
        prompt_mask = mask[owner]
        later = model(input_ids=tokens, attention_mask=torch.cat([prompt_mask, used], dim=1),
                      position_ids=prompt_mask.sum(-1, keepdim=True) + torch.arange(tokens.shape[1], device=dev),
                      cache=cache, use_cache=False, output_hidden_states=True, logits_to_keep=no_logits(tokens))
        nll, _ = completion_nll(model, later.hidden_states[-1], torch.from_numpy(target_np).to(dev))
        total = total - nll
    return list(np.split(total.cpu().numpy(), np.cumsum(counts)[:-1]))


def choice_log_likelihoods(model, prompts: list[list[int]], choices: list[list[list[int]]], pad_id: int) -> list[np.ndarray]:
    """Per prompt, the summed log-likelihood of each of its choices (each a non-empty token id list) given it; the
    tokens every choice of a prompt begins with are read as part of the prompt (they add the same amount to every
    choice, so the choices' order is that of their whole log-likelihoods)."""
    import torch

    if len(prompts) != len(choices):
        raise ValueError("choice_log_likelihoods needs one list of choices per prompt")
    if any(not p for p in prompts) or any(not c for row in choices for c in row) or any(not row for row in choices):
        raise ValueError("choice_log_likelihoods needs non-empty prompts, choice lists and choices")
    shared = [_shared_prefix(row) for row in choices]  # common to every choice: part of the prompt, not scored
    prompts = [p + row[0][:n] for p, row, n in zip(prompts, choices, shared, strict=True)]
    choices = [[c[n:] for c in row] for row, n in zip(choices, shared, strict=True)]
    out: list[np.ndarray | None] = [None] * len(prompts)
    model.eval()
    with torch.no_grad():
        for batch in _batches(prompts, [len(c) for c in choices]):
            scored = _score_batch(model, [prompts[i] for i in batch], [choices[i] for i in batch], pad_id)
            for i, values in zip(batch, scored, strict=True):
                out[i] = values
    return out  # type: ignore[return-value]
