"""Shared fixtures: a tiny tokenizer, a small demo config, and one small finished demo run.

The finished run (`demo_run`) is built once per test session; stage tests read its folders.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from playpen_attribution.config import parse_config
from playpen_attribution.demo.task import corpus_text, generate_demo
from playpen_attribution.config import DemoSource
from playpen_attribution.tiny_model import train_word_tokenizer

REPO = Path(__file__).resolve().parents[1]


def small_training_setup(tmp_path_factory) -> tuple:
    """(config, 8 non-aborted demo rows, tiny model folder): enough to build a trainer quickly."""
    from playpen_attribution.tiny_model import build_tiny_model

    cfg = parse_config(small_demo_dict())
    rows = generate_demo(cfg.data.source, 0).splits["train_base"][:12]
    rows = [r for r in rows if r["outcome"] != "aborted"][:8]
    model_dir = build_tiny_model(corpus_text(rows), cfg.model.tiny, tmp_path_factory.mktemp("m") / "model")
    return cfg, rows, str(model_dir)


SWEEP_SEEDS = [1, 2, 3]
SWEEP_ARMS = ["top_k", "matched_random_k", "longest_k", "highest_loss_k", "embedding_knn_k"]


def small_demo_dict(**overrides) -> dict:
    """A demo sweep small enough for the test suite: 3 seeds x 5 arms of 100 rows (about 1-2 minutes on 2 cores)."""
    lora = {"r": 8, "alpha": 16, "dropout": 0.0, "modules_to_save": ["embed_tokens", "lm_head"]}
    optim = {"grad_accum": 1, "warmup_ratio": 0.0, "scheduler": "linear", "weight_decay": 0.0, "batch_size": 16}
    cfg = {
        "name": "small_demo",
        "model": {"base": "tiny", "tiny": {"hidden_size": 64, "intermediate_size": 128, "max_position_embeddings": 64}},
        "tokenize": {"max_length": 64},
        "data": {"source": {"kind": "demo", "n_train": 500, "n_query": 40, "n_eval": 60, "n_targets": 30}},
        "train": {"lora": lora, "learning_rate": 5e-3, "epochs": 6, **optim},
        "arm_train": {"lora": lora, "learning_rate": 1e-3, "epochs": 2, **optim},
        "attribute": {"projection_dim": 8, "token_batch_size": 64},
        "select": {"k": 100, "arms": SWEEP_ARMS},
        "sweep": {"seeds": SWEEP_SEEDS},
        "evaluate": {"max_new_tokens": 5, "batch_size": 32},
    }
    for key, value in overrides.items():
        cfg[key] = cfg.get(key, {}) | value if isinstance(value, dict) else value
    return cfg


@pytest.fixture(scope="session")
def small_cfg():
    return parse_config(small_demo_dict(), "small_demo")


@pytest.fixture(scope="session")
def tokenizer():
    rows = generate_demo(DemoSource(n_train=100, n_query=10, n_eval=10), seed=0).splits["train_base"]
    return train_word_tokenizer(corpus_text(rows))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, small_cfg):
    """One finished small demo sweep (3 seeds x 5 arms): (config, run_dir)."""
    from playpen_attribution.pipeline import run_experiment

    run_dir = tmp_path_factory.mktemp("demo") / "run"
    run_experiment(small_cfg, run_dir)
    return small_cfg, run_dir
