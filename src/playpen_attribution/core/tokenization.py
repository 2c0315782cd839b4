"""The one tokenization rule: a (prompt, completion) row -> `input_ids` and `labels`.

Training, Bergson scoring, loss evaluation and SAE extraction all call `tokenize_row`, so
attribution sees exactly the tokens the fine-tune trained on.

- `format="raw"`: the prompt text as is, tokenized with the tokenizer's special tokens (e.g. BOS).
- `format="chat_template"`: the prompt becomes the user turn of the tokenizer's chat template (or
  the row's `prompt_messages`, when a source kept them) with the generation prompt appended; the
  template already carries the special tokens.
- The completion is tokenized without special tokens and EOS is appended.
- Labels are -100 on every prompt position and equal the ids on completion + EOS.
- Truncation: when prompt + completion + EOS exceeds `max_length`, prompt tokens are dropped from
  the left (the leading special token, when there is one, is kept); if the completion + EOS alone does
  not fit, the completion's tail is cut, and EOS stays last.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from playpen_attribution.errors import UserError

IGNORE_INDEX = -100


class TokenizeConfig(BaseModel):
    """The one tokenization rule shared by training, attribution, evaluation and SAE extraction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["raw", "chat_template"] = Field(
        "raw", description="raw: prompt text as is; chat_template: the prompt as a user turn of the tokenizer's template."
    )
    max_length: int = Field(
        256, gt=1, description="Longest row in tokens; longer rows lose prompt tokens from the left."
    )


def check_tokenizer(tokenizer, where: str = "tokenizer") -> None:
    """Fail early on tokenizers the rule cannot use."""
    if tokenizer.eos_token_id is None:
        raise UserError(f"{where} has no EOS token (eos_token is None); set one in its tokenizer_config.json")


def prompt_ids(tokenizer, row: dict, fmt: str) -> list[int]:
    """Token ids of a row's prompt under the given format (what generation is fed, too)."""
    prompt = row.get("prompt")
    if not isinstance(prompt, str):
        raise UserError(f"row {row.get('example_id')!r}: 'prompt' must be a string")
    if fmt == "raw":
        return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    if fmt == "chat_template":
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("tokenize.format is 'chat_template' but the tokenizer has no chat template")
        messages = row.get("prompt_messages") or [{"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    raise UserError(f"tokenize.format = {fmt!r}: expected 'raw' or 'chat_template'")


def tokenize_row(tokenizer, row: dict, fmt: str, max_length: int) -> dict[str, list[int]]:
    """`input_ids` and `labels` (prompt masked with -100, EOS appended, one truncation rule)."""
    check_tokenizer(tokenizer)
    completion = row.get("completion")
    if not isinstance(completion, str) or not completion.strip():
        raise UserError(f"row {row.get('example_id')!r}: empty completion")
    p_ids = prompt_ids(tokenizer, row, fmt)
    c_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
    if len(c_ids) >= max_length:
        c_ids = c_ids[: max_length - 2] + [tokenizer.eos_token_id]
    room = max_length - len(c_ids)
    if len(p_ids) > room:
        keep_first = p_ids[:1] if p_ids and p_ids[0] in tokenizer.all_special_ids else []
        tail = room - len(keep_first)
        p_ids = keep_first + (p_ids[len(p_ids) - tail :] if tail > 0 else [])
    input_ids = p_ids + c_ids
    labels = [IGNORE_INDEX] * len(p_ids) + c_ids
    return {"input_ids": input_ids, "labels": labels}


def tokenize_rows(tokenizer, rows: list[dict], fmt: str, max_length: int):
    """A `datasets.Dataset` with example_id, input_ids, labels, in the rows' order."""
    from datasets import Dataset

    check_tokenizer(tokenizer)
    ids, inputs, labels = [], [], []
    for row in rows:
        tok = tokenize_row(tokenizer, row, fmt, max_length)
        ids.append(row["example_id"])
        inputs.append(tok["input_ids"])
        labels.append(tok["labels"])
    return Dataset.from_dict({"example_id": ids, "input_ids": inputs, "labels": labels})
