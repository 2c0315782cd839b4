"""Shared fixtures: a tiny tokenizer, a small demo config, and one small finished demo run.

The finished run (`demo_run`) is built once per test session; stage tests read its folders. Plain
helpers (paths, config builders) are in `helpers.py`.
"""

from __future__ import annotations

import pytest
from helpers import gemma_270m_dir as prepared_gemma_270m
from helpers import small_demo_dict

from playpen_attribution.config import parse_config
from playpen_attribution.core.allocator import tune_allocator
from playpen_attribution.core.tiny_model import train_word_tokenizer
from playpen_attribution.taboo.demo import DemoSource, corpus_text, generate_demo


def pytest_configure(config):
    tune_allocator()  # as the CLI does (core/allocator.py): stages called in-process run the same way


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


@pytest.fixture(scope="session")
def gemma_270m_dir():
    """The real Gemma-3-270M as an ordinary Hugging Face folder, prepared once per machine under
    `<repo>/models/` and reused."""
    return prepared_gemma_270m()
