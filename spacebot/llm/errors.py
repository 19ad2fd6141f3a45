"""Typed errors of the LLM layer and the classification of provider failures.

``retriable`` errors are retried on the same model and then handed to the fallback chain;
``next_model`` errors skip straight to the next model; the rest stop the call.

Each error speaks to two audiences. :attr:`LLMError.person_message` is one plain sentence for the
people in a conversation (never a URL, a model id or an exception name); :meth:`LLMError.operator_line`
is one log line for whoever runs Spacebot: the model, the base URL it was called at, what happened
and a hint at the fix (``is Ollama running at http://127.0.0.1:11434?``). ``expected`` errors are
failures of the world outside (a server down, a key refused) and are logged without a traceback.
"""

from __future__ import annotations

import email.utils
import time
from urllib.parse import urlsplit

from spacebot.errors import ConfigError, SpacebotError

UNREACHABLE = "I can't reach my language model right now, so I couldn't answer that; please try again later."
SLOW = "My language model didn't answer in time, so I couldn't answer that; please try again later."
BUSY = (
    "My language model is overloaded right now, so I couldn't answer that; please try again in a few minutes."
)
NOT_SET_UP = (
    "My language model isn't set up correctly, so I couldn't answer that; whoever runs me can see why."
)
TOO_LONG = "That was too long for my language model to read at once, so I couldn't answer it."
REFUSED = "My language model refused that request, so I couldn't answer it."

LOCAL_SERVERS = {11434: "Ollama", 1234: "LM Studio"}
"""Default ports of well-known local model servers, named in connection hints."""


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def local_server(base_url: str) -> tuple[str, str] | None:
    """(name, origin) of a well-known local server on its default port, e.g. ``("Ollama",
    "http://127.0.0.1:11434")``; None for any other URL."""
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError:
        return None
    if _is_loopback(parts.hostname or "") and port in LOCAL_SERVERS:
        return LOCAL_SERVERS[port], f"{parts.scheme}://{parts.netloc}"
    return None


def server_name(base_url: str) -> str:
    """How a hint names the server at ``base_url``: ``Ollama at http://127.0.0.1:11434`` for a
    well-known local server on its default port, else ``the model server at <base_url>``."""
    if not base_url:
        return "the model server"
    if known := local_server(base_url):
        return f"{known[0]} at {known[1]}"
    return f"the model server at {base_url}"


class LLMError(SpacebotError):
    """Base of every error the LLM layer raises.

    Args:
        message: what happened, for logs.
        model: the model id (``provider/model``) that failed.
        status: the HTTP status, when there was one.
        base_url: where the provider was called.
    """

    retriable: bool = False
    next_model: bool = False
    expected: bool = True
    """An outside failure (server down, key refused): one log line, no traceback."""
    _person: str = UNREACHABLE

    def __init__(
        self, message: str, *, model: str = "", status: int | None = None, base_url: str = ""
    ) -> None:
        super().__init__(message)
        self.model = model
        self.status = status
        self.base_url = base_url

    def at(self, base_url: str) -> LLMError:
        """Record where the provider was called (kept if already known); returns ``self``."""
        self.base_url = self.base_url or base_url
        return self

    @property
    def person_message(self) -> str:
        """One plain sentence for the people in the conversation."""
        return self._person

    @property
    def operator_hint(self) -> str:
        """What the operator should check first ("" when there is nothing useful to say)."""
        return ""

    def operator_line(self) -> str:
        """One log line: model, base URL, error and hint."""
        line = f"model={self.model or '-'} url={self.base_url or '-'} error={type(self).__name__}: {self}"
        hint = self.operator_hint
        return f"{line} (hint: {hint})" if hint else line


class LLMConfigError(ConfigError, LLMError):
    """Bad LLM configuration: unknown provider, invalid model id, missing key."""

    _person = NOT_SET_UP

    @property
    def operator_hint(self) -> str:
        return "fix the [llm] section of config.toml (or the SPACEBOT_LLM_* variables) and restart"


class RetriableError(LLMError):
    """A transient failure: retry with back-off, then move on to the next model."""

    retriable = True
    next_model = True


class RateLimited(RetriableError):
    """429 or 529/overloaded. ``retry_after`` is seconds the provider asked us to wait, if any."""

    _person = BUSY

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        status: int | None = None,
        retry_after: float | None = None,
        base_url: str = "",
    ) -> None:
        super().__init__(message, model=model, status=status, base_url=base_url)
        self.retry_after = retry_after

    @property
    def operator_hint(self) -> str:
        return (
            f"{server_name(self.base_url)} is rate-limiting or overloaded; "
            "wait, or add a fallback model under [llm.fallbacks]"
        )


class ServerError(RetriableError):
    """5xx from the provider."""

    @property
    def operator_hint(self) -> str:
        what = f"answered HTTP {self.status}" if self.status and self.status >= 500 else "failed mid-answer"
        return f"{server_name(self.base_url)} {what}; its own log says why"


class ConnectError(RetriableError):
    """The connection failed or dropped."""

    @property
    def operator_hint(self) -> str:
        if known := local_server(self.base_url):
            return f"is {known[0]} running at {known[1]}?"
        server = server_name(self.base_url)
        if not self.base_url or _is_loopback(urlsplit(self.base_url).hostname or ""):
            return f"is {server} running?"
        return f"is {server} running, and can this machine reach it (network, proxy, DNS)?"


class Timeout(RetriableError):
    """Connect, first-token or total timeout expired."""

    _person = SLOW

    @property
    def operator_hint(self) -> str:
        return (
            f"{server_name(self.base_url)} did not answer in time: is it overloaded, or still loading "
            "the model? ([llm.timeouts] sets the limits)"
        )


class StreamCut(RetriableError):
    """The stream ended before the provider said it was done."""

    @property
    def operator_hint(self) -> str:
        return f"{server_name(self.base_url)} ended the answer early; did it restart or run out of memory?"


class BadResponse(RetriableError):
    """The body could not be decoded."""

    @property
    def operator_hint(self) -> str:
        return (
            f"{server_name(self.base_url)} sent an answer that is not the provider's API; "
            "does base_url point at the API (for OpenAI-compatible servers usually ending in /v1)?"
        )


class ModelNotFound(LLMError):
    """The provider does not know the model: move on to the next one without retrying."""

    next_model = True
    _person = NOT_SET_UP

    @property
    def operator_hint(self) -> str:
        name = self.model.partition("/")[2] or self.model or "the model"
        hint = f"{server_name(self.base_url)} does not serve {name!r}; check the model name"
        if (local_server(self.base_url) or ("",))[0] == "Ollama":
            hint += f" (or run: ollama pull {name})"
        return hint


class ContextOverflow(LLMError):
    """The prompt does not fit the model's context window: compact and call again."""

    _person = TOO_LONG

    @property
    def operator_hint(self) -> str:
        return f"the prompt is longer than the context window of {self.model or 'the model'}"


class AuthError(LLMError):
    """401/403: the key is wrong or lacks permission (not retried; the next model may use another key)."""

    next_model = True
    _person = NOT_SET_UP

    @property
    def operator_hint(self) -> str:
        provider = self.model.partition("/")[0] or "the provider"
        return f"{server_name(self.base_url)} refused the key: check [llm.providers.{provider}] api_key"


class BadRequest(LLMError):
    """400 or another 4xx the provider rejected (bad tool schema, bad parameter)."""

    # Usually a request this code built wrongly: the traceback is worth having.
    expected = False
    _person = REFUSED


class AllModelsFailed(LLMError):
    """Every model of the chain failed; ``errors`` lists (model, error) in order."""

    def __init__(self, errors: list[tuple[str, LLMError]]) -> None:
        detail = "; ".join(f"{m!r}: {type(e).__name__}: {e}" for m, e in errors)
        super().__init__(f"all models failed: {detail}" if errors else "no usable model (all cooling down)")
        self.errors = errors
        self.expected = all(e.expected for _, e in errors)

    @property
    def person_message(self) -> str:
        """What the person hears: the first lasting failure (a setup problem) before transient ones."""
        if not self.errors:
            return BUSY
        lasting = [e for _, e in self.errors if not e.retriable]
        return (lasting or [self.errors[0][1]])[0].person_message

    @property
    def operator_hint(self) -> str:
        if not self.errors:
            return "every model of the chain is cooling down after rate limits"
        return "; ".join(dict.fromkeys(h for _, e in self.errors if (h := e.operator_hint)))

    def operator_line(self) -> str:
        if not self.errors:
            return f"error=AllModelsFailed: {self} (hint: {self.operator_hint})"
        return "all models failed: " + " | ".join(e.operator_line() for _, e in self.errors)


def model_failure(exc: BaseException) -> LLMError | None:
    """``exc`` as a model failure, or None when it is something else.

    A bare ``TimeoutError`` counts: it is what a caller's own deadline around a model call raises.
    """
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, TimeoutError):
        return Timeout("no complete answer within the caller's time limit")
    return None


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


def classify_status(
    status: int, body_text: str, *, model: str, retry_after: float | None = None, base_url: str = ""
) -> LLMError:
    """Turn an HTTP status and its body into the matching typed error."""
    low = body_text.lower()
    msg = f"model {model!r}: HTTP {status}: {body_text[:300]}"

    def make(kind: type[LLMError]) -> LLMError:
        return kind(msg, model=model, status=status, base_url=base_url)

    if any(m in low for m in _CONTEXT_MARKERS):
        return make(ContextOverflow)
    if status == 404 or (status == 400 and any(m in low for m in _NOT_FOUND_MARKERS)):
        return make(ModelNotFound)
    if status in (429, 529) or "overloaded" in low:
        return RateLimited(msg, model=model, status=status, retry_after=retry_after, base_url=base_url)
    if status in (401, 403):
        return make(AuthError)
    if status < 400:  # an error event inside a 200 stream: the provider failed mid-answer
        return make(ServerError)
    if status == 408:
        return make(Timeout)
    if status >= 500:
        return make(ServerError)
    return make(BadRequest)
