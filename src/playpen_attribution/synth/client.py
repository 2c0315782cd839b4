"""A chat client for OpenAI-compatible APIs with our own retries, backoff, timeout and key handling.

The API key is read from the environment and kept only inside the `openai.OpenAI` object; every
message this module produces passes through `redact`, so the key never reaches a log, an error or an
output file.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import openai

from playpen_attribution.errors import UserError
from playpen_attribution.log import logger

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
OPENAI_BASE_URL = "https://api.openai.com/v1"
MAX_BACKOFF_S = 60.0
"""No single wait between retries is longer than this, whatever the base delay and Retry-After."""


@dataclass(frozen=True)
class ApiSettings:
    """Where to send requests and with which key (never logged; see `describe`)."""

    base_url: str
    """The OpenAI-compatible endpoint, e.g. https://openrouter.ai/api/v1."""
    api_key: str
    """The secret key."""
    key_variable: str
    """The environment variable the key came from (safe to log)."""

    def describe(self) -> str:
        """A loggable description: the URL and the variable name, not the key."""
        return f"{self.base_url} (key from ${self.key_variable})"


def api_settings_from_env(env: Mapping[str, str] | None = None) -> ApiSettings:
    """Read the endpoint and key: OPENROUTER_API_KEY with OPENROUTER_BASE_URL (default OpenRouter),
    else OPENAI_API_KEY with OPENAI_BASE_URL (default OpenAI). Raises UserError when no key is set."""
    env = os.environ if env is None else env
    if env.get("OPENROUTER_API_KEY", "").strip():
        base = env.get("OPENROUTER_BASE_URL", "").strip() or OPENROUTER_BASE_URL
        return ApiSettings(base, env["OPENROUTER_API_KEY"].strip(), "OPENROUTER_API_KEY")
    if env.get("OPENAI_API_KEY", "").strip():
        base = env.get("OPENAI_BASE_URL", "").strip() or OPENAI_BASE_URL
        return ApiSettings(base, env["OPENAI_API_KEY"].strip(), "OPENAI_API_KEY")
    raise UserError(
        "synth: no API key found: set OPENROUTER_API_KEY (optionally OPENROUTER_BASE_URL, default "
        f"{OPENROUTER_BASE_URL}), or OPENAI_API_KEY with OPENAI_BASE_URL for another "
        "OpenAI-compatible endpoint"
    )


class ChatCallError(UserError):
    """A chat call that failed for good: a non-retryable status, or the retry budget spent."""


@dataclass(frozen=True)
class ChatReply:
    """One completion: its text and the tokens the provider billed."""

    content: str
    """The reply text ("" when the provider sent none)."""
    prompt_tokens: int
    """Input tokens reported in `usage` (0 when absent)."""
    completion_tokens: int
    """Output tokens reported in `usage` (0 when absent)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try a call before giving up."""

    timeout_s: float = 60.0
    """Seconds one request may take before it is abandoned and retried."""
    max_retries: int = 5
    """Retries after the first attempt on 429, 5xx, timeouts and connection errors."""
    backoff_base_s: float = 1.0
    """Wait before the first retry; doubles each retry, with jitter, capped at MAX_BACKOFF_S."""


def _status_of(error: Exception) -> str:
    """A short, key-free name of what went wrong ("HTTP 429", "timeout", "connection error")."""
    if isinstance(error, openai.APITimeoutError):
        return "timeout"
    if isinstance(error, openai.APIConnectionError):
        return "connection error"
    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}"
    if isinstance(error, (EmptyChoicesError, MalformedReplyError)):
        return f"a 200 reply with {error}"
    return type(error).__name__


def _is_retryable(error: Exception) -> bool:
    """Rate limits, server errors, timeouts and dropped connections are worth another try."""
    if isinstance(error, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code == 429 or error.status_code >= 500
    return isinstance(error, (EmptyChoicesError, MalformedReplyError))


class EmptyChoicesError(Exception):
    """The provider answered 200 without any choice (OpenRouter does this on upstream failures)."""


class MalformedReplyError(Exception):
    """The provider answered 200 with a body that is not a chat completion: cut off or not JSON, or a choice
    without a message. Retried like a server error (it usually is one)."""


def _retry_after_s(error: Exception) -> float | None:
    """The server's Retry-After in seconds, when it sent a numeric one."""
    response = getattr(error, "response", None)
    value = None if response is None else response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class ChatClient:
    """Send chat completions with retries; safe to share between threads."""

    def __init__(self, settings: ApiSettings, policy: RetryPolicy) -> None:
        self._key = settings.api_key
        self._policy = policy
        self._openai = openai.OpenAI(
            base_url=settings.base_url, api_key=settings.api_key, max_retries=0, timeout=policy.timeout_s
        )
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    def redact(self, text: str) -> str:
        """The text with the API key replaced by '***'."""
        return text.replace(self._key, "***") if self._key else text

    def _backoff_s(self, retry: int, error: Exception) -> float:
        """Exponential backoff with full jitter in [delay/2, delay], at least Retry-After, capped."""
        delay = self._policy.backoff_base_s * (2**retry)
        with self._rng_lock:
            delay *= self._rng.uniform(0.5, 1.0)
        delay = max(delay, _retry_after_s(error) or 0.0)
        return min(delay, MAX_BACKOFF_S)

    def _call_once(self, model: str, messages: list[dict]) -> ChatReply:
        try:
            # the messages are plain role/content dicts, not the openai package's TypedDicts
            response = self._openai.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
        except ValueError as exc:  # json.JSONDecodeError: the body was cut short or is not JSON
            raise MalformedReplyError(f"a body that is not JSON ({exc})") from None
        choices = getattr(response, "choices", None)
        if not choices:
            raise EmptyChoicesError("no choices")
        message = getattr(choices[0], "message", None)
        if message is None:
            raise MalformedReplyError("a choice without a message")
        content = getattr(message, "content", None) or ""  # null content: an empty reply (the game's rules judge it)
        if not isinstance(content, str):
            raise MalformedReplyError(f"a message whose content is not text ({type(content).__name__})")
        usage = getattr(response, "usage", None)
        return ChatReply(
            content=content,
            prompt_tokens=(getattr(usage, "prompt_tokens", None) or 0) if usage else 0,
            completion_tokens=(getattr(usage, "completion_tokens", None) or 0) if usage else 0,
        )

    def complete(self, model: str, messages: list[dict]) -> ChatReply:
        """One chat completion for `model`; raises ChatCallError naming the model and last status."""
        attempts = self._policy.max_retries + 1
        for attempt in range(attempts):
            try:
                return self._call_once(model, messages)
            except (openai.OpenAIError, EmptyChoicesError, MalformedReplyError) as error:
                status = _status_of(error)
                if not _is_retryable(error):
                    detail = self.redact(str(error))[:300]
                    raise ChatCallError(
                        f"synth: model '{model}': request failed with {status} (not retried): {detail}"
                    ) from None
                if attempt + 1 == attempts:
                    raise ChatCallError(
                        f"synth: model '{model}': gave up after {attempts} attempts; last status: "
                        f"{status} (raise --max-retries or --timeout, or try again later)"
                    ) from None
                wait = self._backoff_s(attempt, error)
                logger.warning(
                    "model %s: %s, retry %d/%d in %.1fs", model, status, attempt + 1, attempts - 1, wait
                )
                time.sleep(wait)
        raise AssertionError("unreachable")
