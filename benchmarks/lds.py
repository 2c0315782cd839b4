"""Linear datamodeling score (LDS) of mean-mode attribution on the demo task.

Attribution scores are gradients taken at the base adapter, so they predict what happens when
training *moves on from the base adapter*: that is how the experiment uses them (every arm continues
the base adapter) and where a first-order prediction can hold. So each subset run continues the base
adapter with `arm_train` on a random subset of the pool (`--fraction` of it, default a half), exactly
like an arm (`stages.train.train_rows`, same training seed for every subset, so only the rows differ).
Training the tiny base model from scratch on each subset would test a different question: the
gradients at the base adapter say little about a model trained from a random start.

For every subset S: predicted = sum of the mean-mode scores of S's rows (higher score = the row
lowers the query loss), actual = mean completion loss over the attribution query rows after
training (`row_forward.row_losses_and_embeddings`). LDS = Spearman(predicted, -actual) across
subsets (positive is good). A control ranker (the number of clean rows in S -- neither planted kind,
the known truth of the demo; success rows where nothing is planted) is reported next to it.

With a config that scores the pool with several methods (`attribute.methods`, configs/demo_methods.yaml),
every method's scores predict the same trained subsets, so their LDS are measured side by side: the
subsets (the expensive part) are trained once.

This benchmark keeps its own choice on purpose: subsets continue the base adapter (`init:
base_adapter`), where the experiment's arms start from the base model (`arm_train.init: base`).

    uv run python benchmarks/lds.py [--config configs/demo.yaml] [--subsets 32] [--fraction 0.5] [--epochs 1] [--threads 1]
    uv run python benchmarks/lds.py --config configs/demo_methods.yaml --run-dir runs/demo_methods   # LDS per method
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
from bench_common import (  # benchmarks/ is on sys.path when run as a script
    parser_for,
    prepare,
    say,
    start,
)
from scipy.stats import spearmanr

from playpen_attribution.core.modeling import load_model, load_tokenizer
from playpen_attribution.core.row_forward import row_losses_and_embeddings
from playpen_attribution.core.tokenization import tokenize_rows
from playpen_attribution.run import artifacts
from playpen_attribution.stages import train


def query_loss(cfg, model_path: str, adapter: Path, query_ds, pad_token_id: int) -> float:
    model = load_model(model_path, adapter, dtype=cfg.model.dtype)
    losses, _ = row_losses_and_embeddings(model, query_ds, pad_token_id, batch_size=32, desc="query loss")
    return float(np.nanmean(losses))


def main() -> None:
    parser = parser_for(__doc__.split("\n")[0])
    parser.add_argument("--subsets", type=int, default=32, help="random subsets trained (8 is too few: see docs)")
    parser.add_argument("--fraction", type=float, default=0.5, help="share of the pool in each subset")
    parser.add_argument("--epochs", type=float, default=1.0, help="epochs of continued training per subset")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset draws")
    args = parser.parse_args()
    cfg, run_dir = start(args, "lds_")
    started = time.perf_counter()
    model_path = prepare(cfg, run_dir, with_attribution=True)
    pool = artifacts.load_split(run_dir / artifacts.DATA, "train_base")
    query = artifacts.load_split(run_dir / artifacts.DATA, "attr_query")
    scores = artifacts.load_scores(run_dir / artifacts.ATTRIBUTE)
    methods = {m: artifacts.load_scores(artifacts.method_dir(run_dir / artifacts.ATTRIBUTE, m))
               for m in cfg.attribute.methods} if len(cfg.attribute.methods) > 1 else {}
    tokenizer = load_tokenizer(model_path)
    query_ds = tokenize_rows(tokenizer, query, cfg.tokenize)
    base_adapter = run_dir / artifacts.TRAIN_BASE / artifacts.ADAPTER_DIR
    arm_train = cfg.arm_train.model_copy(update={"epochs": args.epochs})
    size = int(len(pool) * args.fraction)
    base_loss = query_loss(cfg, model_path, base_adapter, query_ds, tokenizer.pad_token_id)
    planted = set().union(*map(set, artifacts.load_planted(run_dir / artifacts.DATA).values()))

    def is_clean(row: dict) -> bool:
        return row["example_id"] not in planted if planted else row["outcome"] == "success"

    rng = random.Random(args.seed)
    records = []
    for i in range(args.subsets):
        subset = rng.sample(pool, size)
        out = run_dir / "lds_subsets" / f"subset_{i}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        train.train_rows(subset, model_path, arm_train, cfg, out, init_adapter=base_adapter)
        loss = query_loss(cfg, model_path, out / artifacts.ADAPTER_DIR, query_ds, tokenizer.pad_token_id)
        records.append({"subset": i, "rows": size, "predicted": sum(scores[r["example_id"]] for r in subset),
                        "clean_rows": sum(map(is_clean, subset)), "query_loss": loss,
                        "predicted_by_method": {m: sum(s[r["example_id"]] for r in subset) for m, s in methods.items()}})
        say(json.dumps(records[-1]))

    actual = [-r["query_loss"] for r in records]
    lds = spearmanr([r["predicted"] for r in records], actual)[0]
    control = spearmanr([r["clean_rows"] for r in records], actual)[0]
    spread = max(r["query_loss"] for r in records) - min(r["query_loss"] for r in records)
    say(f"\nconfig {args.config}: {args.subsets} subsets of {size}/{len(pool)} pool rows, {args.epochs} epoch(s) "
          f"continued from the base adapter (query loss {base_loss:.4f} before); {time.perf_counter() - started:.0f} s")
    say(f"query loss after: {min(r['query_loss'] for r in records):.4f} .. {max(r['query_loss'] for r in records):.4f} "
          f"(spread {spread:.4f})")
    say(f"LDS  Spearman(sum of mean-mode scores, -query loss) = {lds:+.3f}")
    say(f"control  Spearman(clean rows in subset, -query loss) = {control:+.3f}")
    by_method = {m: float(spearmanr([r["predicted_by_method"][m] for r in records], actual)[0]) for m in methods}
    for method, value in by_method.items():
        say(f"LDS of {method}: {value:+.3f}")
    say(json.dumps({"lds_spearman": lds, "control_clean_rows_spearman": control, "subsets": args.subsets,
                      "subset_rows": size, "pool_rows": len(pool), "epochs": args.epochs,
                      "base_query_loss": base_loss, "config": args.config, "lds_by_method": by_method}))


if __name__ == "__main__":
    main()
