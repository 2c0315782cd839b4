"""One forward pass over tokenized rows: per-row completion loss and mean-pooled final hidden state.

Used wherever a stage needs a row's loss (eval loss, loss-ranked baselines, attribution
diagnostics) or a representation embedding (the embedding-kNN baseline). Rows come from the one
tokenization function (`input_ids`, `labels` with -100 on the prompt), batched by length.

The vocabulary is only projected where a loss is needed: the model runs with `logits_to_keep=no_logits(ids)`
(an all-False position mask: its own head is applied nowhere) and `output_hidden_states`, and the output head (with
the model's final logit soft-capping, e.g. Gemma's, when it has one) is applied to the final hidden
states of the completion positions alone, `LOGIT_BUDGET` values at a time. So a 262k-token
vocabulary never becomes a float32 rows x length x vocab tensor (8 rows x 80 tokens would be 670 MB).
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from playpen_attribution.core.batch_sizing import length_batches, pad_batch
from playpen_attribution.core.tokenization import IGNORE_INDEX

LOGIT_BUDGET = 1 << 24
"""Float32 logits computed at once (64 MB): completion positions are projected in chunks of this size."""


def no_logits(ids):
    """A `logits_to_keep` for a forward pass whose logits are not read: a boolean mask with no position kept
    (transformers then applies the output head to none; `logits_to_keep=1` would still project the last)."""
    import torch

    return torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)


def completion_nll(model, hidden, target) -> tuple:
    """(summed NLL per row, completion tokens per row) from final hidden states [B, T, H] and the next-token
    targets [B, T] (-100 where no loss), projecting only the target positions, in chunks."""
    import torch

    rows, positions = (target != IGNORE_INDEX).nonzero(as_tuple=True)
    head = model.get_output_embeddings()
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    sums = torch.zeros(target.shape[0], dtype=torch.float64, device=target.device)
    chunk = max(1, LOGIT_BUDGET // head.weight.shape[0])
    for start in range(0, len(rows), chunk):
        r, t = rows[start : start + chunk], positions[start : start + chunk]
        logits = head(hidden[r, t]).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        nll = torch.nn.functional.cross_entropy(logits, target[r, t], reduction="none")
        sums.index_add_(0, r, nll.double())
    return sums, (target != IGNORE_INDEX).sum(dim=1)


def row_losses_and_embeddings(
    model, dataset, pad_token_id: int, batch_size: int = 16, embeddings: bool = False, desc: str = "forward"
) -> tuple[np.ndarray, np.ndarray | None]:
    """(mean completion-token NLL per row, mean-pooled last hidden state per row or None), in row order.

    A row whose labels are all -100 gets NaN loss (never a silent zero).
    """
    import torch

    ids_list, labels_list = dataset["input_ids"], dataset["labels"]
    losses = np.full(len(ids_list), np.nan)
    pooled: np.ndarray | None = None
    dev = next(model.parameters()).device
    model.eval()
    for idx in tqdm(length_batches([len(ids) for ids in ids_list], batch_size), desc=desc, unit="batch", leave=False):
        batch = pad_batch([ids_list[i] for i in idx], pad_token_id, labels=[labels_list[i] for i in idx])
        assert batch.labels is not None, "labels were given"
        ids, labels, mask = batch.input_ids.to(dev), batch.labels.to(dev), batch.attention_mask.to(dev)
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                        logits_to_keep=no_logits(ids))
            hidden = out.hidden_states[-1]  # after the final norm: what the output head reads
            target = torch.full_like(labels, IGNORE_INDEX)
            target[:, :-1] = labels[:, 1:]  # position i predicts token i + 1
            sums, counted = completion_nll(model, hidden, target)
        per_row = (sums / counted.clamp(min=1)).cpu().numpy()
        per_row[counted.cpu().numpy() == 0] = np.nan
        losses[idx] = per_row
        if embeddings:
            m = mask.unsqueeze(-1).float()
            vec = ((hidden.float() * m).sum(dim=1) / m.sum(dim=1)).cpu().numpy()
            if pooled is None:
                pooled = np.zeros((len(ids_list), vec.shape[1]), dtype=np.float32)
            pooled[idx] = vec
    return losses, pooled
