"""Config sections `train` and `arm_train`: the LoRA shape and the training recipe of the base adapter and
of each arm. Validated data only; `arm_train` inheriting `train`'s keys happens in `parse_config`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from playpen_attribution.core.section import Section


class LoraSettings(Section):
    """The LoRA adapter (PEFT)."""

    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names that get LoRA matrices.",
    )
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="Modules trained in full next to LoRA (e.g. embed_tokens, lm_head). Bergson tracks only LoRA "
        "modules, so the attribute stage refuses such an adapter unless attribute.allow_untracked_modules.",
    )


class TrainConfig(Section):
    """LoRA supervised fine-tuning through TRL's SFTTrainer, completion-only loss."""

    lora: LoraSettings = Field(default_factory=LoraSettings, description="The adapter's shape.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate.")
    epochs: float = Field(3, gt=0, description="Passes over the data (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Optimizer steps; -1 = use epochs.")
    save_steps: int = Field(
        0, ge=0, description="Checkpoint every N optimizer steps inside the stage's .part folder, so a killed "
        "training resumes from the last one; 0 = no checkpoints (a killed training restarts from step 0, which "
        "reproduces the uninterrupted run exactly; a resumed one is close but not yet bit-identical in sweeps).",
    )
    batch_size: int = Field(1, gt=0, description="Rows per device batch.")
    auto_batch: bool = Field(
        True,
        description="On a GPU: raise batch_size to the largest power of two dividing batch_size*grad_accum whose "
        "forward+backward on the longest rows fits in memory, and lower grad_accum to keep rows per optimizer "
        "step (so the same rows per step, fewer, larger batches); no effect on CPU or when grad_accum is 1.",
    )
    batching: Literal["padded", "length_grouped", "padding_free"] = Field(
        "length_grouped",
        description="padded: random batches padded to the longest row; length_grouped: batches of similar "
        "length (less padding, same loss); padding_free: rows concatenated with position_ids (fastest with "
        "flash attention).",
    )
    dataloader_workers: int = Field(2, ge=0, description="Worker processes feeding the GPU (0 on CPU).")
    grad_accum: int = Field(16, gt=0, description="Gradient accumulation steps.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps spent warming up.")
    scheduler: str = Field(
        "cosine", description="transformers lr scheduler name (cosine, linear, constant, constant_with_warmup, "
        "cosine_with_min_lr: cosine down to a floor, min_lr_ratio...).",
    )
    min_lr_ratio: float = Field(
        0.0, ge=0, lt=1, description="cosine_with_min_lr only: the floor the rate decays to, as a share of the peak "
        "(a schedule with a floor keeps a training that learns late from ending with a rate near zero).",
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    seed: int = Field(42, description="Training seed (data order, dropout, LoRA init).")
    merge: bool = Field(False, description="Also write the adapter merged into a full model.")
    keep_best: Literal["validation", "eval"] | None = Field(
        None, description="Keep the epoch checkpoint with the lowest loss on this split: validation (held out of the "
        "reported eval, data.validation_fraction) or eval (upstream's choice: selection then leaks into the reported "
        "number); null = the last step's weights.",
    )

    @model_validator(mode="after")
    def _floor_needs_its_scheduler(self) -> TrainConfig:
        if self.min_lr_ratio > 0 and self.scheduler != "cosine_with_min_lr":
            raise ValueError(f"min_lr_ratio = {self.min_lr_ratio} applies to scheduler cosine_with_min_lr only "
                             f"(scheduler is {self.scheduler!r})")
        return self


class ArmTrainConfig(TrainConfig):
    """Training of each arm: the training recipe plus where its adapter starts. A key it does not set is
    `train`'s (`parse_config`)."""

    init: Literal["base", "base_adapter"] = Field(
        "base",
        description="base: a fresh LoRA (this section's `lora`) on the base model, as the published runs train "
        "each arm; base_adapter: continue the base adapter trained on the whole pool (its LoRA shape is kept).",
    )
