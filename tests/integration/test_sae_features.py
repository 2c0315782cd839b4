"""SAE feature extraction on a tiny model: where the residual is read, early stop, statistics, top-K pooling,
the last pooled token's residual, several layers in one pass, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from playpen_attribution.config import parse_config
from playpen_attribution.core.tiny_model import TinyModelConfig, build_tiny_model
from playpen_attribution.core.tokenization import TokenizeConfig, tokenize_rows
from playpen_attribution.errors import UserError
from playpen_attribution.run.artifacts import FEATURE_ARRAYS, OPTIONAL_FEATURE_ARRAYS
from playpen_attribution.sae.config import SaeConfig
from playpen_attribution.sae.features import (
    STAT_NAMES,
    decoder_layers,
    extract_features,
    extract_layers,
    extract_rows,
    extract_split,
    load_sae,
    open_extraction,
    pooled_statistics,
    residual_after_block,
    residuals_after_blocks,
    top_k_features,
)
from playpen_attribution.taboo.demo import DemoSource, corpus_text, generate_demo

N_LAYERS, WIDTH = 3, 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model path, rows): a 3-block, 32-wide tiny Llama and a few demo rows."""
    rows = generate_demo(DemoSource(n_train=40, n_query=10, n_eval=10), seed=1).splits["train_base"]
    rows = [r for r in rows if r["completion"]][:24]
    cfg = TinyModelConfig(hidden_size=WIDTH, num_layers=N_LAYERS, num_heads=4, intermediate_size=64,
                          max_position_embeddings=64)
    path = tmp_path_factory.mktemp("tiny") / "model"
    build_tiny_model(corpus_text(rows), cfg, path)
    return str(path), rows


@pytest.fixture(scope="module")
def loaded(tiny):
    from playpen_attribution.core.modeling import load_model, load_tokenizer

    path, rows = tiny
    tokenizer = load_tokenizer(path)
    return load_model(path, dtype="float32"), tokenizer, tokenize_rows(tokenizer, rows, TokenizeConfig(max_length=64))


def _batch(tokenizer, dataset, n=4):
    ids = [dataset["input_ids"][i] for i in range(n)]
    width = max(map(len, ids))
    input_ids = torch.full((n, width), tokenizer.pad_token_id)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    return input_ids, mask


@pytest.mark.parametrize("layer", range(N_LAYERS))
def test_residual_is_block_output_and_hidden_states_entry(loaded, layer):
    model, tokenizer, dataset = loaded
    ids, mask = _batch(tokenizer, dataset)
    seen = {}
    handle = decoder_layers(model)[layer].register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    handle.remove()
    hooked = seen["out"][0] if isinstance(seen["out"], tuple) else seen["out"]
    with torch.no_grad():
        ours = residual_after_block(model, layer, ids, mask)
    assert torch.equal(ours, hooked)
    if layer < N_LAYERS - 1:
        assert torch.allclose(ours, full.hidden_states[layer + 1])
    else:  # HF's last hidden_states entry has the final norm applied: it is not the last block's output
        assert not torch.allclose(ours, full.hidden_states[-1])
        assert torch.allclose(model.model.norm(ours), full.hidden_states[-1], atol=1e-6)


def test_blocks_after_layer_never_run(loaded):
    model, tokenizer, dataset = loaded
    calls = {"L": 0, "L+1": 0, "head": 0}
    layers = decoder_layers(model)
    handles = [
        layers[0].register_forward_hook(lambda *a: calls.__setitem__("L", calls["L"] + 1)),
        layers[1].register_forward_hook(lambda *a: calls.__setitem__("L+1", calls["L+1"] + 1)),
        model.lm_head.register_forward_hook(lambda *a: calls.__setitem__("head", calls["head"] + 1)),
    ]
    sae = load_sae(SaeConfig(layer=0, d_sae=16), WIDTH)
    try:
        features = extract_features(model, sae, 0, dataset, "all", 64, 8, tokenizer.pad_token_id)
    finally:
        for h in handles:
            h.remove()
    assert calls == {"L": 3, "L+1": 0, "head": 0}  # 24 rows in batches of 8
    assert features.stats.shape == (24, len(STAT_NAMES)) and features.feature_mean.shape == (24, 16)


def _reference(acts: np.ndarray, resid: np.ndarray, pooled: np.ndarray, seq_len: int) -> dict:
    a, r = acts[pooled], resid[pooled]
    active = a > 0
    vals = a[active]
    per_token = active.sum(1)
    sums = a.sum(0)
    stats = [seq_len, active.mean(), active.any(0).mean(), vals.mean(), vals.std(), vals.max(),
             per_token.mean(), per_token.std(), per_token.std() / per_token.mean(), ((sums / sums.sum()) ** 2).sum()]
    return {"stats": np.array(stats), "feature_mean": a.mean(0), "feature_presence": active.mean(0),
            "residual_mean": r.mean(0), "residual_last": resid[np.flatnonzero(pooled)[-1]]}


def test_pooled_statistics_match_a_per_row_reference():
    gen = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(3, 7, 11, generator=gen) - 0.5)
    resid = torch.randn(3, 7, 5, generator=gen)
    pool = torch.zeros(3, 7, dtype=torch.bool)
    pool[0, :7], pool[1, 2:5], pool[2, 1:6] = True, True, True
    seq_len = torch.tensor([7, 5, 6])
    got = pooled_statistics(acts, resid, pool, seq_len)
    for row in range(3):
        ref = _reference(acts[row].numpy(), resid[row].numpy(), pool[row].numpy(), int(seq_len[row]))
        for name, value in ref.items():
            np.testing.assert_allclose(got[name][row].numpy(), value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert got["pooled_tokens"].tolist() == [7, 3, 5]


def test_last_pooled_token_residual_and_a_row_with_none():
    resid = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    pool = torch.tensor([[False, True, False, True], [False, False, False, False]])
    got = pooled_statistics(torch.zeros(2, 4, 5), resid, pool, torch.tensor([4, 4]))
    np.testing.assert_array_equal(got["residual_last"][0].numpy(), resid[0, 3].numpy())  # position 3, not 1
    np.testing.assert_array_equal(got["residual_last"][1].numpy(), np.zeros(3))  # nothing pooled: zeros
    assert got["pooled_tokens"].tolist() == [2, 0]


def test_top_k_features_of_a_hand_built_activation_tensor():
    """Two rows, 3 tokens, 6 features: the mean over the pooled tokens, then the K largest, largest first."""
    acts = torch.tensor([
        [[0.0, 2.0, 0.0, 1.0, 0.0, 0.0], [0.0, 4.0, 0.0, 0.0, 3.0, 0.0], [9.0, 9.0, 9.0, 9.0, 9.0, 9.0]],
        [[0.5, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]],
    ])
    pool = torch.tensor([[True, True, False], [True, True, True]])  # row 0's third token is not pooled
    mean = pooled_statistics(acts, torch.zeros(2, 3, 2), pool, torch.tensor([3, 3]))["feature_mean"].numpy()
    np.testing.assert_allclose(mean[0], [0, 3, 0, 0.5, 1.5, 0])
    ids, values = top_k_features(mean, 3)
    assert ids.tolist() == [[1, 4, 3], [0, -1, -1]]  # row 1 has one active feature: the rest is padding
    np.testing.assert_allclose(values, [[3, 1.5, 0.5], [0.5 / 3, 0, 0]], rtol=1e-6)
    assert ids.dtype == np.int32 and values.dtype == np.float32
    ids, values = top_k_features(mean, 100)  # capped at d_sae
    assert ids.shape == (2, 6) and ids[0].tolist() == [1, 4, 3, -1, -1, -1]
    tied = np.array([[1.0, 2.0, 2.0, 1.0]], dtype=np.float32)
    assert top_k_features(tied, 3)[0].tolist() == [[1, 2, 0]]  # ties: the lower id first


def test_several_layers_in_one_pass_equal_each_layer_alone(loaded):
    model, tokenizer, dataset = loaded
    saes = {0: load_sae(SaeConfig(layer=0, d_sae=16), WIDTH), 2: load_sae(SaeConfig(layer=2, d_sae=16), WIDTH)}
    calls = {"forward": 0}
    handle = model.model.embed_tokens.register_forward_hook(lambda *a: calls.__setitem__("forward", calls["forward"] + 1))
    try:
        both = extract_layers(model, saes, dataset, "completion", 64, 8, tokenizer.pad_token_id, top_k=5)
    finally:
        handle.remove()
    assert calls["forward"] == 3  # 24 rows in batches of 8: one forward pass per batch for both layers
    for layer, sae in saes.items():
        alone = extract_features(model, sae, layer, dataset, "completion", 64, 8, tokenizer.pad_token_id, top_k=5)
        for name in FEATURE_ARRAYS + OPTIONAL_FEATURE_ARRAYS:
            np.testing.assert_array_equal(getattr(both[layer], name), getattr(alone, name), err_msg=f"{layer} {name}")
    assert not np.allclose(both[0].residual_mean, both[2].residual_mean)


def test_hooked_layers_stop_after_the_deepest(loaded):
    model, tokenizer, dataset = loaded
    ids, mask = _batch(tokenizer, dataset)
    seen = []
    handles = [block.register_forward_hook(lambda m, a, o, i=i: seen.append(i)) for i, block in enumerate(decoder_layers(model))]
    try:
        with torch.no_grad():
            out = residuals_after_blocks(model, [1, 0], ids, mask)
    finally:
        for h in handles:
            h.remove()
    assert sorted(out) == [0, 1] and 2 not in seen
    assert torch.equal(out[0], residual_after_block(model, 0, ids, mask))


def test_extra_layers_get_the_random_sae_of_their_own_layer(tiny):
    path, rows = tiny
    cfg = SaeConfig(layer=0, d_sae=16, extra_layers=[2], top_k_features=4)
    extraction = open_extraction(cfg, TokenizeConfig(max_length=64), path, None)
    assert list(extraction.saes) == [0, 2] and extraction.layer == 0
    assert torch.equal(extraction.saes[2].W_enc, load_sae(SaeConfig(layer=2, d_sae=16), WIDTH).W_enc)
    by_layer = extract_split(extraction, rows[:6], "test rows")
    (features, info), (extra, extra_info) = by_layer[0], by_layer[2]
    assert (info["hook_name"], extra_info["hook_name"]) == ("blocks.0.hook_resid_post", "blocks.2.hook_resid_post")
    assert info["top_k_features"] == 4 and features.topk_ids.shape == (6, 4)
    single, single_info = extract_rows(SaeConfig(layer=2, d_sae=16, top_k_features=4), TokenizeConfig(max_length=64),
                                       path, None, rows[:6])
    np.testing.assert_array_equal(single.feature_mean, extra.feature_mean)
    assert single_info == extra_info
    with pytest.raises(UserError, match=r"sae.extra_layers = \[3\]: \[3\] out of range, the model has 3 blocks"):
        open_extraction(SaeConfig(layer=0, d_sae=16, extra_layers=[3]), TokenizeConfig(max_length=64), path, None)


def test_prompt_and_completion_pooling_split_the_tokens(loaded):
    model, tokenizer, dataset = loaded
    sae = load_sae(SaeConfig(layer=1, d_sae=16), WIDTH)
    counts = {p: extract_features(model, sae, 1, dataset, p, 64, 8, tokenizer.pad_token_id).pooled_tokens
              for p in ("all", "prompt", "completion")}
    completion = np.array([sum(t != -100 for t in labels) for labels in dataset["labels"]])
    np.testing.assert_array_equal(counts["completion"], completion)
    np.testing.assert_array_equal(counts["prompt"] + counts["completion"], counts["all"])


def test_token_cap_runs_only_the_first_tokens(loaded):
    model, tokenizer, dataset = loaded
    sae = load_sae(SaeConfig(layer=1, d_sae=16), WIDTH)
    capped = extract_features(model, sae, 1, dataset, "all", 6, 8, tokenizer.pad_token_id)
    assert capped.stats[:, 0].max() == 6 and (capped.pooled_tokens <= 6).all()


def test_random_sae_is_seeded_and_reads_the_configured_hook():
    a, b = load_sae(SaeConfig(layer=2, d_sae=16, seed=3), WIDTH), load_sae(SaeConfig(layer=2, d_sae=16, seed=3), WIDTH)
    assert torch.equal(a.W_enc, b.W_enc) and a.cfg.metadata.hook_name == "blocks.2.hook_resid_post"


def test_layer_out_of_range_is_named(tiny):
    path, rows = tiny
    with pytest.raises(UserError, match=r"sae.layer = 5 is out of range: the model has 3 blocks \(0..2\)"):
        extract_rows(SaeConfig(layer=5, d_sae=16), TokenizeConfig(max_length=64), path, None, rows)


def _saved_sae(tmp_path, d_in: int, hook: str):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    folder = tmp_path / "sae"
    JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=8, metadata=SAEMetadata(hook_name=hook))).save_model(folder)
    return str(folder)


def test_sae_width_mismatch_is_named(tiny, tmp_path):
    path, rows = tiny
    cfg = SaeConfig(release=_saved_sae(tmp_path, 48, "blocks.1.hook_resid_post"))
    with pytest.raises(UserError, match=r"SAE width d_in = 48 does not match the model's hidden size 32"):
        extract_rows(cfg, TokenizeConfig(max_length=64), path, None, rows)


def test_sae_folder_gives_the_layer_and_disagreement_is_named(tiny, tmp_path):
    path, rows = tiny
    folder = _saved_sae(tmp_path, WIDTH, "blocks.1.hook_resid_post")
    _features, info = extract_rows(SaeConfig(release=folder), TokenizeConfig(max_length=64), path, None, rows[:4])
    assert (info["layer"], info["hook_name"], info["d_sae"]) == (1, "blocks.1.hook_resid_post", 8)
    with pytest.raises(UserError, match=r"sae.layer = 0 but the SAE .* was trained on blocks.1.hook_resid_post"):
        extract_rows(SaeConfig(release=folder, layer=0), TokenizeConfig(max_length=64), path, None, rows[:4])


def test_missing_sae_folder_and_bad_config_are_named():
    with pytest.raises(UserError, match=r"sae.release = '/no/such/sae'.*no such folder"):
        load_sae(SaeConfig(release="/no/such/sae"), WIDTH)
    with pytest.raises(UserError, match=r"field 'sae'.*release 'random' needs a layer"):
        parse_config({"sae": {"release": "random"}}, "my.yaml")
