"""The probe study's inputs: each row's raw residual at the `sae.probe_layers` blocks, pooled three ways.

The sae stage hooks these blocks in its one forward pass (beside the SAE layers) and keeps, per block, the
residual at the row's last pooled token (`last_token`), its mean over the pooled tokens (`mean`, the
pooled positions of `sae.pool`) and the residual at the row's first response token (`first_response_token`:
the first position whose label is set, i.e. the first completion token, whatever `sae.pool` says). A row
without such a position keeps zeros. They are written to `sae/probe_residuals.npz` as arrays
`layer_<L>_<pooling>` (rows x d_model) in the row order of `sae/index.json`; the predict stage fits the
study on them (`sae.probe_study`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from playpen_attribution.errors import UserError
from playpen_attribution.run.artifacts import PROBE_RESIDUALS
from playpen_attribution.sae.probe_study import POOLINGS


def array_name(layer: int, pooling: str) -> str:
    return f"layer_{layer}_{pooling}"


def _at(resid, positions):
    """resid (B, T, D) at one position per row (-1 = none: zeros)."""
    import torch

    picked = resid[torch.arange(resid.shape[0], device=resid.device), positions.clamp(min=0)]
    return picked * (positions >= 0).unsqueeze(1).to(resid.dtype)


def pooled_residuals(resid, pool_mask, response_mask) -> dict:
    """pooling -> (B, D) of one block's residual `resid` (B, T, D); `pool_mask` and `response_mask` (B, T) bool."""
    import torch

    positions = torch.arange(pool_mask.shape[1], device=pool_mask.device)
    last = torch.where(pool_mask, positions, -1).amax(1)
    first = torch.where(response_mask, positions, pool_mask.shape[1]).amin(1)
    first = torch.where(first < pool_mask.shape[1], first, -1)
    m = pool_mask.to(resid.dtype).unsqueeze(-1)
    mean = (resid * m).sum(1) / m.sum(1).clamp(min=1)
    return {"last_token": _at(resid, last), "mean": mean, "first_response_token": _at(resid, first)}


def write_probe_residuals(folder: Path, arrays: dict[str, np.ndarray], example_ids: list[str]) -> None:
    """`probe_residuals.npz` beside the features (the same row order; the ids are stored too, to check)."""
    np.savez_compressed(Path(folder) / PROBE_RESIDUALS, example_ids=np.asarray(example_ids),
                        **arrays)  # type: ignore[arg-type]  # numpy's stub reads **arrays as its allow_pickle flag


def load_probe_residuals(folder: Path, layers: list[int], example_ids: list[str]) -> dict[tuple[int, str], np.ndarray]:
    """(layer, pooling) -> rows x d_model, checked against the features' row order."""
    path = Path(folder) / PROBE_RESIDUALS
    if not path.is_file():
        raise UserError(f"{folder}: the sae index lists probe_layers {layers} but there is no {PROBE_RESIDUALS}; "
                        "rerun `sae` with --overwrite")
    with np.load(path) as npz:
        if npz["example_ids"].tolist() != list(example_ids):
            raise UserError(f"{path}: its rows are not the features' rows (index.json); rerun `sae` with --overwrite")
        return {(layer, pooling): npz[array_name(layer, pooling)] for layer in layers for pooling in POOLINGS}
