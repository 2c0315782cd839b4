"""Rank N candidate rows two ways, side by side in one run: the predictor path vs Bergson gradient scoring.

On a run folder (`--run-dir`: a finished run is reused stage by stage; default: the demo built in a temp
folder) with data -> base model -> train_base -> attribute -> sae -> predict (the config's `sae` /
`predict` sections, or a random SAE on the last block), N candidate rows are made from the run's pool
and eval rows under new example_ids (cycled to N), then, alternating `--repeats` times:

- predictor: load the model (base + train_base adapter when `sae.model: base_adapter`) and the SAE,
  tokenize, forward to block L (the blocks after it never run), SAE encoding and pooling, the saved
  regressor (`predict/predictor.joblib`): what the predict stage does to rank the candidates split;
- gradients: Bergson per-row gradients of the same tokenized rows under base + train_base adapter,
  scored against the run's attribution query set with its query index cache warm (the query side,
  built once by the warm-up, is what a run already has): `attribution.scoring.score_pool`.

Both sides are warmed up once on a few rows first (imports, first model load, the query index). Rows
per second of each (median over repeats) and the ratio gradients / predictor seconds go to stdout.

    uv run python benchmarks/candidates_speed.py [--config configs/demo.yaml] [--run-dir D] [--rows 2000]
        [--repeats 2] [--threads 1] [--tiny]

`--tiny` shrinks the demo (fewer rows, short training, 40 candidates, one repeat) to check the script;
its timings mean nothing.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

from bench_common import parser_for, prepare, say, start  # benchmarks/ is on sys.path when run as a script

from playpen_attribution.attribution.scoring import score_pool
from playpen_attribution.config import parse_config
from playpen_attribution.core.modeling import load_tokenizer
from playpen_attribution.core.tokenization import tokenize_rows
from playpen_attribution.core.yaml_config import read_mapping
from playpen_attribution.run import artifacts
from playpen_attribution.run.model_paths import tokenizer_path
from playpen_attribution.sae.config import PredictConfig, SaeConfig
from playpen_attribution.sae.features import extract_split, feature_index, open_extraction
from playpen_attribution.sae.models import layer_of
from playpen_attribution.sae.predictor import apply_predictor
from playpen_attribution.stages import attribute, predict, sae

TINY = {"data": {"source": {"kind": "demo", "n_train": 200, "n_query": 20, "n_eval": 30}},
        "model": {"tiny": {"pretrain_epochs": 1, "pretrain_rows_per_word": 5}},
        "train": {"epochs": 1}, "select": {"k": 40, "arms": ["top_k", "matched_random_k"]}, "sweep": {"seeds": [1]},
        "predict": {"folds": 3, "cv_folds": 2}}


def merged(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def with_sections(cfg):
    """The config with an `sae` section (a random 512-wide SAE on the last block unless given) and a `predict` one."""
    layer = cfg.model.tiny.num_layers - 1
    return cfg.model_copy(update={"sae": cfg.sae or SaeConfig(layer=layer, d_sae=512, model="base_adapter"),
                                  "predict": cfg.predict or PredictConfig()})


def candidate_rows(data_dir: Path, n: int) -> list[dict]:
    """n rows made from the pool and eval rows, cycled, each under a new example_id."""
    source = artifacts.load_split(data_dir, "train_base") + artifacts.load_split(data_dir, "eval")
    return [source[i % len(source)] | {"example_id": f"candidate_{i:06d}"} for i in range(n)]


def predictor_side(cfg, run_dir: Path, model_path: str, rows: list[dict]) -> int:
    """Load model + SAE, extract the rows' features, apply the saved predictor; rows ranked."""
    adapter = run_dir / artifacts.TRAIN_BASE / artifacts.ADAPTER_DIR if cfg.sae.model == "base_adapter" else None
    bundle = artifacts.load_predictor(run_dir / artifacts.PREDICT)
    extraction = open_extraction(cfg.sae, cfg.tokenize, model_path, adapter,
                                 tokenizer_path(cfg.model.base, cfg.model.tokenizer, run_dir))
    layer = layer_of(cfg.predict.model)
    features, index = extract_split(extraction, rows, "candidates")[extraction.layer if layer is None else layer]
    return len(apply_predictor(bundle, features, feature_index(index), "candidates"))


def gradient_side(cfg, run_dir: Path, model_path: str, rows: list[dict], work: Path, cache: Path) -> int:
    """Tokenize, Bergson gradients of every row, scores against the query set (cached query index); rows scored."""
    tokenizer = load_tokenizer(tokenizer_path(cfg.model.base, cfg.model.tokenizer, run_dir), cfg.tokenize.chat_template)
    tok = cfg.tokenize
    pool_ds = tokenize_rows(tokenizer, rows, tok)
    query = artifacts.load_split(run_dir / artifacts.DATA, "attr_query")
    query_ds = tokenize_rows(tokenizer, query, tok)
    if cfg.attribute.mode == "group_mean_max":
        query_ds = query_ds.add_column("group_id", [r["group_id"] for r in query])
    settings = attribute.scoring_for(cfg, model_path, (pool_ds, query_ds),
                                      tokenizer_path(cfg.model.base, cfg.model.tokenizer, run_dir))
    shutil.rmtree(work, ignore_errors=True)
    adapter = run_dir / artifacts.TRAIN_BASE / artifacts.ADAPTER_DIR
    return len(score_pool(Path(model_path), adapter, pool_ds, query_ds, work, settings, cache).scores)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = parser_for(__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="candidate rows to rank (default 2000)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats of each side")
    parser.add_argument("--tiny", action="store_true", help="a shrunken demo: checks the script, times nothing useful")
    args = parser.parse_args()
    cfg, run_dir = start(args, "candidates_speed_")
    if args.tiny:
        cfg = parse_config(merged(read_mapping(args.config), TINY), args.config)
        args.rows, args.repeats = min(args.rows, 40), 1
    cfg = with_sections(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    model_path = prepare(cfg, run_dir, with_attribution=True)
    sae.run(cfg, run_dir)
    predict.run(cfg, run_dir)
    rows = candidate_rows(run_dir / artifacts.DATA, args.rows)
    work, cache = run_dir / "_candidates_speed", run_dir / "_candidates_speed_cache"
    say(f"run folder {run_dir}; {len(rows)} candidate rows; layer {cfg.sae.layer}, d_sae {cfg.sae.d_sae}, "
        f"predictor {cfg.predict.model}; {args.threads} torch thread(s)")
    warm = rows[: min(8, len(rows))]
    predictor_side(cfg, run_dir, model_path, warm)
    gradient_side(cfg, run_dir, model_path, warm, work / "warm", cache)  # builds the query index once
    times: dict[str, list[float]] = {"predictor": [], "gradients": []}
    for repeat in range(args.repeats):
        times["predictor"].append(timed(lambda: predictor_side(cfg, run_dir, model_path, rows)))
        times["gradients"].append(timed(lambda r=repeat: gradient_side(cfg, run_dir, model_path, rows,
                                                                       work / f"rep_{r}", cache)))
        say(f"  repeat {repeat + 1}: predictor {times['predictor'][-1]:.2f} s, gradients {times['gradients'][-1]:.2f} s")
    shutil.rmtree(work, ignore_errors=True)
    pred, grad = statistics.median(times["predictor"]), statistics.median(times["gradients"])
    say()
    say(f"config {args.config}{' (--tiny)' if args.tiny else ''}, {args.repeats} repeat(s)")
    say("| path | seconds (median) | rows/s | ratio |")
    say("|---|---|---|---|")
    say(f"| predictor: forward to block L + SAE + regressor | {pred:.2f} | {len(rows) / pred:.1f} | 1.00 |")
    say(f"| gradients: Bergson per-row gradients + scores (query index cached) | {grad:.2f} | {len(rows) / grad:.1f} | "
        f"{grad / pred:.2f} |")
    say(f"predictor speed-up over gradient scoring: {grad / pred:.1f}x")
    if args.run_dir is None:  # the temp folder built for this call
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":  # Bergson's worker processes re-import this module
    main()
