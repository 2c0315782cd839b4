"""What the demo-based benchmarks share: their common arguments, the run folder they build or reuse,
and the one way they print (the package itself never prints).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from playpen_attribution.config import load_config
from playpen_attribution.run.model_paths import model_path
from playpen_attribution.stages import attribute, base_model, data, train


def say(line: str = "") -> None:
    """One line of the benchmark's report on stdout."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def parser_for(description: str) -> argparse.ArgumentParser:
    """An argument parser with --config, --run-dir and --threads, which every demo benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default="configs/demo.yaml", help="experiment config (default: the demo)")
    parser.add_argument("--run-dir", default=None, help="run folder to build or reuse (default: a temp folder)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: two OpenMP threads spin badly on a shared 2-core box)")
    return parser


def start(args: argparse.Namespace, prefix: str):
    """(config, run folder) for parsed arguments, with torch's threads set."""
    import torch

    torch.set_num_threads(args.threads)
    return load_config(args.config), Path(args.run_dir or tempfile.mkdtemp(prefix=prefix))


def prepare(cfg, run_dir: Path, with_attribution: bool = False) -> str:
    """data -> base model -> base adapter (-> attribution); finished stages are reused. The model path."""
    data.run(cfg, run_dir)
    base_model.run(cfg, run_dir)
    train.run(cfg, run_dir)
    if with_attribution:
        attribute.run(cfg, run_dir)
    return model_path(cfg.model.base, run_dir)
