"""One forward pass over tokenized rows: per-row completion loss and mean-pooled final hidden state.

Used wherever a stage needs a row's loss (eval loss, loss-ranked baselines, attribution
diagnostics) or a representation embedding (the embedding-kNN baseline). Rows come from the one
tokenization function (`input_ids`, `labels` with -100 on the prompt), batched by length.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from playpen_attribution.core.batch_sizing import length_batches, pad_batch
from playpen_attribution.core.tokenization import IGNORE_INDEX


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
    for idx in tqdm(length_batches([len(ids) for ids in ids_list], batch_size), desc=desc, unit="batch"):
        batch = pad_batch([ids_list[i] for i in idx], pad_token_id, labels=[labels_list[i] for i in idx])
        ids, labels, mask = batch.input_ids, batch.labels, batch.attention_mask
        with torch.no_grad():
            out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), output_hidden_states=embeddings)
        logits = out.logits[:, :-1].float()
        target = labels[:, 1:].to(dev)
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
        ).view(target.shape)
        counted = (target != IGNORE_INDEX).sum(dim=1)
        per_row = (nll.sum(dim=1) / counted.clamp(min=1)).cpu().numpy()
        per_row[counted.cpu().numpy() == 0] = np.nan
        losses[idx] = per_row
        if embeddings:
            hidden = out.hidden_states[-1].float()
            m = mask.to(dev).unsqueeze(-1).float()
            vec = ((hidden * m).sum(dim=1) / m.sum(dim=1)).cpu().numpy()
            if pooled is None:
                pooled = np.zeros((len(ids_list), vec.shape[1]), dtype=np.float32)
            pooled[idx] = vec
    return losses, pooled
