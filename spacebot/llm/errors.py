"""Typed errors of the LLM layer and the classification of provider failures.

``retriable`` errors are retried on the same model and then handed to the fallback chain;
``next_model`` errors skip straight to the next model; the rest stop the call.
"""

from __future__ import annotations

import email.utils
import time

from spacebot.errors import ConfigError, SpacebotError


class LLMError(SpacebotError):
    """Base of every error the LLM layer raises."""

    retriable: bool = False
    next_model: bool = False

    def __init__(self, message: str, *, model: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.status = status


class LLMConfigError(ConfigError, LLMError):
    """Bad LLM configuration: unknown provider, invalid model id, missing key."""


class RetriableError(LLMError):
    """A transient failure: retry with back-off, then move on to the next model."""

    retriable = True
    next_model = True


class RateLimited(RetriableError):
    """429 or 529/overloaded. ``retry_after`` is seconds the provider asked us to wait, if any."""

    def __init__(
        self, message: str, *, model: str = "", status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, model=model, status=status)
        self.retry_after = retry_after


class ServerError(RetriableError):
    """5xx from the provider."""


class ConnectError(RetriableError):
    """The connection failed or dropped."""


class Timeout(RetriableError):
    """Connect, first-token or total timeout expired."""


class StreamCut(RetriableError):
    """The stream ended before the provider said it was done."""


class BadResponse(RetriableError):
    """The body could not be decoded."""


class ModelNotFound(LLMError):
    """The provider does not know the model: move on to the next one without retrying."""

    next_model = True


class ContextOverflow(LLMError):
    """The prompt does not fit the model's context window: compact and call again."""


class AuthError(LLMError):
    """401/403: the key is wrong or lacks permission (not retried; the next model may use another key)."""

    next_model = True


class BadRequest(LLMError):
    """400 or another 4xx the provider rejected (bad tool schema, bad parameter)."""


class AllModelsFailed(LLMError):
    """Every model of the chain failed; ``errors`` lists (model, error) in order."""

    def __init__(self, errors: list[tuple[str, LLMError]]) -> None:
        detail = "; ".join(f"{m!r}: {type(e).__name__}: {e}" for m, e in errors)
        super().__init__(f"all models failed: {detail}" if errors else "no usable model (all cooling down)")
        self.errors = errors


_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "maximum context",
    "prompt is too long",
    "too many tokens",
)
_NOT_FOUND_MARKERS = (
    "model_not_found",
    "does not exist",
    "not_found_error",
    "unknown model",
    "no such model",
)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, parsed.timestamp() - time.time())


def classify_status(status: int, body_text: str, *, model: str, retry_after: float | None = None) -> LLMError:
    """Turn an HTTP status and its body into the matching typed error."""
    low = body_text.lower()
    msg = f"model {model!r}: HTTP {status}: {body_text[:300]}"
    if any(m in low for m in _CONTEXT_MARKERS):
        return ContextOverflow(msg, model=model, status=status)
    if status == 404 or (status == 400 and any(m in low for m in _NOT_FOUND_MARKERS)):
        return ModelNotFound(msg, model=model, status=status)
    if status in (429, 529) or "overloaded" in low:
        return RateLimited(msg, model=model, status=status, retry_after=retry_after)
    if status in (401, 403):
        return AuthError(msg, model=model, status=status)
    if status < 400:  # an error event inside a 200 stream: the provider failed mid-answer
        return ServerError(msg, model=model, status=status)
    if status == 408:
        return Timeout(msg, model=model, status=status)
    if status >= 500:
        return ServerError(msg, model=model, status=status)
    return BadRequest(msg, model=model, status=status)
