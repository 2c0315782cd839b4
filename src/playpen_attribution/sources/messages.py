"""Turn a chat (a list of {role, content} messages) into a prompt/completion pair.

The completion is the content of the last assistant message; the prompt is every message before it,
rendered either as raw text (`render_raw`, what the published playpen runs trained on) or with the
tokenizer's chat template (`render_prompt(..., "chat_template", tokenizer)`).
"""

from __future__ import annotations

from typing import Literal

from playpen_attribution.errors import UserError

Format = Literal["raw", "chat_template"]


def check_messages(messages: object, where: str) -> list[dict]:
    """The messages as a list of {role, content} dicts with string values, or a UserError naming `where`."""
    if not isinstance(messages, list):
        raise UserError(f"{where}: 'messages' must be a list of {{role, content}}, got {type(messages).__name__}")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or not isinstance(msg.get("content"), str):
            raise UserError(f"{where}: message {i} must have string 'role' and 'content', got {msg!r}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def render_raw(messages: list[dict]) -> str:
    """`ROLE: content` blocks (role upper-cased) joined by blank lines."""
    return "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages).strip()


def split_at_last_assistant(messages: list[dict], where: str) -> tuple[list[dict], str]:
    """(messages before the last assistant turn, that turn's content stripped); `where` names the row."""
    messages = check_messages(messages, where)
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "assistant":
            return messages[:i], messages[i]["content"].strip()
    raise UserError(f"{where}: no assistant message to use as the completion")


def render_prompt(messages: list[dict], fmt: Format, tokenizer=None, field: str = "format") -> str:
    """The prompt text under `fmt`; `field` names the config field in errors."""
    if fmt == "raw":
        return render_raw(messages)
    if tokenizer is None:
        raise UserError(f"{field} = 'chat_template' needs the run's tokenizer (none was passed)")
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{field} = 'chat_template' but the tokenizer has no chat template")
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def merge_consecutive(messages: list[dict]) -> list[dict]:
    """Join consecutive messages of one role with a blank line (chat templates want alternating roles)."""
    merged: list[dict] = []
    for msg in messages:
        if merged and merged[-1]["role"] == msg["role"]:
            merged[-1] = {"role": msg["role"], "content": merged[-1]["content"] + "\n\n" + msg["content"]}
        else:
            merged.append(dict(msg))
    return merged
