"""Bergson scoring on a tiny in-code Llama + LoRA adapter (CPU, no downloads)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from playpen_attribution.attribution import scoring as bs  # isort: skip
import datasets
import peft
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from playpen_attribution.attribution import bergson_runs as runs
from playpen_attribution.attribution.config import AttributeConfig
from playpen_attribution.errors import UserError

VOCAB = 200
MAX_POS = 128
FAST = {"projection_dim": 8, "token_batch_size": MAX_POS}  # 64 numbers per module: quick Hessians
DEFAULTS = {"mode": "mean", "projection_dim": 32, "preconditioning": "query", "mixing_coefficient": 0.99, "unit_normalize": True,
                "loss_reduction": "sum", "label_smoothing": 0.0, "token_batch_size": 512, "precision": "fp32",
            "nproc_per_node": 1, "nnode": 1}


def settings_of(model, **fields) -> runs.Scoring:
    """A `Scoring` from these test defaults, `model`'s tokenizer and `fields` (attribute fields or resolved ones)."""
    merged = DEFAULTS | {"tokenizer": str(model)} | fields
    attribute = AttributeConfig(**{k: v for k, v in merged.items() if k not in ("precision", "tokenizer")})
    return runs.Scoring(attribute, merged["token_batch_size"], merged["precision"], merged["tokenizer"])


def _rows(rng: np.random.Generator, n: int, prefix: str, lo: int, hi: int) -> list[dict]:
    rows = []
    for i in range(n):
        length = int(rng.integers(8, 41))
        prompt = int(rng.integers(2, length - 3))
        ids = [int(t) for t in rng.integers(lo, hi, length - 1)] + [1]  # EOS appended
        rows.append({"example_id": f"{prefix}{i}", "input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return rows


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one intra-op thread (tests/conftest.py)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bergson")
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{f"t{i}": i for i in range(3, VOCAB)}}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=word_level, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MAX_POS,
        bos_token_id=1, eos_token_id=1, pad_token_id=0,
    )
    torch.manual_seed(0)
    model_dir = root / "model"
    transformers.LlamaForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    lora = peft.LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"],
        init_lora_weights=False, task_type="CAUSAL_LM",  # random B, so every LoRA gradient is non-zero
    )
    adapter_dir = root / "adapter"
    peft.get_peft_model(transformers.LlamaForCausalLM.from_pretrained(model_dir), lora).save_pretrained(adapter_dir)
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == str(model_dir)

    # Query rows use tokens 3..99; the pool mixes such rows, rows from 100..199, and two query copies.
    rng = np.random.default_rng(0)
    query = _rows(rng, 6, "q", 3, 100)
    pool = _rows(rng, 12, "a", 3, 100) + _rows(rng, 12, "b", 100, VOCAB)
    pool += [dict(query[i], example_id=f"dup{i}") for i in (0, 3)]
    pool = [pool[i] for i in rng.permutation(len(pool))]
    return {
        "root": root, "model": model_dir, "adapter": adapter_dir,
        "query": datasets.Dataset.from_list(query), "pool": datasets.Dataset.from_list(pool),
    }


@pytest.fixture(scope="module")
def preconditioned(tiny) -> tuple[np.ndarray, Path]:
    work = tiny["root"] / "work_query"
    settings = settings_of(tiny["model"], preconditioning="query", unit_normalize=True, **FAST)
    return bs.score_pool(tiny["model"], tiny["adapter"], tiny["pool"], tiny["query"], work, settings).scores, work


def test_one_finite_score_per_pool_row(tiny, preconditioned):
    scores, work = preconditioned
    assert scores.shape == (len(tiny["pool"]),)
    assert np.isfinite(scores).all()
    for name in ("query_hessian", "query_index", "scores"):
        assert (work / name / "config.yaml").is_file()


def test_bergson_consumed_exactly_the_given_pool_ids(tiny, preconditioned):
    _, work = preconditioned
    assert runs.consumed_ids(work / "scores") == list(tiny["pool"]["example_id"])
    processed = datasets.load_from_disk(str(work / "scores" / "data.hf"))  # Bergson's own record
    assert processed["labels"] == tiny["pool"]["labels"]
    assert min(processed["loss"]) > 0  # every row went through a forward/backward pass
    saved = datasets.load_from_disk(str(work / "pool.hf"))
    assert saved["input_ids"] == tiny["pool"]["input_ids"]
    assert saved["labels"] == tiny["pool"]["labels"]


def test_query_copies_rank_high_and_query_like_rows_beat_others(tiny, preconditioned):
    scores, _ = preconditioned
    ids = list(tiny["pool"]["example_id"])
    top = {ids[i] for i in np.argsort(-scores)[:3]}
    assert {"dup0", "dup3"} <= top
    kind = np.array([eid[0] for eid in ids])
    assert scores[kind == "a"].mean() > scores[kind == "b"].mean()


def test_scores_match_cosine_with_mean_query_from_stored_gradients(tiny):
    """preconditioning=none: score_i = cos(g_i, .) against mean_q(q / |q|), from Bergson's own gradients."""
    from bergson import load_gradients

    root, settings = tiny["root"], settings_of(tiny["model"], preconditioning="none", unit_normalize=True, **FAST)
    scores = bs.score_pool(tiny["model"], tiny["adapter"], tiny["pool"], tiny["query"], root / "work_none", settings).scores
    pool_dir = runs.build_gradient_index(tiny["model"], tiny["adapter"], tiny["pool"], root / "pool_grads", settings)
    query_dir = runs.build_gradient_index(tiny["model"], tiny["adapter"], tiny["query"], root / "query_grads", settings)
    assert runs.consumed_ids(query_dir) == list(tiny["query"]["example_id"])
    assert runs.consumed_ids(pool_dir) == list(tiny["pool"]["example_id"])

    g = np.asarray(load_gradients(pool_dir), dtype=np.float64)
    q = np.asarray(load_gradients(query_dir), dtype=np.float64)
    target = (q / np.linalg.norm(q, axis=1, keepdims=True)).mean(axis=0)
    expected = (g / np.linalg.norm(g, axis=1, keepdims=True)) @ target
    np.testing.assert_allclose(scores, expected, rtol=1e-3, atol=1e-5)


def test_base_model_without_adapter(tiny):
    settings = settings_of(tiny["model"], preconditioning="query", **FAST)
    pool, query = tiny["pool"], tiny["query"]
    scores = bs.score_pool(tiny["model"], None, pool, query, tiny["root"] / "work_base", settings).scores
    assert scores.shape == (len(pool),) and np.isfinite(scores).all()
    top = {pool["example_id"][i] for i in np.argsort(-scores)[:3]}
    assert {"dup0", "dup3"} <= top


def test_empty_query_set_is_rejected(tiny, tmp_path):
    empty = tiny["query"].select([])
    with pytest.raises(ValueError, match="query"):
        bs.score_pool(tiny["model"], tiny["adapter"], tiny["pool"], empty, tmp_path, settings_of(tiny["model"], **FAST))


def test_token_batch_size_over_max_position_embeddings_is_rejected(tiny, tmp_path):
    settings = settings_of(tiny["model"], projection_dim=8, token_batch_size=2 * MAX_POS)
    with pytest.raises(UserError, match=rf"token_batch_size.*max_position_embeddings.*token_batch_size={MAX_POS}"):
        bs.score_pool(tiny["model"], tiny["adapter"], tiny["pool"], tiny["query"], tmp_path, settings)


def test_adapter_for_another_base_model_is_rejected(tiny, tmp_path):
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny["adapter"], adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "some_other_model")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="base_model_name_or_path"):
        bs.score_pool(tiny["model"], adapter, tiny["pool"], tiny["query"], tmp_path / "w", settings_of(tiny["model"], **FAST))


# --- modes, preconditioners and the query-index cache ------------------------------------------

GROUPS = ["g0", "g1", "g0", "g2", "g1", "g0"]  # query rows q0..q5


def _score(tiny, name: str, cache: Path | None = None, query=None, **settings) -> bs.PoolScores:
    query = tiny["query"].add_column("group_id", GROUPS) if query is None else query
    merged = {**FAST, "preconditioning": "none", **settings}
    return bs.score_pool(tiny["model"], tiny["adapter"], tiny["pool"], query, tiny["root"] / name,
                         settings_of(tiny["model"], **merged), cache_dir=cache)


@pytest.fixture(scope="module")
def individual(tiny) -> bs.PoolScores:
    return _score(tiny, "work_individual", tiny["root"] / "cache", mode="individual")


def test_individual_keeps_one_column_per_query_row_and_mean_is_the_mean_mode(tiny, individual):
    assert individual.individual.shape == (len(tiny["pool"]), len(tiny["query"]))
    assert individual.query_ids == list(tiny["query"]["example_id"])
    assert np.isfinite(individual.individual).all()
    np.testing.assert_allclose(individual.scores, individual.individual.mean(axis=1))
    mean = _score(tiny, "work_mean_cached", tiny["root"] / "cache", mode="mean")
    np.testing.assert_allclose(mean.scores, individual.scores, rtol=1e-6)
    # a query copy in the pool scores ~1 (cosine with itself) in its own column
    ids = list(tiny["pool"]["example_id"])
    assert individual.individual[ids.index("dup3"), 3] == pytest.approx(1.0, abs=1e-4)


def test_nearest_is_the_max_over_query_rows_of_the_individual_scores(tiny, individual, caplog):
    with caplog.at_level("INFO", logger="playpen_attribution"):
        nearest = _score(tiny, "work_nearest", tiny["root"] / "cache", mode="nearest")
    assert nearest.reused_query_index and "reused query index" in caplog.text
    assert nearest.individual is None
    np.testing.assert_allclose(nearest.scores, individual.individual.max(axis=1), rtol=1e-5, atol=1e-6)


def test_group_mean_max_is_the_max_over_groups_of_group_means(tiny, individual):
    grouped = _score(tiny, "work_groups", tiny["root"] / "cache", mode="group_mean_max")
    cols = individual.individual
    expected = np.max([cols[:, [i for i, g in enumerate(GROUPS) if g == name]].mean(axis=1)
                       for name in ("g0", "g1", "g2")], axis=0)
    np.testing.assert_allclose(grouped.scores, expected, rtol=1e-6)
    np.testing.assert_allclose(grouped.individual, cols, rtol=1e-6)


def test_group_mean_max_without_group_ids_is_rejected(tiny):
    with pytest.raises(ValueError, match="group_id"):
        _score(tiny, "work_nogroups", query=tiny["query"], mode="group_mean_max")


def test_mixed_with_coefficient_one_equals_query_preconditioning(tiny):
    cache = tiny["root"] / "cache_hessian"
    query = _score(tiny, "work_pq", cache, preconditioning="query")
    mixed = _score(tiny, "work_mixed", cache, preconditioning="mixed", mixing_coefficient=1.0)
    assert mixed.reused_query_index  # same query index and Hessian
    assert np.isfinite(mixed.scores).all()
    np.testing.assert_allclose(mixed.scores, query.scores, rtol=1e-4, atol=1e-5)
    half = _score(tiny, "work_mixed_half", cache, preconditioning="mixed", mixing_coefficient=0.5)
    assert np.isfinite(half.scores).all() and not np.allclose(half.scores, query.scores, rtol=1e-3)
    assert (tiny["root"] / "work_mixed_half" / "mixed_hessian" / "mix.json").is_file()


def test_loss_reduction_mean_only_rescales_each_gradient(tiny):
    """A per-row scalar vanishes under unit normalisation without a Hessian; label smoothing changes scores."""
    summed = _score(tiny, "work_sum", loss_reduction="sum")
    meaned = _score(tiny, "work_meanred", loss_reduction="mean")
    np.testing.assert_allclose(meaned.scores, summed.scores, rtol=1e-3, atol=1e-5)
    smoothed = _score(tiny, "work_smooth", label_smoothing=0.1)
    assert np.isfinite(smoothed.scores).all() and not np.allclose(smoothed.scores, summed.scores, rtol=1e-4)
    assert "label_smoothing: 0.1" in (tiny["root"] / "work_smooth" / "scores" / "config.yaml").read_text()


def test_another_projection_never_reuses_the_cached_index(tiny, tmp_path, caplog):
    first = _score(tiny, "work_p8", tmp_path / "cache")
    other = _score(tiny, "work_p4", tmp_path / "cache", projection_dim=4)
    assert first.query_key != other.query_key and not other.reused_query_index
    assert len(list((tmp_path / "cache").glob("query_*"))) == 2
    # a cache folder whose contents were built with another projection is rebuilt, not used
    shutil.rmtree(tmp_path / "cache" / f"query_{other.query_key}")
    shutil.copytree(tmp_path / "cache" / f"query_{first.query_key}", tmp_path / "cache" / f"query_{other.query_key}")
    record = tmp_path / "cache" / f"query_{other.query_key}" / "key.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "key": other.query_key}))
    with caplog.at_level("WARNING", logger="playpen_attribution"):
        again = _score(tiny, "work_p4_again", tmp_path / "cache", projection_dim=4)
    assert "projection_dim=8, not 4" in caplog.text and "rebuilding" in caplog.text
    assert not again.reused_query_index
    np.testing.assert_allclose(again.scores, other.scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_row_losses_from_bergson_equal_a_forward_pass(tiny, tmp_path, reduction):
    """The attribute stage takes its per-row loss from Bergson instead of a second forward pass."""
    from playpen_attribution.core.modeling import load_model
    from playpen_attribution.core.row_forward import row_losses_and_embeddings

    settings = settings_of(tiny["model"], preconditioning="none", loss_reduction=reduction, **FAST)
    result = bs.score_pool(tiny["model"], tiny["adapter"], tiny["pool"], tiny["query"], tmp_path / "w", settings)
    model = load_model(tiny["model"], tiny["adapter"], dtype="float32")
    expected, _ = row_losses_and_embeddings(model, tiny["pool"], 0, batch_size=8)
    assert result.row_losses is not None
    np.testing.assert_allclose(result.row_losses, expected, rtol=1e-4)


def test_row_losses_are_not_taken_from_a_smoothed_loss(tiny, tmp_path):
    settings = settings_of(tiny["model"], preconditioning="none", label_smoothing=0.1, **FAST)
    result = bs.score_pool(tiny["model"], tiny["adapter"], tiny["pool"], tiny["query"], tmp_path / "w", settings)
    assert result.row_losses is None


def test_token_batch_size_changes_speed_not_scores(tiny, tmp_path):
    """`token_batch_size: auto` may pick any size: rows batched 40 or 128 tokens at a time score the same."""
    small = settings_of(tiny["model"], preconditioning="none", projection_dim=8, token_batch_size=40)
    large = settings_of(tiny["model"], preconditioning="none", projection_dim=8, token_batch_size=MAX_POS)
    a = bs.score_pool(tiny["model"], tiny["adapter"], tiny["pool"], tiny["query"], tmp_path / "s", small)
    b = bs.score_pool(tiny["model"], tiny["adapter"], tiny["pool"], tiny["query"], tmp_path / "l", large)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a.row_losses, b.row_losses, rtol=1e-5)


def test_two_bergson_processes_score_like_one_and_share_the_query_cache(tiny, preconditioned, tmp_path):
    """`nproc_per_node: 2`: Bergson's own two worker processes (Gloo on CPU) give the one-process scores and row
    losses, and the query index (and Hessian) they cached is reused as is by one process."""
    one, _ = preconditioned
    cache = tmp_path / "cache"
    wide = settings_of(tiny["model"], preconditioning="query", nproc_per_node=2, **FAST)
    two = bs.score_pool(tiny["model"], tiny["adapter"], tiny["pool"], tiny["query"], tmp_path / "two", wide, cache)
    assert not two.reused_query_index
    np.testing.assert_allclose(two.scores, one, rtol=0, atol=1e-5)
    narrow = settings_of(tiny["model"], preconditioning="query", **FAST)
    again = bs.score_pool(tiny["model"], tiny["adapter"], tiny["pool"], tiny["query"], tmp_path / "one", narrow, cache)
    assert again.reused_query_index
    np.testing.assert_allclose(again.scores, one, rtol=0, atol=1e-5)
    np.testing.assert_allclose(two.row_losses, again.row_losses, rtol=1e-5)
