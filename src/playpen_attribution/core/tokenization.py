"""The one tokenization rule: a (prompt, completion) row -> `input_ids` and `labels`.

Training, Bergson scoring, loss evaluation and SAE extraction all call `tokenize_row`, so
attribution sees exactly the tokens the fine-tune trained on.

- `format="raw"`: the prompt text as is, tokenized with the tokenizer's special tokens (e.g. BOS).
  The completion follows it the way `ROLE: content` turns are written in the history: after one
  space, unless the prompt already ends in whitespace (so `...ASSISTANT:` + `GUESS: x` is tokenized
  as `...ASSISTANT: GUESS: x`, exactly as an earlier assistant turn of the same prompt was).
- `format="chat_template"`: the prompt becomes the user turn of the tokenizer's chat template (or
  the row's `prompt_messages`, when a source kept them) with the generation prompt appended; the
  template already carries the special tokens. `tokenize.chat_template` supplies a template (a Jinja
  file, or a shipped name such as `gemma3`) when the tokenizer has none (`core.modeling.load_tokenizer`).
- The completion is tokenized without special tokens and closed by its turn's end token
  (`turn_end_id`): EOS for `raw`; for `chat_template` the token the template closes an assistant turn
  with (`<end_of_turn>` for Gemma, EOS for a template that ends turns with it). Generation stops at
  EOS and at that token (`stop_ids`).
- Labels are -100 on every prompt position and equal the ids on the completion and its end token.
  `supervise="all_assistant_turns"` also supervises every earlier assistant turn of a multi-turn row
  (`prompt_messages`): its content and, for `chat_template`, the end token the template closes it
  with. The spans come from the template itself: an assistant turn starts where the template's text
  for the turns before it plus the generation prompt ends, and stops where its text for the turns
  through it ends (trailing whitespace excluded); a prompt token is supervised when it starts inside
  a span (offsets from the fast tokenizer). For `raw`, each message's content is found in the prompt
  text in order and an assistant's content is its span (raw history has no turn-end token).
- Truncation: when prompt + completion + end exceeds `max_length`, prompt tokens are dropped from
  the left (the leading special token, when there is one, is kept); if the completion + end alone
  does not fit, the completion's tail is cut, and the end token stays last.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from playpen_attribution.core.section import Section
from playpen_attribution.errors import UserError

IGNORE_INDEX = -100


class TokenizeConfig(Section):
    """The one tokenization rule shared by training, attribution, evaluation and SAE extraction."""

    format: Literal["raw", "chat_template"] = Field(
        "raw", description="raw: prompt text as is; chat_template: the prompt as a user turn of the tokenizer's template."
    )
    max_length: int = Field(
        256, gt=1, description="Longest row in tokens; longer rows lose prompt tokens from the left."
    )
    chat_template: str | None = Field(
        None,
        description="Chat template for format chat_template when the tokenizer has none (e.g. base weights): a "
        "Jinja file, or a shipped name (gemma3); null = the tokenizer's own.",
    )
    supervise: Literal["last_turn", "all_assistant_turns"] = Field(
        "last_turn",
        description="last_turn: only the completion is supervised; all_assistant_turns: every assistant turn of "
        "a multi-turn row (its prompt_messages) too.",
    )


def check_tokenizer(tokenizer, where: str = "tokenizer") -> None:
    """Fail early on tokenizers the rule cannot use."""
    if tokenizer.eos_token_id is None:
        raise UserError(f"{where} has no EOS token (eos_token is None); set one in its tokenizer_config.json")


_MARK = "Qx7"
"""Assistant content used to find what the chat template writes after an assistant turn."""


def turn_end_id(tokenizer, fmt: str) -> int:
    """The token that closes a supervised completion: EOS for raw; for chat_template, the first token
    the template writes after an assistant turn's content (EOS when it writes nothing but whitespace).
    Computed once per tokenizer."""
    if fmt != "chat_template":
        return tokenizer.eos_token_id
    cached = getattr(tokenizer, "_playpen_turn_end", None)
    if cached is not None:
        return cached
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _MARK}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    after = text[text.rindex(_MARK) + len(_MARK):]
    ids = [i for i in tokenizer(after, add_special_tokens=False)["input_ids"] if tokenizer.decode([i]).strip()]
    end = ids[0] if ids else tokenizer.eos_token_id
    tokenizer._playpen_turn_end = end
    return end


def stop_ids(tokenizer, fmt: str) -> list[int]:
    """Token ids generation stops at: EOS and, for chat_template, the template's turn end."""
    return list(dict.fromkeys([tokenizer.eos_token_id, turn_end_id(tokenizer, fmt)]))


def _prompt_text(tokenizer, row: dict, fmt: str) -> tuple[str, list[dict] | None]:
    """The prompt as the text that is tokenized, and the messages it was rendered from (chat_template)."""
    prompt = row.get("prompt")
    if not isinstance(prompt, str):
        raise UserError(f"row {row.get('example_id')!r}: 'prompt' must be a string")
    if fmt == "raw":
        return prompt, None
    if fmt == "chat_template":
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("tokenize.format is 'chat_template' but the tokenizer has no chat template")
        messages = row.get("prompt_messages") or [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), messages
    raise UserError(f"tokenize.format = {fmt!r}: expected 'raw' or 'chat_template'")


def prompt_ids(tokenizer, row: dict, fmt: str) -> list[int]:
    """Token ids of a row's prompt under the given format (what generation is fed, too)."""
    text, _ = _prompt_text(tokenizer, row, fmt)
    return list(tokenizer(text, add_special_tokens=fmt == "raw")["input_ids"])


def assistant_spans(tokenizer, row: dict, fmt: str, text: str) -> list[tuple[int, int]]:
    """Character spans of the earlier assistant turns inside the prompt `text` (see the module doc)."""
    where = f"row {row.get('example_id')!r}"
    messages = row.get("prompt_messages") or []
    spans = []
    if fmt == "raw":
        cursor = 0
        for msg in messages:
            content = msg["content"].strip()
            start = text.find(content, cursor)
            if start < 0:
                raise UserError(f"{where}: prompt_messages content {content[:40]!r} is not in the raw prompt text")
            if msg["role"] == "assistant" and content:
                spans.append((start, start + len(content)))
            cursor = start + len(content)
        return spans
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True, tokenize=False)
        through = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False).rstrip()
        if not (text.startswith(before) and text.startswith(through) and len(through) > len(before)):
            raise UserError(
                f"{where}: the chat template does not render message {i + 1} (an assistant turn) as a prefix of "
                "the whole prompt; tokenize.supervise: all_assistant_turns needs a template that renders turns in order"
            )
        spans.append((len(before), len(through)))
    return spans


def _prompt_ids_labels(tokenizer, row: dict, fmt: str, supervise: str) -> tuple[list[int], list[int]]:
    """Prompt ids and their labels: all -100, or each earlier assistant turn's tokens (`all_assistant_turns`)."""
    if supervise not in ("last_turn", "all_assistant_turns"):
        raise UserError(f"tokenize.supervise = {supervise!r}: expected 'last_turn' or 'all_assistant_turns'")
    if supervise == "last_turn" or not row.get("prompt_messages"):
        ids = prompt_ids(tokenizer, row, fmt)
        return ids, [IGNORE_INDEX] * len(ids)
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("tokenize.supervise: all_assistant_turns needs a fast tokenizer (token offsets); "
                        f"{type(tokenizer).__name__} is not one")
    text, _ = _prompt_text(tokenizer, row, fmt)
    enc = tokenizer(text, add_special_tokens=fmt == "raw", return_offsets_mapping=True)
    spans = assistant_spans(tokenizer, row, fmt, text)
    ids = list(enc["input_ids"])
    labels = [
        t if any(a <= start < b for a, b in spans) and end > start else IGNORE_INDEX
        for t, (start, end) in zip(ids, enc["offset_mapping"], strict=True)
    ]
    return ids, labels


def _row_parts(tokenizer, row: dict, fmt: str, supervise: str) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, prompt labels, completion ids ending in the turn's end token), before truncation."""
    check_tokenizer(tokenizer)
    completion = row.get("completion")
    if not isinstance(completion, str) or not completion.strip():
        raise UserError(f"row {row.get('example_id')!r}: empty completion")
    p_ids, p_labels = _prompt_ids_labels(tokenizer, row, fmt, supervise)
    return p_ids, p_labels, _completion_ids(tokenizer, row, [completion], fmt)[0]


def _completion_ids(tokenizer, row: dict, completions: list[str], fmt: str) -> list[list[int]]:
    """Completions' ids after the row's prompt, each closed by the turn's end token (see the module doc)."""
    spaced = fmt == "raw" and row["prompt"] and not row["prompt"][-1].isspace()
    encoded = tokenizer([(" " if spaced else "") + c for c in completions], add_special_tokens=False)["input_ids"]
    return [list(ids) + [turn_end_id(tokenizer, fmt)] for ids in encoded]


def _truncate(tokenizer, p_ids: list[int], p_labels: list[int], c_ids: list[int], max_length: int):
    """The one truncation rule: a completion of max_length or more keeps its first max_length - 2 tokens
    and its end token; the prompt then loses tokens from the left, keeping a leading special token (BOS).
    Returns (p_ids, p_labels, c_ids, completion cut?, prompt cut?)."""
    completion_cut = len(c_ids) >= max_length
    if completion_cut:
        c_ids = c_ids[: max_length - 2] + c_ids[-1:]
    room = max_length - len(c_ids)
    prompt_cut = len(p_ids) > room
    if prompt_cut:
        first = 1 if p_ids and p_ids[0] in tokenizer.all_special_ids else 0
        tail = room - first
        start = len(p_ids) - tail if tail > 0 else len(p_ids)
        p_ids = p_ids[:first] + p_ids[start:]
        p_labels = p_labels[:first] + p_labels[start:]
    return p_ids, p_labels, c_ids, completion_cut, prompt_cut


def tokenize_row(tokenizer, row: dict, rule: TokenizeConfig) -> dict[str, list[int]]:
    """`input_ids` and `labels` under `rule` (prompt masked with -100 outside supervised assistant turns, the turn's
    end token appended, one truncation rule: `_truncate`)."""
    parts = _row_parts(tokenizer, row, rule.format, rule.supervise)
    p_ids, p_labels, c_ids, _, _ = _truncate(tokenizer, *parts, rule.max_length)
    return {"input_ids": p_ids + c_ids, "labels": p_labels + c_ids}


def prompt_and_completions(
    tokenizer, row: dict, completions: list[str], rule: TokenizeConfig
) -> tuple[list[int], list[list[int]]]:
    """One row's prompt ids and the ids of several alternative completions (each closed by the turn's end
    token), as `tokenize_row` would tokenize the row with each of them. The prompt is truncated once, by the
    one rule, for the longest alternative, so every alternative continues the same prompt."""
    p_ids, p_labels, _ = _row_parts(tokenizer, row | {"completion": completions[0]}, rule.format, rule.supervise)
    options = _completion_ids(tokenizer, row, completions, rule.format)
    p_ids, _, _, _, _ = _truncate(tokenizer, p_ids, p_labels, max(options, key=len), rule.max_length)
    room = rule.max_length - len(p_ids)
    return p_ids, [c if len(c) <= room else c[: room - 1] + c[-1:] for c in options]


def tokenize_rows(tokenizer, rows: list[dict], rule: TokenizeConfig):
    """A `datasets.Dataset` with example_id, input_ids, labels (under `rule`), in the rows' order."""
    from datasets import Dataset

    check_tokenizer(tokenizer)
    ids, inputs, labels = [], [], []
    for row in rows:
        tok = tokenize_row(tokenizer, row, rule)
        ids.append(row["example_id"])
        inputs.append(tok["input_ids"])
        labels.append(tok["labels"])
    return Dataset.from_dict({"example_id": ids, "input_ids": inputs, "labels": labels})


def truncation_counts(tokenizer, rows: list[dict], rule: TokenizeConfig) -> dict[str, int]:
    """How many rows the truncation rule (`_truncate`) cuts: {"completion": rows whose completion is cut,
    "prompt": rows whose prompt loses tokens}; the stages record it in their manifests."""
    cut = {"completion": 0, "prompt": 0}
    for row in rows:
        parts = _row_parts(tokenizer, row, rule.format, rule.supervise)
        *_, completion_cut, prompt_cut = _truncate(tokenizer, *parts, rule.max_length)
        cut["completion"] += completion_cut
        cut["prompt"] += prompt_cut
    return cut
