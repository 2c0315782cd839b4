"""Stage `train`: LoRA supervised fine-tuning through PEFT + TRL's SFTTrainer.

Base adapter (`train_base/`): reads `data/` (the whole `train_base` pool) and the base model,
starts a fresh LoRA adapter and trains it with `cfg.train`.
Arm (`train_<arm>/`, in a seed's folder): reads `data/` and `select/` (the arm's example_ids, from
the split its selection names: the pool, or the candidates for a predictor arm) and trains on the arm's rows only with `cfg.arm_train`: by default (`init: base`, as the published runs)
a fresh LoRA of `arm_train.lora` on the base model; with `init: base_adapter` it continues
`train_base/adapter` instead (which it then also reads). One training path for all of them.

Rows are tokenized by `tokenization.tokenize_rows` and handed to the trainer as `input_ids` +
`labels`, so the loss is completion-only and the trainer sees exactly the ids attribution scores.
Writes `adapter/` (PEFT folder naming its base model), `train_log.json` (loss per logging step),
optionally `merged/` (adapter merged into a full model), `config.yaml`, `manifest.json`.

Checkpoints (opt-in, `train.save_steps: N`): the trainer saves every N optimizer steps
into `_trainer/` inside the stage's `.part` folder, which `run_stage` keeps for a rerun with the same
fingerprint (`resumable`); a rerun after a kill resumes from the last checkpoint (logged with its step,
`resumed_from_step` in the manifest) and `_trainer/` is removed once the adapter is saved; each epoch's
order of rows is drawn from (seed, epoch) alone (`EpochOrder`), so a resumed build ends with the
uninterrupted one's adapter wherever in an epoch it was killed. The
trainer's per-step metric dicts go to `train_log.json`, not the console (its progress bar stays).

Batch size on a GPU (`auto_batch`, on by default): the per-device batch is raised to the largest
power of two dividing batch_size * grad_accum whose forward + backward on the longest rows fits in
memory (probed with the real LoRA model, room for the optimizer state held back), and grad_accum is
lowered to keep the rows per optimizer step. On CPU nothing is probed or changed. The manifest
records the `batch_size` and `grad_accum` actually used, and `train_runtime_s` and
`train_tokens_per_s` (input_ids tokens processed per second of `trainer.train()`).

`train.keep_best: validation | eval` evaluates the loss on that split of `data/` after every epoch,
saves each epoch's checkpoint and writes the one with the lowest loss as the adapter (the manifest's
`keep_best`: split, best step and loss, every epoch's loss).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playpen_attribution.config import ExperimentConfig, TrainConfig
from playpen_attribution.core.adapters import set_base_model
from playpen_attribution.core.batch_sizing import (
    largest_fitting,
    power_of_two_divisors,
    split_batch,
)
from playpen_attribution.core.modeling import device, load_model, load_tokenizer, turn_end_check
from playpen_attribution.core.tokenization import tokenize_rows
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger
from playpen_attribution.run import artifacts, stage_table
from playpen_attribution.run.model_paths import adapter_base, base_model
from playpen_attribution.run.stage_folder import run_stage
from playpen_attribution.run.tracking import trainer_reporting


def sft_config(train: TrainConfig, output_dir: Path, n_rows: int, report: dict | None = None):
    """The SFTConfig for one training run: checkpoints every `train.save_steps` (0: none; the last one
    kept) in `output_dir`, no hub; `report`: the tracking keywords (`run.tracking.trainer_reporting`),
    default no external loggers."""
    from trl import SFTConfig

    on_gpu = device() == "cuda"
    steps_per_epoch = max(1, n_rows // (train.batch_size * train.grad_accum))
    return SFTConfig(
        output_dir=str(output_dir),
        learning_rate=train.learning_rate,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        warmup_steps=train.warmup_ratio,  # a float < 1 is a share of the steps in transformers 5
        lr_scheduler_type=train.scheduler,
        lr_scheduler_kwargs={"min_lr_rate": train.min_lr_ratio} if train.scheduler == "cosine_with_min_lr" else None,
        weight_decay=train.weight_decay,
        seed=train.seed,
        data_seed=train.seed,
        max_length=None,  # rows arrive truncated by the one tokenization rule; TRL must not cut again
        activation_checkpointing=False,  # 0.56x -> 0.98x of a raw loop on an H200; LoRA on 1B fits without it
        bf16=on_gpu,
        use_cpu=not on_gpu,
        train_sampling_strategy="group_by_length" if train.batching == "length_grouped" else "random",
        padding_free=train.batching == "padding_free",
        save_strategy="epoch" if train.keep_best else "steps" if train.save_steps else "no",
        save_steps=train.save_steps or 500,  # unused with save_strategy "no" or "epoch"
        save_total_limit=1,  # with keep_best the best checkpoint is kept beside the newest
        eval_strategy="epoch" if train.keep_best else "no",
        load_best_model_at_end=train.keep_best is not None,
        metric_for_best_model="eval_loss", greater_is_better=False,
        **(report or {"report_to": "none"}),
        disable_tqdm=False,  # its default follows the transformers log level, which importing SAELens raises:
                             # then a PrinterCallback prints every metric dict (they go to train_log.json)
        logging_steps=max(1, steps_per_epoch // 4),
        dataloader_num_workers=train.dataloader_workers if on_gpu else 0,
    )


def new_adapter(model, train: TrainConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=train.lora.r,
        lora_alpha=train.lora.alpha,
        lora_dropout=train.lora.dropout,
        target_modules=list(train.lora.target_modules),
        modules_to_save=list(train.lora.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


class EpochOrder:
    """Transformers' length-grouped sampler with each epoch's order drawn from its own generator, seeded by
    (seed, epoch), instead of from torch's global random state.

    The trainer draws an epoch's order when the epoch starts. Resuming inside an epoch (a checkpoint), it
    starts that epoch from a fresh process's random state and restores the checkpoint's only after skipping
    the batches already trained, so with the global state a resumed epoch after the first got another
    order than the killed build had (a killed `--workers` demo sweep with checkpoints, resumed at steps 8,
    12 and 20: arm eval losses 0.013-0.035 off and accuracies changed; with this, identical). The trainer
    calls `set_epoch` before every epoch, a resumed one included.
    """

    def __init__(self, sampler, seed: int):
        self.sampler, self.seed, self.epoch = sampler, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        import numpy as np
        import torch

        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        self.sampler.generator = torch.Generator().manual_seed(seed)
        return iter(self.sampler)


def epoch_seeded_order(trainer, seed: int) -> None:
    """Hand the trainer its length-grouped sampler wrapped in `EpochOrder` (other samplers are left as
    they are: the random one is already seeded per epoch by accelerate)."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    make = trainer._get_train_sampler

    def sampler(train_dataset=None):
        made = make(train_dataset)
        return EpochOrder(made, seed) if isinstance(made, LengthGroupedSampler) else made

    trainer._get_train_sampler = sampler


def quiet_progress(trainer) -> None:
    """Keep the trainer's progress bar, cleared when training ends (the stage's 'done' line follows), but
    not the metric dict it prints per logging step (the metrics go to train_log.json)."""
    from tqdm.auto import tqdm
    from transformers.trainer_callback import ProgressCallback

    class BarOnly(ProgressCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # ProgressCallback's, with leave=False
            if state.is_world_process_zero:
                self.training_bar = tqdm(total=state.max_steps, dynamic_ncols=True, leave=False)
            self.current_step = 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            return None

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(BarOnly())


def build_trainer(
    rows: list[dict], model_path: str, train: TrainConfig, cfg: ExperimentConfig, scratch: Path,
    init_adapter: Path | None = None, tokenizer_dir: str | None = None, report: dict | None = None,
    best_rows: list[dict] | None = None,
):
    """The SFTTrainer for `rows`: a fresh adapter, or `init_adapter` continued (tokenizer: `tokenizer_dir`,
    default the model's own, with `tokenize.chat_template`), reporting to `report` (see `sft_config`);
    `best_rows`: the split `train.keep_best` judges each epoch's checkpoint on."""
    import torch
    from trl import SFTTrainer

    from playpen_attribution.core.divergence import DivergenceStop

    if not rows:
        raise UserError("no rows to train on")
    torch.manual_seed(train.seed)
    tokenizer = load_tokenizer(tokenizer_dir or model_path, cfg.tokenize.chat_template)
    dataset = tokenize_rows(tokenizer, rows, cfg.tokenize)
    judged = None if best_rows is None else tokenize_rows(tokenizer, best_rows, cfg.tokenize).remove_columns(
        "example_id")
    if init_adapter is None:
        model = new_adapter(load_model(model_path, dtype=cfg.model.dtype), train)
    else:
        model = load_model(model_path, init_adapter, dtype=cfg.model.dtype, trainable=True)

    def trainer_for(train: TrainConfig):
        trainer = SFTTrainer(
            model=model,
            args=sft_config(train, scratch, len(rows), report),
            train_dataset=dataset.remove_columns("example_id"), eval_dataset=judged,
            processing_class=tokenizer,
        )
        quiet_progress(trainer)
        epoch_seeded_order(trainer, train.seed)
        trainer.add_callback(DivergenceStop(train.seed))  # NaN or exploding loss: one line, no finished folder
        return trainer

    trainer = trainer_for(train)
    if auto_batch_applies(train):
        fitted = fit_batch(trainer, train)
        if (fitted.batch_size, fitted.grad_accum) != (train.batch_size, train.grad_accum):
            trainer = trainer_for(fitted)  # a fresh trainer re-seeds, so the probe leaves no trace
    return trainer


def auto_batch_applies(train: TrainConfig) -> bool:
    """Probe for a larger batch only on a GPU, with auto_batch on and accumulation to trade for it."""
    return train.auto_batch and train.grad_accum > 1 and device() == "cuda"


def batch_candidates(train: TrainConfig, n_rows: int) -> list[int]:
    """Per-device batches to try: powers of two dividing the rows per step above batch_size, and batch_size."""
    rows_per_step = train.batch_size * train.grad_accum
    larger = [d for d in power_of_two_divisors(rows_per_step) if train.batch_size < d <= max(n_rows, 1)]
    return [*larger, train.batch_size]


def fit_batch(trainer, train: TrainConfig) -> TrainConfig:
    """`train` with the largest per-device batch that fits (see `batch_candidates`), same rows per step."""
    dataset = trainer.train_dataset
    lengths = [len(ids) for ids in dataset["input_ids"]]
    longest = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    candidates = batch_candidates(train, len(dataset))
    rows = [dataset[i] for i in longest[: max(candidates)]]
    per_device = largest_fitting(lambda n: probe_batch(trainer, rows[:n]), candidates)
    batch_size, grad_accum = split_batch(train.batch_size * train.grad_accum, per_device)
    logger.info("[train] auto_batch: batch_size %d x grad_accum %d (configured %d x %d; tried %s)",
                batch_size, grad_accum, train.batch_size, train.grad_accum, candidates)
    return train.model_copy(update={"batch_size": batch_size, "grad_accum": grad_accum})


def probe_batch(trainer, rows: list[dict]) -> None:
    """One forward + backward of the trainer's model on `rows` (collated as in training), grads zeroed after.

    Memory for the optimizer state (AdamW: two values per trainable parameter), not yet allocated
    before the first step, is held while probing so the chosen batch leaves room for it.
    """
    import torch

    model = trainer.model
    dev = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    reserve = torch.empty(2 * sum(p.numel() * p.element_size() for p in params), dtype=torch.uint8, device=dev)
    batch = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in trainer.data_collator(rows).items()}
    model.train()
    try:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(trainer.args.bf16)):
            loss = model(**batch, use_cache=False).loss
        loss.backward()
    finally:
        model.zero_grad(set_to_none=True)
        del batch, reserve


@contextmanager
def completion_only_head() -> Iterator[None]:
    """While training off CUDA, let TRL's fused LM head project only the labelled positions.

    TRL (1.x, `trainer/utils.py`) scores only the positions with a label where Triton runs and every
    position elsewhere, because on Neuron a varying number of positions would recompile its kernels.
    The loss is the same either way (the other positions are masked out); on a CPU projecting every
    prompt position onto a 262k-token vocabulary is most of a Gemma training step. So off CUDA the
    compact path is switched on for the duration of training (a test holds the loss and gradients
    equal to TRL's own path); if TRL changes the switch, nothing is patched.
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None or device() == "cuda":
        yield
        return
    trl_utils._use_triton = lambda device: True
    try:
        yield
    finally:
        trl_utils._use_triton = original


def last_checkpoint(scratch: Path) -> Path | None:
    """The trainer's newest complete checkpoint in `scratch` (left by a killed build), or None. The
    trainer writes a checkpoint's files one by one and `trainer_state.json` last, so a folder without it
    was cut short by the kill (resuming from it would silently skip the optimizer state); the one before
    it still exists then, because the trainer removes old checkpoints only after a save completes."""
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not scratch.is_dir():
        return None
    complete = [d for d in scratch.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                if d.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-").isdigit() and _readable(d / TRAINER_STATE_NAME)]
    return max(complete, key=lambda d: int(d.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")), default=None)


def _readable(state: Path) -> bool:
    """A checkpoint's trainer_state.json is there and parses (a damaged one: the checkpoint is skipped, said so)."""
    import json

    if not state.is_file():
        return False
    try:
        json.loads(state.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        logger.warning("[train] %s is damaged; not resuming from %s", state, state.parent.name)
        return False
    return True


def train_rows(
    rows: list[dict], model_path: str, train: TrainConfig, cfg: ExperimentConfig, out: Path,
    init_adapter: Path | None = None, tokenizer_dir: str | None = None, report: dict | None = None,
    best_rows: list[dict] | None = None,
) -> dict:
    """Train on `rows` and write the adapter (and optionally a merged model) into `out`; with `best_rows`
    (`train.keep_best`) the adapter is the epoch checkpoint with the lowest loss on them."""
    scratch = out / artifacts.TRAINER_SCRATCH
    trainer = build_trainer(rows, model_path, train, cfg, scratch, init_adapter, tokenizer_dir, report, best_rows)
    turn_end = turn_end_check(trainer.model, trainer.processing_class, cfg.tokenize.format)
    resume = last_checkpoint(scratch)
    if resume is not None:
        logger.info("[train] resuming from %s (step %s of an interrupted build)", resume.name,
                    resume.name.removeprefix("checkpoint-"))
    with completion_only_head():
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    runtime = float(result.metrics["train_runtime"])
    input_tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * float(trainer.state.epoch or 0)
    shutil.rmtree(scratch, ignore_errors=True)
    model, tokenizer = trainer.model, trainer.processing_class
    adapter_dir = out / artifacts.ADAPTER_DIR
    model.save_pretrained(str(adapter_dir))
    set_base_model(adapter_dir, adapter_base(cfg.model.base, model_path, adapter_dir))  # relative when in the run
    if train.merge:
        merged = model.merge_and_unload()
        merged.save_pretrained(str(out / artifacts.MERGED_DIR))
        tokenizer.save_pretrained(str(out / artifacts.MERGED_DIR))
    artifacts.write_train_log(out, [e for e in trainer.state.log_history if "loss" in e])
    tokens = sum(sum(1 for t in labels if t != -100) for labels in trainer.train_dataset["labels"])
    return {
        "rows": len(rows),
        "completion_tokens": tokens,
        "train_loss": round(float(result.training_loss), 6),
        "steps": trainer.state.global_step,
        "init_adapter": os.path.relpath(init_adapter, out.parent) if init_adapter else None,
        "resumed_from_step": int(resume.name.removeprefix("checkpoint-")) if resume else None,
        "batch_size": trainer.args.per_device_train_batch_size,
        "grad_accum": trainer.args.gradient_accumulation_steps,
        "train_runtime_s": round(runtime, 3),
        "train_tokens_per_s": round(input_tokens / runtime, 1) if runtime > 0 else None,
        "tokens_processed": int(input_tokens),
        "turn_end_token": turn_end,
        "keep_best": None if best_rows is None else {
            "split": train.keep_best, "rows": len(best_rows), "best_eval_loss": trainer.state.best_metric,
            "best_step": trainer.state.best_global_step,
            "eval_losses": {e["step"]: e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e}},
    }


def run(cfg: ExperimentConfig, run_dir: Path, *, overwrite: bool = False, arm: str | None = None) -> Path:
    """Train the base adapter (`arm=None`) or one arm of the seed whose folder `run_dir` is."""
    run_dir = Path(run_dir)
    base, stage = base_model(cfg.model, run_dir), stage_table.find("train", arm)
    data_dir = run_dir / artifacts.DATA
    inputs = base.inputs({"data": data_dir})
    command = stage_table.command_line(stage, cfg, run_dir, arm=arm)
    if arm is None:
        name, train, init = artifacts.TRAIN_BASE, cfg.train, None
    else:
        name, train = artifacts.train_arm_dir(arm), cfg.arm_train
        inputs["select"] = run_dir / artifacts.SELECT
        init = None  # init: base -- a fresh LoRA of arm_train.lora on the base model
        if cfg.arm_train.init == "base_adapter":
            init = run_dir / artifacts.TRAIN_BASE / artifacts.ADAPTER_DIR
            inputs["train_base"] = run_dir / artifacts.TRAIN_BASE

    def build(out: Path) -> dict:
        pool = artifacts.load_split(data_dir, "train_base")
        if arm is not None:
            selections = artifacts.load_selections(run_dir / artifacts.SELECT)
            if arm not in selections:
                raise UserError(f"arm {arm!r} not in {run_dir / artifacts.SELECT} (have: {', '.join(selections)})")
            split = selections[arm].split  # the pool, or the candidates for a predictor arm
            by_id = {r["example_id"]: r for r in (pool if split == "train_base" else artifacts.load_split(data_dir, split))}
            pool = [by_id[i] for i in selections[arm].example_ids]
        seeded = stage_table.seed_of(stage, cfg) is not None  # tracked as seed_<s>/<stage> of the whole run
        report = trainer_reporting(cfg.tracking, (run_dir.parent if seeded else run_dir) / artifacts.TRACKING,
                                   f"{run_dir.name}/{name}" if seeded else name, cfg.name)
        best = artifacts.load_split(data_dir, train.keep_best) if train.keep_best else None
        return train_rows(pool, base.path, train, cfg, out, init, base.tokenizer, report, best)

    stage_cfg = {
        "model": cfg.model.model_dump(mode="json"),
        "tokenize": cfg.tokenize.model_dump(mode="json"),
        "train": train.model_dump(mode="json"),
        "arm": arm,
    }
    return run_stage(run_dir, name, stage_cfg, inputs, build, command=command, overwrite=overwrite,
                     resumable=(artifacts.TRAINER_SCRATCH,))
