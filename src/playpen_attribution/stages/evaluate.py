"""Stage `evaluate`: greedy generation on the eval split, `GUESS:` extraction, word accuracy.

Reads `data/` (the eval split), the base model, and for anything but `base` the adapter of a
training stage (`train_base/` for `base_adapter`, `train_<arm>/` for an arm). Prompts are the prompt
part of the one tokenization function, batched with left padding. Writes `eval_<name>/`:
`predictions.jsonl` (example_id, generated text, predicted word, gold word, target word, correct)
and `metrics.json` (correct, total, accuracy; target-word accuracy where targets are known).
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from playpen_attribution import artifacts
from playpen_attribution.config import ExperimentConfig
from playpen_attribution.guess import extract_guess, gold_word
from playpen_attribution.jsonl import write_jsonl
from playpen_attribution.modeling import load_model, load_tokenizer
from playpen_attribution.stage_folder import run_stage
from playpen_attribution.tokenization import prompt_ids


def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int, desc: str) -> list[str]:
    """Greedy continuations of pre-tokenized prompts, batched with left padding, in input order."""
    import torch

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    model.eval()
    dev = next(model.parameters()).device
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
        idx = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new_tokens,
                do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
        for row, i in enumerate(idx):
            out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
    return out


def evaluate_rows(cfg: ExperimentConfig, rows: list[dict], model, tokenizer, name: str) -> tuple[list[dict], dict]:
    prompts = [prompt_ids(tokenizer, r, cfg.tokenize.format) for r in rows]
    texts = generate(model, tokenizer, prompts, cfg.evaluate.max_new_tokens, cfg.evaluate.batch_size, f"eval {name}")
    predictions = []
    for row, text in zip(rows, texts):
        predicted, gold = extract_guess(text), gold_word(row["completion"])
        target = (row.get("target_word") or "").lower() or None
        predictions.append({
            "example_id": row["example_id"], "generated": text, "predicted": predicted, "gold": gold,
            "target_word": target, "correct": predicted is not None and predicted == gold,
            "target_correct": None if target is None else predicted == target,
        })
    correct = sum(p["correct"] for p in predictions)
    metrics = {"model": name, "correct": correct, "total": len(predictions),
               "accuracy": correct / len(predictions) if predictions else 0.0,
               "no_guess": sum(p["predicted"] is None for p in predictions)}
    with_target = [p for p in predictions if p["target_correct"] is not None]
    if with_target:
        metrics["target_correct"] = sum(p["target_correct"] for p in with_target)
        metrics["target_total"] = len(with_target)
        metrics["target_accuracy"] = metrics["target_correct"] / len(with_target)
    return predictions, metrics


def run(
    cfg: ExperimentConfig, run_dir: Path, model_path: str, name: str, train_stage: str | None,
    overwrite: bool = False,
) -> Path:
    """Evaluate the base model (`train_stage=None`) or the adapter of `train_stage` under `name`."""
    run_dir = Path(run_dir)
    data_dir = run_dir / artifacts.DATA
    inputs = {"data": data_dir}
    if cfg.model.base == "tiny":
        inputs["base_model"] = run_dir / artifacts.BASE_MODEL
    if train_stage is not None:
        inputs["train"] = run_dir / train_stage

    def build(out: Path) -> dict:
        rows = artifacts.load_split(data_dir, "eval")
        tokenizer = load_tokenizer(model_path)
        adapter = run_dir / train_stage / artifacts.ADAPTER_DIR if train_stage else None
        model = load_model(model_path, adapter, dtype=cfg.model.dtype)
        predictions, metrics = evaluate_rows(cfg, rows, model, tokenizer, name)
        write_jsonl(out / artifacts.PREDICTIONS_FILE, predictions)
        (out / artifacts.METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n")
        return {"metrics": metrics}

    stage_cfg = {
        "model": cfg.model.model_dump(mode="json"), "tokenize": cfg.tokenize.model_dump(mode="json"),
        "evaluate": cfg.evaluate.model_dump(mode="json"), "name": name, "train_stage": train_stage,
    }
    return run_stage(run_dir, artifacts.eval_dir(name), stage_cfg, inputs, build, overwrite)
