"""Shared fixtures: a tiny tokenizer, a small demo config, and one small finished demo run.

The finished run (`demo_run`) is built once per test session; stage tests read its folders. Plain
helpers (paths, config builders) are in `helpers.py`. The tiers: every test under tests/integration/ is
marked `integration` here (and a few slow unit tests in their files); `pytest -m "not integration"` runs the
fast tier without importing tests/integration/ at all.
"""

from __future__ import annotations

import pytest
from _pytest.mark.expression import Expression
from helpers import gemma_270m_dir as prepared_gemma_270m
from helpers import small_demo_dict

from playpen_attribution.config import parse_config
from playpen_attribution.core.tiny_model import train_word_tokenizer
from playpen_attribution.taboo.demo import DemoSource, corpus_text, generate_demo

INTEGRATION = "integration"
"""The marker of every test under tests/integration/ (they train, run stages, load real models or registries) and
of the few unit tests that take seconds; `pytest -m "not integration"` runs the fast tier."""


def _excludes_integration(config) -> bool:
    """Whether `-m` deselects an integration test both without any other mark and with every other mark."""
    expression = config.getoption("markexpr")
    if not expression:
        return False
    compiled = Expression.compile(expression)
    return not any(compiled.evaluate(lambda name, others=others: name == INTEGRATION or others)
                   for others in (False, True))


def pytest_ignore_collect(collection_path, config):
    """Under `-m "not integration"` tests/integration/ is not even imported (its modules import torch, Transformers,
    Bergson and SAELens: most of a full collection's time)."""
    if collection_path.name == INTEGRATION and collection_path.is_dir() and _excludes_integration(config):
        return True
    return None


def pytest_collection_modifyitems(config, items):
    """Mark the tests by folder: every test under tests/integration/ is an integration test."""
    for item in items:
        if INTEGRATION in item.path.parts[-2:-1]:
            item.add_marker(pytest.mark.integration)


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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a test module (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`):
    on a shared 2-core box more threads spin against other processes. The count is restored after the module."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
