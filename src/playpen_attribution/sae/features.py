"""SAE fingerprints of rows: a forward pass up to block L, an SAE encoding, per-row statistics.

Where the residual stream is read. SAELens/TransformerLens name the output of decoder block L
`blocks.L.hook_resid_post` (GemmaScope's resid_post SAEs are trained there; their loader maps it to
the Hugging Face module `model.layers.L` output). We read exactly that tensor with a forward hook on
`model.layers[L]`. In Hugging Face terms it is `hidden_states[L + 1]` of `output_hidden_states=True`
(`hidden_states[0]` is the embedding output) for every L except the last block: transformers 5
(`utils/output_capturing.capture_outputs`, `tie_last_hidden_states=True`) replaces the last entry
with `last_hidden_state`, which Llama and Gemma 3 compute *after* the final norm (`self.norm`), so
`hidden_states[-1]` is not the last block's resid_post. The hook has no such exception.

Stopping early. The hook raises once it has the block's output, so the blocks after L, the final
norm and the LM head never run (a test hooks block L+1 and checks it never fires). With
`sae.extra_layers` every listed block is hooked in the same forward pass, which stops after the
deepest; each extra layer is encoded by the random SAE that `layer: L` alone would build (same seed
and width), so its features equal a single-layer run on that layer. `sae.extra_sae_ids` names the
extra SAEs of a SAELens release (more ids) or more SAELens folders; each one's block comes from its
hook, two SAEs on one block are refused, and each layer's index records its own release and id. The model runs in
`sae.dtype` (auto = bfloat16 on a CUDA GPU, float32 on CPU); the SAE and the statistics in float32.
Rows run sorted by length, `sae.batch_size` rows per batch, or with `sae.batch_tokens` as many as
fit in that many padded tokens (`batch_sizing.length_batches`). `open_extraction` loads the model
and the SAEs once; `extract_split` runs one row set through them (the sae stage: pool, then candidates).
The blocks of `sae.probe_layers` are hooked in the same pass for the probe study (`sae.probe_residuals`).

Per row (only the pooled positions: all tokens, prompt tokens (labels -100) or completion tokens;
a token's feature is *active* when its SAE activation is > 0):

- ten statistics, in `STAT_NAMES` order: tokens fed to the model (after the token cap), the share
  of active (token, feature) entries, the share of features active on at least one token, mean /
  std / max of the active activations, mean / std / coefficient of variation of the number of
  active features per token, and feature concentration as a Herfindahl index
  sum_j (s_j / sum_k s_k)^2 of the per-feature activation sums s_j;
- `feature_mean` (d_sae): each feature's activation averaged over the pooled tokens;
- `feature_presence` (d_sae): the fraction of pooled tokens on which each feature is active;
- `residual_mean` (d_model): the raw residual stream averaged over the pooled tokens (the no-SAE
  probe reads it, or `residual_last`);
- `residual_last` (d_model): the raw residual stream at the row's last pooled token;
- `topk_ids` / `topk_values` (K = min(`sae.top_k_features`, d_sae)): the K features of largest
  `feature_mean`, largest first (ties: lower id first), and those means; a row with fewer than K
  active features pads with id -1 and value 0.

A row with no pooled token (e.g. `pool: completion` and a token cap that cuts the completion off)
keeps zeros (residual_last too) and is counted (`empty_pooled_rows`), never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from playpen_attribution.core.batch_sizing import length_batches, pad_batch
from playpen_attribution.core.modeling import device, load_model, load_tokenizer
from playpen_attribution.core.tokenization import (
    IGNORE_INDEX,
    TokenizeConfig,
    tokenize_rows,
)
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger
from playpen_attribution.run.artifacts import RowFeatures
from playpen_attribution.sae.config import SaeConfig
from playpen_attribution.sae.probe_residuals import array_name, pooled_residuals

STAT_NAMES = (
    "seq_len", "active_entry_frac", "active_feature_frac", "act_mean", "act_std", "act_max",
    "l0_mean", "l0_std", "l0_cv", "herfindahl",
)
_RESID_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_post$")


class _StopForward(Exception):
    """Raised by the hook on block L once its output is captured."""


def decoder_layers(model):
    """The ModuleList of decoder blocks (through a PEFT wrapper; Llama/Gemma-style `model.layers`)."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for path in (("model", "layers"), ("model", "language_model", "layers")):
        obj = base
        for part in path:
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise UserError(f"cannot find the decoder blocks of {type(base).__name__} (looked for model.layers)")


def residuals_after_blocks(model, layers, input_ids, attention_mask) -> dict:
    """Outputs of decoder blocks `layers` (blocks.L.hook_resid_post), one forward pass; the blocks after the
    deepest never run."""
    captured = {}
    deepest = max(layers)

    def hook_of(layer: int):
        def hook(module, args, output):
            captured[layer] = output[0] if isinstance(output, tuple) else output
            if layer == deepest:
                raise _StopForward
        return hook

    blocks = decoder_layers(model)
    handles = [blocks[layer].register_forward_hook(hook_of(layer)) for layer in sorted(set(layers))]
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = sorted(set(layers) - set(captured))
    if missing:
        raise RuntimeError(f"block(s) {missing} never ran")
    return captured


def residual_after_block(model, layer: int, input_ids, attention_mask):
    """Output of decoder block `layer` (blocks.L.hook_resid_post); the blocks after it never run."""
    return residuals_after_blocks(model, [layer], input_ids, attention_mask)[layer]


def hook_name(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def load_sae(cfg: SaeConfig, d_model: int):
    """The SAE named by `cfg` (random, a SAELens folder, or a SAELens release) on this process's device."""
    import torch
    from sae_lens import SAE, JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    if cfg.release == "random":
        assert cfg.layer is not None, "SaeConfig refuses release 'random' without a layer"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            metadata = SAEMetadata(hook_name=hook_name(cfg.layer), model_name="random")
            sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_model, d_sae=cfg.d_sae, metadata=metadata))
        return sae.to(device())
    where = f"sae.release = {cfg.release!r}, sae.sae_id = {cfg.sae_id!r}"
    try:
        if cfg.sae_id is None:
            if not Path(cfg.release).is_dir():
                raise UserError(f"{where}: no such folder; name a SAELens release with an sae_id, or 'random'")
            return SAE.load_from_disk(cfg.release, device=device(), dtype="float32")
        return SAE.from_pretrained(cfg.release, cfg.sae_id, device=device(), dtype="float32")
    except (ValueError, KeyError, OSError) as exc:
        raise UserError(f"{where}: SAELens could not load the SAE ({type(exc).__name__}: {exc})") from None


def check_registry(cfg: SaeConfig) -> None:
    """UserError unless every SAE the section names exists offline: 'random', a folder on disk, or a release and
    sae_id in SAELens' own registry (the `pretrained_saes.yaml` it ships), so a typo fails before any stage runs."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    for one in [cfg, *cfg.extra_saes()]:
        if one.release == "random" or (one.sae_id is None and Path(one.release).is_dir()):
            continue
        if one.sae_id is None:
            raise UserError(f"sae.release = {one.release!r}: no such folder; name a SAELens release with an sae_id, "
                            "or 'random'")
        release = get_pretrained_saes_directory().get(one.release)
        if release is None:
            raise UserError(f"sae.release = {one.release!r} is not in SAELens' registry of pretrained SAEs (sae-lens "
                            "pretrained_saes.yaml) and is not a folder")
        if one.sae_id not in release.saes_map:
            close = sorted(i for i in release.saes_map if i.split("_width")[0] == one.sae_id.split("_width")[0])[:4]
            raise UserError(f"sae: sae_id {one.sae_id!r} is not in SAELens release {one.release!r}"
                            + (f" (that block has: {', '.join(close)})" if close else ""))


def sae_layer(cfg: SaeConfig, sae, d_model: int, n_layers: int) -> int:
    """Block L the SAE reads, checked against the config and the model (width and layer range)."""
    where = f"sae.release = {cfg.release!r}" + (f", sae.sae_id = {cfg.sae_id!r}" if cfg.sae_id else "")
    name = sae.cfg.metadata.hook_name
    match = _RESID_HOOK.match(str(name))
    if match is None:
        raise UserError(f"{where}: the SAE reads hook {name!r}; only blocks.L.hook_resid_post SAEs are supported")
    layer = int(match.group(1))
    if cfg.layer is not None and cfg.layer != layer:
        raise UserError(f"sae.layer = {cfg.layer} but the SAE ({where}) was trained on {name}")
    if not 0 <= layer < n_layers:
        raise UserError(f"sae.layer = {layer} is out of range: the model has {n_layers} blocks (0..{n_layers - 1})")
    if sae.cfg.d_in != d_model:
        raise UserError(f"{where}: SAE width d_in = {sae.cfg.d_in} does not match the model's hidden size {d_model}")
    return layer


def pooled_statistics(acts, resid, pool_mask, seq_len) -> dict:
    """Per-row statistics of a batch: acts (B, T, F) >= 0, resid (B, T, D), pool_mask (B, T) bool."""
    import torch

    m = pool_mask.to(acts.dtype)
    n_pool = m.sum(1)
    denom = n_pool.clamp(min=1)
    active = (acts > 0) & pool_mask.unsqueeze(-1)
    af = active.to(acts.dtype)
    n_features = acts.shape[-1]
    n_active = af.sum((1, 2))
    vals = acts * af
    act_mean = vals.sum((1, 2)) / n_active.clamp(min=1)
    act_var = (vals.pow(2).sum((1, 2)) / n_active.clamp(min=1) - act_mean.pow(2)).clamp(min=0)
    per_token = af.sum(2)  # active features per token (0 on unpooled positions)
    l0_mean = per_token.sum(1) / denom
    l0_std = (((per_token - l0_mean.unsqueeze(1)) * m).pow(2).sum(1) / denom).sqrt()
    sums = (acts * m.unsqueeze(-1)).sum(1)  # (B, F)
    total = sums.sum(1, keepdim=True)
    herfindahl = ((sums / total.clamp(min=1e-30)).pow(2)).sum(1) * (total.squeeze(1) > 0)
    positions = torch.arange(pool_mask.shape[1], device=pool_mask.device)
    last = torch.where(pool_mask, positions, -1).amax(1)  # last pooled position, -1 for none
    residual_last = resid[torch.arange(resid.shape[0], device=resid.device), last.clamp(min=0)]
    residual_last = residual_last * (last >= 0).unsqueeze(1).to(resid.dtype)
    stats = torch.stack([
        seq_len.to(acts.dtype), n_active / (denom * n_features), active.any(1).to(acts.dtype).sum(1) / n_features,
        act_mean, act_var.sqrt(), vals.amax((1, 2)), l0_mean, l0_std,
        torch.where(l0_mean > 0, l0_std / l0_mean.clamp(min=1e-30), torch.zeros_like(l0_mean)), herfindahl,
    ], dim=1)
    return {
        "stats": stats, "feature_mean": sums / denom.unsqueeze(1), "feature_presence": af.sum(1) / denom.unsqueeze(1),
        "residual_mean": (resid * m.unsqueeze(-1)).sum(1) / denom.unsqueeze(1), "pooled_tokens": n_pool,
        "residual_last": residual_last,
    }


def top_k_features(feature_mean: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, values), rows x min(k, d_sae): each row's features of largest mean activation, largest first (ties:
    the lower id first); slots beyond a row's active (> 0) features hold id -1 and value 0."""
    k = min(k, feature_mean.shape[1])
    ids = np.argsort(-feature_mean, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(feature_mean, ids, axis=1).astype(np.float32)
    active = values > 0
    return np.where(active, ids, -1).astype(np.int32), np.where(active, values, 0).astype(np.float32)


def extract_layers(model, saes: dict, dataset, pool: str, max_tokens: int, batch_size: int, pad_token_id: int,
                   desc: str = "sae features", batch_tokens: int | None = None, top_k: int = 256,
                   probe_layers: list[int] | tuple = (), probes: dict | None = None) -> dict[int, RowFeatures]:
    """Features of every row of a tokenized dataset (input_ids, labels), in its row order, for every
    layer -> SAE of `saes`, from one forward pass per batch that stops after the deepest layer.

    Rows run sorted by length, at most `batch_size` per batch and, with `batch_tokens`, at most that
    many padded tokens per batch (`batch_sizing.length_batches`; None = plain batch_size chunks).
    `top_k`: K of the top-K feature ids and values (`top_k_features`). The blocks `probe_layers` are hooked
    in the same pass; `probes` is filled with their pooled residuals (`probe_residuals.pooled_residuals`,
    arrays named `layer_<L>_<pooling>`, rows x d_model).
    """
    import torch

    columns = dataset.to_dict()  # plain lists: indexing a datasets Column row by row is slow
    ids_list, labels_list = columns["input_ids"], columns["labels"]
    n = len(ids_list)
    batches = length_batches([len(ids) for ids in ids_list], batch_size, batch_tokens, cap=max_tokens)
    out: dict[int, dict[str, np.ndarray]] = {layer: {} for layer in saes}
    dev = next(model.parameters()).device
    model.eval()
    for idx in tqdm(batches, desc=desc, unit="batch", leave=False):
        width = min(max(len(ids_list[i]) for i in idx), max_tokens)
        batch = pad_batch([ids_list[i] for i in idx], pad_token_id, labels=[labels_list[i] for i in idx], width=width)
        ids, labels, mask = batch.input_ids, batch.labels, batch.attention_mask.bool()
        assert labels is not None, "labels were given"
        pool_mask = mask if pool == "all" else mask & ((labels == IGNORE_INDEX) == (pool == "prompt"))
        with torch.no_grad():
            resids = residuals_after_blocks(model, [*saes, *probe_layers], ids.to(dev), mask.long().to(dev))
        for layer in probe_layers:
            assert probes is not None, "probe_layers come with the probes dict they fill"
            pooled = pooled_residuals(resids[layer].float(), pool_mask.to(dev), (labels != IGNORE_INDEX).to(dev))
            for pooling, value in pooled.items():
                value = value.cpu().numpy()
                probes.setdefault(array_name(layer, pooling), np.zeros((n, value.shape[1]), dtype=np.float32))[idx] = value
        for layer, sae in saes.items():
            with torch.no_grad():
                resid = resids[layer].float()
                acts = sae.encode(resid.to(sae.W_enc.device))
                pooled = pooled_statistics(acts, resid, pool_mask.to(acts.device), mask.sum(1).to(acts.device))
            for name, value in pooled.items():
                value = value.float().cpu().numpy()
                if name not in out[layer]:
                    out[layer][name] = np.zeros((n, *value.shape[1:]), dtype=np.float32)
                out[layer][name][idx] = value
    features = {}
    for layer, arrays in out.items():
        arrays["pooled_tokens"] = arrays["pooled_tokens"].astype(np.int64)
        arrays["topk_ids"], arrays["topk_values"] = top_k_features(arrays["feature_mean"], top_k)
        features[layer] = RowFeatures(example_ids=columns["example_id"], **arrays)
    return features


def extract_features(model, sae, layer: int, dataset, pool: str, max_tokens: int, batch_size: int,
                     pad_token_id: int, desc: str = "sae features", batch_tokens: int | None = None,
                     top_k: int = 256) -> RowFeatures:
    """`extract_layers` for one layer."""
    return extract_layers(model, {layer: sae}, dataset, pool, max_tokens, batch_size, pad_token_id, desc,
                          batch_tokens, top_k)[layer]


@dataclass
class Extraction:
    """A model and its SAEs loaded once (the main layer first, then `sae.extra_layers` / `sae.extra_sae_ids`),
    for several row sets."""

    cfg: SaeConfig
    tokenize: TokenizeConfig
    tokenizer: Any
    """A Transformers tokenizer."""
    model: Any
    """A Transformers causal LM."""
    saes: dict
    """block L -> its SAE; the first key is the main layer (`sae.layer`, or the SAE's hook)."""
    d_model: int
    configs: dict = field(default_factory=dict)
    """block L -> the sae section naming just its SAE (release and id recorded in that layer's index)."""

    @property
    def layer(self) -> int:
        return next(iter(self.saes))


def open_extraction(cfg: SaeConfig, tokenize: TokenizeConfig, model_path: str, adapter_path: Path | None,
                    tokenizer_dir: str | None = None) -> Extraction:
    """Load the tokenizer, the model and every SAE `cfg` names, checked against the model (width, layer range)."""
    tokenizer = load_tokenizer(tokenizer_dir or model_path, tokenize.chat_template)
    model = load_model(model_path, adapter_path, dtype=cfg.dtype)
    text_config = model.config.get_text_config()
    d_model, n_layers = text_config.hidden_size, len(decoder_layers(model))
    for name, layers in (("extra_layers", cfg.extra_layers), ("probe_layers", cfg.probe_layers)):
        bad = [layer for layer in layers if not 0 <= layer < n_layers]
        if bad:
            raise UserError(f"sae.{name} = {layers}: {bad} out of range, the model has {n_layers} blocks "
                            f"(0..{n_layers - 1})")
    saes: dict[int, Any] = {}
    named: dict[int, SaeConfig] = {}
    for layer_cfg in [cfg, *cfg.extra_saes()]:
        sae = load_sae(layer_cfg, d_model)
        where = sae_layer(layer_cfg, sae, d_model, n_layers)
        if where in saes:
            raise UserError(f"sae: two SAEs read block {where} ({_name(named[where])} and {_name(layer_cfg)}); "
                            "name one SAE per block")
        saes[where], named[where] = sae.eval(), layer_cfg
    return Extraction(cfg, tokenize, tokenizer, model, saes, int(d_model), named)


def _name(cfg: SaeConfig) -> str:
    return cfg.release if cfg.sae_id is None else f"{cfg.release} {cfg.sae_id}"


def extract_split(extraction: Extraction, rows: list[dict], what: str,
                  probes: dict | None = None) -> dict[int, tuple[RowFeatures, dict]]:
    """Tokenize rows with the one tokenization rule, run model + SAEs; per layer (main first) the features and
    what was used (the index fields `artifacts.write_features` stores beside them). `what` names the rows.
    With `probes` (a dict), the `sae.probe_layers` blocks' pooled residuals are added to it (same pass)."""
    cfg, tokenize = extraction.cfg, extraction.tokenize
    if not rows:
        raise UserError(f"no rows to extract SAE features from ({what})")
    dataset = tokenize_rows(extraction.tokenizer, rows, tokenize)
    max_tokens = cfg.max_tokens or tokenize.max_length
    by_layer = extract_layers(extraction.model, extraction.saes, dataset, cfg.pool, max_tokens, cfg.batch_size,
                              extraction.tokenizer.pad_token_id, desc=f"sae features ({what})",
                              batch_tokens=cfg.batch_tokens, top_k=cfg.top_k_features,
                              probe_layers=cfg.probe_layers if probes is not None else [], probes=probes)
    empty = int((by_layer[extraction.layer].pooled_tokens == 0).sum())
    if empty:
        logger.warning("%s: %d rows have no %s token within the first %d tokens; their SAE features (and "
                       "residual_last) are zeros", what, empty, cfg.pool, max_tokens)
    out = {}
    for layer, features in by_layer.items():
        assert features.topk_ids is not None, "extract_layers keeps every row's top-K features"
        sae, own = extraction.saes[layer], extraction.configs.get(layer, cfg)
        out[layer] = features, {
            "release": own.release, "sae_id": own.sae_id, "hook_name": hook_name(layer), "layer": layer,
            "d_sae": int(sae.cfg.d_sae), "d_model": extraction.d_model, "pool": cfg.pool, "max_tokens": max_tokens,
            "model": cfg.model, "rows": len(rows), "empty_pooled_rows": empty,
            "top_k_features": int(features.topk_ids.shape[1]),
        }
    return out


def extract_rows(cfg: SaeConfig, tokenize: TokenizeConfig, model_path: str, adapter_path: Path | None,
                 rows: list[dict], tokenizer_dir: str | None = None) -> tuple[RowFeatures, dict]:
    """The main layer's features of rows and what was used (`extract_split`; extra layers are not run)."""
    if not rows:
        raise UserError(f"no rows to extract SAE features from (sae.split = {cfg.split!r})")
    extraction = open_extraction(cfg.model_copy(update={"extra_layers": [], "extra_sae_ids": []}), tokenize,
                                 model_path, adapter_path, tokenizer_dir)
    return extract_split(extraction, rows, f"sae.split = {cfg.split!r}")[extraction.layer]


def feature_index(info: dict) -> dict:
    """The index stored beside features (`artifacts.write_features`): the statistic names, what
    `feature_presence` means, and what `extract_rows` used."""
    return {"stat_names": list(STAT_NAMES),
            "feature_presence": "fraction of pooled tokens on which the feature is active (> 0)", **info}
