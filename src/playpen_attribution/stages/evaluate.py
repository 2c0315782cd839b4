"""Stage `evaluate`: completion loss on the eval split, choice accuracy, and greedy generation with word accuracy.

Reads `data/` (the eval split), the base model, and for anything but `base` the adapter of its
training stage (`artifacts.training_stage`: `train_base/` for `base_adapter`, `train_<arm>/` for an
arm). It works in the folder it is given: a sweep seed's folder `seed_<s>/` for an arm (and for the
base adapter when it is retrained per seed), the run directory otherwise.

Every row's completion loss (mean token NLL of completion + EOS, the one tokenization function, one
batched forward pass through `row_forward`) is measured for every dataset. With `evaluate.generate`
(the default) prompts are also generated from greedily, batched with left padding, and the word after
`GUESS:` is compared with the gold completion's word (and with the target word where known).
With `evaluate.choices` (default `all`), each row whose completion holds a `GUESS:` and that has a
target word also gets the format-robust metric: its completion with every eval target word (or the
target and `choices - 1` of them) as the guess is scored by log-likelihood (`core.choice`, one cached
forward over the prompt) and the target's rank is kept (`choice_rank`, `choice_correct`; metrics
`choice_accuracy`, `choice_mrr`, rows skipped counted in `choice_skipped`). Word accuracy reads
whether a model learned to write the answer format as well as the word; choice accuracy reads the word.
Generation runs on `evaluate.backend` (see `generation`): `hf`, transformers generate batched by
prompt length with the KV cache (bf16 on a GPU), or `vllm`, vLLM's offline engine on the same token
ids and greedy settings (optional extra; adapters with modules_to_save are refused).
Writes `eval_<name>/`: `predictions.jsonl` (example_id, loss; with generation also generated text,
predicted, gold and target word, correct; with choices choice_rank, choice_correct, choices) and `metrics.json` (model, seed, eval_loss over the rows
with a finite loss, counted; with generation correct, total, accuracy and target-word accuracy; and
`speed`, the wall-clock throughput: loss_rows_per_s, and with generation generation_rows_per_s,
generation_backend and, for vllm, the engine's start-up seconds).

With `evaluate.benchmarks`, the same loaded model (base, or base + adapter) then runs those
lm-evaluation-harness tasks (`core.benchmarks`; the chat template when `tokenize.format` uses one,
code execution only with `evaluate.allow_code_execution`), and the folder also holds
`benchmarks.json` (per task every metric with the harness's stderr, the item count, the switches
used) and `benchmark_samples.jsonl` (per-item scores keyed by task, doc_id and filter, which the
report pairs across models). Without benchmarks the benchmark options stay out of the stage config (they
change nothing then).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from playpen_attribution.config import ExperimentConfig
from playpen_attribution.core.benchmarks import run_lm_eval
from playpen_attribution.core.choice import choice_log_likelihoods
from playpen_attribution.core.generation import (
    generate,
    require_vllm,
    vllm_generate,
    vllm_lora_rank,
)
from playpen_attribution.core.modeling import load_model, load_tokenizer
from playpen_attribution.core.row_forward import row_losses_and_embeddings
from playpen_attribution.core.tokenization import (
    prompt_and_completions,
    prompt_ids,
    stop_ids,
    tokenize_rows,
    truncation_counts,
)
from playpen_attribution.run import artifacts, stage_table
from playpen_attribution.run.artifacts import EvalMetrics, Prediction
from playpen_attribution.run.model_paths import base_model
from playpen_attribution.run.stage_folder import run_stage
from playpen_attribution.run.tracking import benchmark_logging
from playpen_attribution.taboo.guess import choice_words, extract_guess, gold_word, row_choices, with_guess


def _generate_texts(
    cfg: ExperimentConfig, prompts: list[list[int]], model, tokenizer, name: str,
    model_path: str | Path | None, adapter: Path | None,
) -> tuple[list[str], dict]:
    """Texts from `evaluate.backend` and its speed fields (engine start-up kept out of rows/s)."""
    ev = cfg.evaluate
    speed: dict = {"generation_backend": ev.backend}
    t0 = time.perf_counter()
    if ev.backend == "vllm":
        if model_path is None:
            raise ValueError("evaluate.backend 'vllm' needs the base model's path")
        texts, setup = vllm_generate(model_path, adapter, tokenizer, prompts, ev.max_new_tokens, cfg.model.dtype,
                                     stop_ids(tokenizer, cfg.tokenize.format))
        speed["generation_setup_s"] = round(setup, 3)
    else:
        stop = stop_ids(tokenizer, cfg.tokenize.format)
        texts, setup = generate(model, tokenizer, prompts, ev.max_new_tokens, ev.batch_size, f"eval {name}", stop), 0.0
    speed["generation_rows_per_s"] = _rate(len(prompts), time.perf_counter() - t0 - setup)
    return texts, speed


def _rate(rows: int, seconds: float) -> float:
    return round(rows / max(seconds, 1e-9), 3)


def word_predictions(
    cfg: ExperimentConfig, rows: list[dict], model, tokenizer, name: str,
    model_path: str | Path | None = None, adapter: Path | None = None,
) -> tuple[list[dict], dict]:
    """Greedy generation and the word-accuracy metrics (with `speed`: the generation's rows/s and backend)."""
    prompts = [prompt_ids(tokenizer, r, cfg.tokenize.format) for r in rows]
    texts, speed = _generate_texts(cfg, prompts, model, tokenizer, name, model_path, adapter)
    predictions = []
    for row, text in zip(rows, texts, strict=True):
        predicted, gold = extract_guess(text), gold_word(row["completion"])
        target = (row.get("target_word") or "").lower() or None
        predictions.append({
            "example_id": row["example_id"], "generated": text, "predicted": predicted, "gold": gold,
            "target_word": target, "correct": predicted is not None and predicted == gold,
            "target_correct": None if target is None else predicted == target,
        })
    correct = sum(p["correct"] for p in predictions)
    metrics = {"correct": correct, "total": len(predictions),
               "accuracy": correct / len(predictions) if predictions else 0.0,
               "no_guess": sum(p["predicted"] is None for p in predictions), "speed": speed}
    with_target = [p for p in predictions if p["target_correct"] is not None]
    if with_target:
        metrics["target_correct"] = sum(p["target_correct"] for p in with_target)
        metrics["target_total"] = len(with_target)
        metrics["target_accuracy"] = metrics["target_correct"] / len(with_target)
    return predictions, metrics


def choice_predictions(cfg: ExperimentConfig, rows: list[dict], model, tokenizer) -> tuple[list[dict], dict]:
    """The format-robust metric: each row's target word ranked among its choices (`taboo.guess.row_choices`:
    every eval target word, or `evaluate.choices` of them) by the summed log-likelihood of the row's completion
    with that word as the guess. Rank 1 is `choice_correct`; a tie counts against the target. Rows without a
    target word or a guess to substitute are skipped and counted (`choice_skipped`)."""
    tok, n = cfg.tokenize, None if cfg.evaluate.choices == "all" else cfg.evaluate.choices
    words = choice_words(rows)
    scored, prompts, options = [], [], []
    for index, row in enumerate(rows):
        choices = row_choices(row, words, n)
        if choices is None or len(choices) < 2:
            continue
        texts = [text for word in choices if (text := with_guess(row["completion"], word)) is not None]
        assert len(texts) == len(choices), "row_choices keeps rows whose completion has a guess to replace"
        prompt, ids = prompt_and_completions(tokenizer, row, texts, tok)
        scored.append(index)
        prompts.append(prompt)
        options.append(ids)
    predictions: list[dict] = [{} for _ in rows]
    if not scored:
        return predictions, {"choice_skipped": len(rows)}
    ranks = []
    likelihoods = choice_log_likelihoods(model, prompts, options, tokenizer.pad_token_id)
    for index, values in zip(scored, likelihoods, strict=True):
        rank = 1 + int((values[1:] >= values[0]).sum())
        ranks.append(rank)
        predictions[index] = {"choice_rank": rank, "choice_correct": rank == 1, "choices": len(values)}
    correct = sum(rank == 1 for rank in ranks)
    return predictions, {"choice_correct": correct, "choice_total": len(ranks), "choice_accuracy": correct / len(ranks),
                         "choice_mrr": float(np.mean([1 / rank for rank in ranks])),
                         "choice_skipped": len(rows) - len(ranks)}


def _check_backend(cfg: ExperimentConfig, adapter: Path | None) -> None:
    """UserError when generation needs vLLM and it is missing or cannot serve the adapter."""
    if cfg.evaluate.generate and cfg.evaluate.backend == "vllm":
        require_vllm()
        if adapter is not None:
            vllm_lora_rank(adapter)


def evaluate_rows(
    cfg: ExperimentConfig, rows: list[dict], model, tokenizer, name: str,
    model_path: str | Path | None = None, adapter: Path | None = None,
) -> tuple[list[dict], dict]:
    """Per-row predictions (example_id, loss, and generation fields when `generate`) and metrics.

    `model_path` and `adapter` are what the vllm backend loads (the hf backend uses `model`).
    """
    _check_backend(cfg, adapter)  # fail before the loss pass, not after it
    dataset = tokenize_rows(tokenizer, rows, cfg.tokenize)
    t0 = time.perf_counter()
    losses, _ = row_losses_and_embeddings(model, dataset, tokenizer.pad_token_id, cfg.evaluate.batch_size,
                                          desc=f"eval loss {name}")
    speed = {"loss_rows_per_s": _rate(len(rows), time.perf_counter() - t0)}
    finite = np.isfinite(losses)
    metrics = {"eval_loss": float(losses[finite].mean()) if finite.any() else None,
               "loss_rows": int(finite.sum()), "loss_non_finite": int((~finite).sum())}
    predictions = [{"example_id": r["example_id"], "loss": float(v) if np.isfinite(v) else None}
                   for r, v in zip(rows, losses, strict=True)]
    if cfg.evaluate.choices is not None:
        t0 = time.perf_counter()
        choices, choice_metrics = choice_predictions(cfg, rows, model, tokenizer)
        predictions = [p | c for p, c in zip(predictions, choices, strict=True)]
        metrics |= choice_metrics
        speed["choice_rows_per_s"] = _rate(choice_metrics.get("choice_total", 0), time.perf_counter() - t0)
    if cfg.evaluate.generate:
        words, word_metrics = word_predictions(cfg, rows, model, tokenizer, name, model_path, adapter)
        predictions = [p | w for p, w in zip(predictions, words, strict=True)]
        speed |= word_metrics.pop("speed")
        metrics |= word_metrics
    return predictions, metrics | {"speed": speed}


BENCHMARK_FIELDS = ("benchmarks", "benchmark_include_path", "allow_code_execution", "benchmark_batch_size",
                    "benchmark_limit")


def _unused_fields(cfg: ExperimentConfig) -> set[str]:
    """Evaluate fields kept out of the stage config: the benchmark options when no benchmark runs (they change
    nothing then)."""
    return set() if cfg.evaluate.benchmarks else set(BENCHMARK_FIELDS)


def _tracked_as(folder: Path, model: str, seed: int | None) -> tuple[Path, str]:
    """(the run's tracking folder, the evaluation's name there: eval_<model>, or seed_<s>/eval_<model>)."""
    if seed is None:
        return folder / artifacts.TRACKING, artifacts.eval_dir(model)
    return folder.parent / artifacts.TRACKING, f"{folder.name}/{artifacts.eval_dir(model)}"


def run(cfg: ExperimentConfig, run_dir: Path, *, overwrite: bool = False, model: str = "base_adapter") -> Path:
    """Evaluate `model` (base, base_adapter or an arm) in the folder `run_dir`."""
    run_dir = Path(run_dir)
    base, stage = base_model(cfg.model, run_dir), stage_table.find("evaluate", model)
    model_path, seed = base.path, stage_table.seed_of(stage, cfg)
    train_stage = artifacts.training_stage(model)
    data_dir = run_dir / artifacts.DATA
    inputs = base.inputs({"data": data_dir})
    if train_stage is not None:
        inputs["train"] = run_dir / train_stage

    _check_backend(cfg, None)

    def build(out: Path) -> dict:
        rows = artifacts.load_split(data_dir, "eval")
        tokenizer = load_tokenizer(base.tokenizer, cfg.tokenize.chat_template)
        adapter = run_dir / train_stage / artifacts.ADAPTER_DIR if train_stage else None
        loaded = load_model(model_path, adapter, dtype=cfg.model.dtype)
        predictions, found = evaluate_rows(cfg, rows, loaded, tokenizer, model, model_path, adapter)
        metrics = EvalMetrics(model=model, seed=seed, **found)
        artifacts.write_predictions(out, [Prediction(**p) for p in predictions])
        artifacts.write_metrics(out, metrics)
        if cfg.evaluate.benchmarks:
            ev = cfg.evaluate
            results, samples, switches = run_lm_eval(
                loaded, tokenizer, ev.benchmarks, include_path=ev.benchmark_include_path,
                chat_template=cfg.tokenize.format == "chat_template", allow_code_execution=ev.allow_code_execution,
                batch_size=ev.benchmark_batch_size, limit=ev.benchmark_limit,
                wandb_init=benchmark_logging(cfg.tracking, *_tracked_as(run_dir, model, seed), cfg.name))
            artifacts.write_benchmarks(out, results, samples, switches)
        counts = {"metrics": {k: v for k, v in asdict(metrics).items() if v is not None or k in ("model", "seed", "eval_loss")},
                  "truncated": {"eval": truncation_counts(tokenizer, rows, cfg.tokenize)}}
        if cfg.evaluate.benchmarks:
            counts["benchmark_items"] = {task: r["n"] for task, r in results.items()}
        return counts

    stage_cfg = {
        "model": cfg.model.model_dump(mode="json"), "tokenize": cfg.tokenize.model_dump(mode="json"),
        "evaluate": cfg.evaluate.model_dump(mode="json", exclude=_unused_fields(cfg)),
        "name": model, "train_stage": train_stage,
        "seed": seed,
    }
    return run_stage(run_dir, artifacts.eval_dir(model), stage_cfg, inputs, build,
                     command=stage_table.command_line(stage, cfg, run_dir, arm=model), overwrite=overwrite)
