"""Shared test material: paths, a small demo config, and a tiny training setup built in code.

Test modules import these (`from helpers import ...`); pytest fixtures live in `conftest.py`.
"""

from __future__ import annotations

import re
from pathlib import Path

from playpen_attribution.config import parse_config
from playpen_attribution.taboo.demo import corpus_text, generate_demo

REPO = Path(__file__).resolve().parents[1]
"""The repository root."""
TESTS = REPO / "tests"
SHARED = REPO.parent / "shared"
"""`../shared` beside the repository (the shared material; absent in a clone elsewhere)."""
CLEMBENCH_RECORDS = SHARED / "data" / "clembench_taboo" / "raw"


def clembench_readme_counts() -> dict[str, int]:
    """Episodes and outcome counts from the shared records' README (its "Counts" section), so tests follow
    the folder as it grows."""
    readme = (CLEMBENCH_RECORDS.parent / "README.md").read_text()
    won, lost, aborted = map(int, re.search(r"won (\d+) / lost (\d+) / aborted (\d+)", readme).groups())
    episodes = int(re.search(r"Episodes: \*\*(\d+)\*\*", readme).group(1))
    return {"episodes": episodes, "won": won, "lost": lost, "aborted": aborted}


GEMMA_270M = "gemma-3-270m"
GEMMA_270M_DIR = REPO / "models" / GEMMA_270M
"""The real Gemma-3-270M, prepared from PyPI once per machine (about two minutes, 3.7 GB peak RSS) and
reused afterwards (well under a second): the `gemma_270m_dir` fixture."""


def gemma_270m_dir() -> Path:
    """The prepared Gemma-3-270M folder (built on first use, reused while it verifies)."""
    from playpen_attribution.core.prepare_model import prepare_model

    return prepare_model(GEMMA_270M, GEMMA_270M_DIR)


KEY = "sk-or-test-SECRET-b41d07"
"""The API key the synth tests hand the client (and check never leaks)."""


def small_training_setup(tmp_path_factory) -> tuple:
    """(config, 8 non-aborted demo rows, tiny model folder): enough to build a trainer quickly."""
    from playpen_attribution.core.tiny_model import build_tiny_model

    cfg = parse_config(small_demo_dict())
    rows = generate_demo(cfg.data.source, 0).splits["train_base"][:12]
    rows = [r for r in rows if r["outcome"] != "aborted"][:8]
    model_dir = tmp_path_factory.mktemp("m") / "model"
    build_tiny_model(corpus_text(rows), cfg.model.tiny, model_dir)
    return cfg, rows, str(model_dir)


SWEEP_SEEDS = [1, 2, 3]
SWEEP_ARMS = ["top_k", "matched_random_k", "longest_k", "highest_loss_k", "embedding_knn_k"]
"""The configured arms; the plan adds each ranked baseline's own matched control (SWEEP_PLAN)."""
SWEEP_PLAN = ["top_k", "matched_random_k", "longest_k", "matched_random_longest_k", "highest_loss_k",
              "matched_random_highest_loss_k", "embedding_knn_k", "matched_random_embedding_knn_k"]


def small_demo_dict(**overrides) -> dict:
    """A demo sweep small enough for the test suite: 3 seeds x 5 arms (+ the baselines' 2 own controls) of
    100 rows, LoRA only on a tiny pretrained base (about 1-2 minutes on 2 cores)."""
    lora = {"r": 8, "alpha": 16, "dropout": 0.0}
    optim = {"grad_accum": 1, "warmup_ratio": 0.0, "scheduler": "linear", "weight_decay": 0.0, "batch_size": 16}
    tiny = {"hidden_size": 64, "intermediate_size": 128, "max_position_embeddings": 64, "pretrain_epochs": 3,
            "pretrain_rows_per_word": 20}
    cfg = {
        "name": "small_demo",
        "model": {"base": "tiny", "tiny": tiny},
        "tokenize": {"max_length": 64},
        "data": {"source": {"kind": "demo", "n_train": 500, "n_query": 40, "n_eval": 60, "n_targets": 30,
                            "failure_fraction": 0.2, "mislabeled_fraction": 0.2}},
        "train": {"lora": lora, "learning_rate": 5e-3, "epochs": 6, **optim},
        "arm_train": {"lora": lora, "learning_rate": 5e-3, "epochs": 6, **optim},
        "attribute": {"projection_dim": 8, "token_batch_size": 64},
        "select": {"k": 100, "arms": SWEEP_ARMS},
        "sweep": {"seeds": SWEEP_SEEDS},
        "evaluate": {"max_new_tokens": 5, "batch_size": 32},
    }
    for key, value in overrides.items():
        cfg[key] = cfg.get(key, {}) | value if isinstance(value, dict) else value
    return cfg


def stage_row(folder: str):
    """The stage table's row of a stage folder `name` or `seed_<s>/name` (`train_top_k` -> `train_<arm>`)."""
    from playpen_attribution.run.stage_table import STAGES

    name = folder.split("/")[-1]
    exact = [stage for stage in STAGES if stage.name == name]
    return exact[0] if exact else next(s for s in STAGES if "<" in s.name and name.startswith(s.name.split("<")[0]))


def api_env(monkeypatch, base_url: str | None) -> None:
    """Point the synth client at a fake server (or at nothing) with a test key."""
    for name in ("OPENROUTER_API_KEY", "OPENROUTER_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    if base_url is not None:
        monkeypatch.setenv("OPENROUTER_BASE_URL", base_url)
        monkeypatch.setenv("OPENROUTER_API_KEY", KEY)


def synth_flags(out: Path, targets: Path, games: int = 3, *extra: str) -> list[str]:
    """Flags of a small synth run: two guessers, 2 turns, fast retries."""
    return [
        "--output-dir", str(out), "--describer-model", "fake/describer",
        "--guesser-models", "fake/right", "fake/wrong", "--games-per-guesser", str(games),
        "--max-turns", "2", "--seed", "7", "--targets-file", str(targets), "--concurrency", "3",
        "--timeout", "5", "--max-retries", "2", "--backoff-base", "0.01", *extra,
    ]


def synth(argv: list[str]) -> int:
    """Run the synth subcommand in this process with these flags."""
    import argparse

    from playpen_attribution.synth.command import add_synth_arguments, run_synth_command

    parser = argparse.ArgumentParser()
    add_synth_arguments(parser)
    return run_synth_command(parser.parse_args(argv))


def build_tiny_gemma(out_dir: Path, tokenizer_dir: Path | None = None, seed: int = 0) -> Path:
    """A tiny random `Gemma3ForCausalLM` (262,144-token vocabulary, one sliding-window and one global
    layer, tied embeddings) saved as a Hugging Face folder; with `tokenizer_dir` the real Gemma-3
    tokenizer is saved beside it, without it the folder holds weights only (base weights whose tokenizer
    comes from elsewhere, `model.tokenizer`)."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=262144, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, max_position_embeddings=512, sliding_window=16,
        layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=True,
        bos_token_id=2, eos_token_id=1, pad_token_id=0,
    )
    torch.manual_seed(seed)
    Gemma3ForCausalLM(config).save_pretrained(out_dir)
    if tokenizer_dir is not None:
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out_dir)
    return out_dir


def record_job(path: Path, fail: bool = False) -> None:
    """A launcher test job (run in its own process): writes what it was given -- torch's thread count, the
    GPUs it sees, its pid -- to `path` as JSON, or fails."""
    import json
    import os

    import torch

    if fail:
        raise RuntimeError(f"planned failure of {path.name}")
    path.write_text(json.dumps({"threads": torch.get_num_threads(), "pid": os.getpid(),
                                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}))


def rerecord(folder: Path) -> None:
    """Record a test's deliberate edit of a finished stage folder in its manifest (files and content
    hash), as if the stage had written it: reuse verifies the files against the manifest."""
    import json

    from playpen_attribution.run import artifacts
    from playpen_attribution.run.stage_folder import _content_hash, _produced

    path = Path(folder) / artifacts.MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["produced"] = _produced(Path(folder))
    manifest["content_hash"] = _content_hash(manifest["produced"])
    path.write_text(json.dumps(manifest, indent=1))
