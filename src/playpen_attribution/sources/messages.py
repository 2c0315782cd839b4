"""Turn a chat (a list of {role, content} messages) into a prompt/completion pair.

The completion is the content of the last assistant message; the prompt is every message before it,
rendered as raw text (`render_raw`, what the published playpen runs trained on). Sources also keep
those earlier messages as `prompt_messages`; whether the chat template is applied is decided once,
by `tokenize.format` in `playpen_attribution.core.tokenization`, never by a source.
"""

from __future__ import annotations

from playpen_attribution.errors import UserError


def check_messages(messages: object, where: str) -> list[dict]:
    """The messages as a list of {role, content} dicts with string values, or a UserError naming `where`."""
    if not isinstance(messages, list):
        raise UserError(f"{where}: 'messages' must be a list of {{role, content}}, got {type(messages).__name__}")
    for i, msg in enumerate(messages, start=1):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or not isinstance(msg.get("content"), str):
            raise UserError(f"{where}: message {i} must have string 'role' and 'content', got {msg!r}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def render_raw(messages: list[dict]) -> str:
    """`ROLE: content` blocks (role upper-cased) joined by blank lines."""
    return "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages).strip()


def render_raw_prompt(messages: list[dict]) -> str:
    """The earlier turns (`render_raw`) and the cue of the assistant turn that follows them."""
    history = render_raw(messages)
    return (history + "\n\n" if history else "") + "ASSISTANT:"


def split_at_last_assistant(messages: list[dict], where: str) -> tuple[list[dict], str]:
    """(messages before the last assistant turn, that turn's content stripped); `where` names the row."""
    messages = check_messages(messages, where)
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "assistant":
            return messages[:i], messages[i]["content"].strip()
    raise UserError(f"{where}: no assistant message to use as the completion")


def merge_consecutive(messages: list[dict]) -> list[dict]:
    """Join consecutive messages of one role with a blank line (chat templates want alternating roles)."""
    merged: list[dict] = []
    for msg in messages:
        if merged and merged[-1]["role"] == msg["role"]:
            merged[-1] = {"role": msg["role"], "content": merged[-1]["content"] + "\n\n" + msg["content"]}
        else:
            merged.append(dict(msg))
    return merged
