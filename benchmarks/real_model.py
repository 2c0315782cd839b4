"""Each stage of a real config held against the raw forward+backward of the same model, on the same rows, in
one run: tokens/s, peak resident memory and their ratios.

    uv run python benchmarks/real_model.py                       # configs/taboo_clembench_gemma3.yaml, 2 threads
    uv run python benchmarks/real_model.py --pool-rows 64 --batch-size 16 --batching padding_free
    uv run python benchmarks/real_model.py --tiny                # CPU smoke test on a tiny random Gemma-3 (the suite)

What it runs, in `--workdir` (a temp folder by default), one JSON line per measurement on stdout:

1. the config's data stage, then a `data/` with the first `--pool-rows` pool rows (and at most 16 query and 24
   eval rows) that every stage below reads;
2. `raw_fwd_bwd`: the reference. The base model with a fresh LoRA of `train.lora`, the pool rows once in
   length-sorted batches of `train.batch_size`, each batch a forward with the output head applied only at the
   completion positions (a boolean `logits_to_keep`), cross-entropy, backward and an AdamW step: what the
   hardware does for this model with no framework around it. `raw_forward`: the same batches, forward only,
   no head (what a loss or feature pass costs at least);
3. the stages, each timed by its own manifest: `train` (the base adapter, `train.epochs` over the rows; its
   loop's `train_tokens_per_s` and the whole stage's `tokens_per_s`), `attribute` (Bergson: query Hessian,
   query index, pool scores, every token it read over the stage's wall time) and `evaluate` of the base adapter
   (loss, choices, generation: rows/s);
4. `ratio` = the stage's tokens/s / raw_fwd_bwd's, and `attribute_vs_train` = attribute tokens/s / the train
   loop's (the issue's targets: train >= 150 tokens/s on Gemma-3-270M on 2 cores, attribute >= 0.8x train,
   every stage's peak memory <= 3 GB).

Peak memory is each stage's own (`run.peak_memory`: VmHWM reset per stage on Linux). Run it on a quiet
machine and note the load (`uptime`) beside its numbers; BENCHMARKS.md has them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from playpen_attribution.config import load_config, parse_config
from playpen_attribution.run import artifacts, peak_memory
from playpen_attribution.run.model_paths import model_path as base_model_path
from playpen_attribution.run.model_paths import tokenizer_path
from playpen_attribution.run.stage_folder import run_stage
from playpen_attribution.stages import attribute, data, evaluate, train

RESULTS = sys.stdout
"""Measurement lines go here; whatever the libraries print is sent to stderr."""
QUERY_ROWS, EVAL_ROWS = 16, 24


def emit(record: dict) -> None:
    RESULTS.write(json.dumps(record) + "\n")
    RESULTS.flush()


def subset_data(full: Path, run_dir: Path, pool_rows: int) -> Path:
    """A `data/` stage folder in `run_dir` holding the first rows of each split of `full`."""
    sizes = {"train_base": pool_rows, "attr_query": QUERY_ROWS, "eval": EVAL_ROWS}

    def build(out: Path) -> dict:
        rows = {split: artifacts.load_split(full, split)[:n] for split, n in sizes.items()}
        for split, kept in rows.items():
            artifacts.write_split(out, split, kept)
        return {"rows": {s: len(r) for s, r in rows.items()}, "subset_of": str(full)}

    return run_stage(run_dir, artifacts.DATA, {"subset_of": str(full), "sizes": sizes}, {}, build,
                     command="benchmarks/real_model.py", overwrite=True)


def raw_passes(cfg, run_dir: Path) -> tuple[dict, dict]:
    """(raw forward+backward+AdamW, raw forward) over the pool rows, each with its tokens/s and peak memory."""
    import torch

    from playpen_attribution.core.batch_sizing import length_batches, pad_batch
    from playpen_attribution.core.modeling import load_model, load_tokenizer
    from playpen_attribution.core.row_forward import no_logits
    from playpen_attribution.core.tokenization import tokenize_rows

    rows = artifacts.load_split(run_dir / artifacts.DATA, "train_base")
    tokenizer = load_tokenizer(tokenizer_path(cfg.model.base, cfg.model.tokenizer, run_dir), cfg.tokenize.chat_template)
    ds = tokenize_rows(tokenizer, rows, cfg.tokenize)
    ids_all, labels_all = ds["input_ids"], ds["labels"]
    batches = length_batches([len(i) for i in ids_all], cfg.train.batch_size)
    model = train.new_adapter(load_model(base_model_path(cfg.model.base, run_dir), dtype=cfg.model.dtype), cfg.train)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.learning_rate)
    dev = next(model.parameters()).device

    def run(backward: bool) -> dict:
        model.train(backward)
        scope, tokens, start = peak_memory.reset_peaks(), 0, time.perf_counter()
        for idx in batches:
            batch = pad_batch([ids_all[i] for i in idx], tokenizer.pad_token_id, labels=[labels_all[i] for i in idx])
            ids, mask, labels = batch.input_ids.to(dev), batch.attention_mask.to(dev), batch.labels.to(dev)
            tokens += int(mask.sum())
            if not backward:
                with torch.no_grad():
                    model(input_ids=ids, attention_mask=mask, logits_to_keep=no_logits(ids))
                continue
            keep = torch.zeros_like(mask, dtype=torch.bool)
            keep[:, :-1] = labels[:, 1:] != -100
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
            torch.nn.functional.cross_entropy(logits.float(), labels[:, 1:][keep[:, :-1]]).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
                **peak_memory.peaks(scope)}

    return run(True), run(False)


def stage_line(name: str, folder: Path, raw: dict, extra: dict | None = None) -> dict:
    fields = artifacts.load_manifest(folder).fields
    rate = fields.get("tokens_per_s")
    line = {"check": name, "seconds": fields["wall_seconds"], "tokens": fields.get("tokens_processed"),
            "tokens_per_s": rate, "peak_rss_mb": fields.get("peak_rss_mb"), "peak_cuda_mb": fields.get("peak_cuda_mb"),
            "ratio": round(rate / raw["tokens_per_s"], 3) if rate else None, **(extra or {})}
    emit(line)
    return line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/taboo_clembench_gemma3.yaml", help="a real experiment config")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: a tiny random Gemma-3, the demo source")
    parser.add_argument("--pool-rows", type=int, default=64, help="pool rows every stage reads")
    parser.add_argument("--batch-size", type=int, help="train.batch_size (default: the config's)")
    parser.add_argument("--batching", choices=["padded", "length_grouped", "padding_free"], help="train.batching")
    parser.add_argument("--token-batch", type=int, help="attribute.token_batch_size (default: the config's)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument("--workdir", default=None, help="where the run folders go (default: temp)")
    parser.add_argument("--only", nargs="*", choices=["raw", "train", "attribute", "evaluate"])
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="real_model_"))
    cfg = tiny_config(work) if args.tiny else load_config(args.config)
    cfg = overridden(cfg, args)
    emit({"check": "setup", "config": "tiny" if args.tiny else args.config, "threads": torch.get_num_threads(),
          "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "torch": torch.__version__,
          "batch_size": cfg.train.batch_size, "batching": cfg.train.batching,
          "token_batch_size": cfg.attribute.token_batch_size, "load": _load()})
    only = set(args.only or ["raw", "train", "attribute", "evaluate"])
    full, run_dir = work / "full", work / "run"
    data.run(cfg, full)
    subset_data(full / artifacts.DATA, run_dir, args.pool_rows)
    from playpen_attribution.stages import base_model

    if cfg.model.base == "tiny":
        base_model.run(cfg, run_dir)
    raw = {"tokens_per_s": float("nan")}
    if "raw" in only:
        raw, forward = raw_passes(cfg, run_dir)
        emit({"check": "raw_fwd_bwd", **raw})
        emit({"check": "raw_forward", **forward, "ratio": round(forward["tokens_per_s"] / raw["tokens_per_s"], 3)})
    trained = None
    if only & {"train", "attribute", "evaluate"}:
        shutil.rmtree(run_dir / artifacts.TRAIN_BASE, ignore_errors=True)
        folder = train.run(cfg, run_dir, overwrite=True)
        loop = artifacts.load_manifest(folder).fields.get("train_tokens_per_s")
        trained = stage_line("train", folder, raw, {"loop_tokens_per_s": loop, "loop_ratio": round(
            loop / raw["tokens_per_s"], 3) if loop else None})
    if "attribute" in only:
        folder = attribute.run(cfg.model_copy(update={"attribute": cfg.attribute.model_copy(
            update={"cache_dir": str(work / "cache")})}), run_dir, overwrite=True)
        rate = artifacts.load_manifest(folder).fields.get("tokens_per_s")
        stage_line("attribute", folder, raw, {"attribute_vs_train": round(rate / trained["loop_tokens_per_s"], 3)
                                              if rate and trained and trained["loop_tokens_per_s"] else None})
    if "evaluate" in only:
        folder = evaluate.run(cfg, run_dir, model="base_adapter", overwrite=True)
        stage_line("evaluate", folder, raw, {"speed": artifacts.load_metrics(folder).speed})
    emit({"check": "done", "workdir": str(work), "load": _load()})


def overridden(cfg, args):
    train_cfg = cfg.train.model_copy(update={k: v for k, v in (("batch_size", args.batch_size),
                                                              ("batching", args.batching)) if v})
    attr = cfg.attribute.model_copy(update={"token_batch_size": args.token_batch} if args.token_batch else {})
    sweep = cfg.sweep.model_copy(update={"seeds": cfg.seeds[:1]})
    select = cfg.select.model_copy(update={"k": min(cfg.select.k, max(1, args.pool_rows // 4))})  # the summary's k
    return cfg.model_copy(update={"train": train_cfg, "attribute": attr, "sweep": sweep, "select": select})


def tiny_config(work: Path):
    """The offline demo's data on a tiny random Gemma-3 (262k vocabulary only with --config's model)."""
    return parse_config({
        "name": "real_model_tiny", "tokenize": {"max_length": 64},
        "model": {"tiny": {"hidden_size": 64, "intermediate_size": 128, "max_position_embeddings": 64,
                           "pretrain_epochs": 0}},
        "data": {"source": {"kind": "demo", "n_train": 48, "n_query": 8, "n_eval": 12, "n_targets": 10}},
        "train": {"lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "epochs": 1, "batch_size": 8, "grad_accum": 1},
        "attribute": {"projection_dim": 4, "token_batch_size": 64}, "select": {"k": 8},
        "evaluate": {"max_new_tokens": 4, "batch_size": 8}}, source="real_model --tiny")


def _load() -> str | None:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return None


if __name__ == "__main__":
    with contextlib.redirect_stdout(sys.stderr):
        main()
