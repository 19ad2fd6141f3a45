"""The fake LLM server's script: rules that match a conversation and say what to answer.

Rules are tried in order; the first whose every given matcher matches (and that has uses left)
answers. A rule answers with text, tool calls, both, or a fault. See ``docs/llm.md``.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

ErrorKind = Literal[
    "auto", "rate_limit", "overloaded", "server", "context_length", "model_not_found", "auth", "bad_request"
]


class FakeToolCall(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A tool call the fake model makes."""

    name: str
    """Tool name."""
    arguments: dict[str, Any] = {}
    """Arguments (JSON-encoded on the wire)."""
    raw_arguments: str | None = None
    """Sent verbatim instead of ``arguments`` (use it to send malformed JSON)."""
    id: str | None = None
    """Call id; generated when None."""


class Fault(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A failure to inject instead of (or part-way through) an answer."""

    kind: Literal["status", "cut", "hang", "garbage", "error_event"] = "status"
    """status: HTTP error; cut: stop the stream after ``after_events``; hang: never answer;
    garbage: an undecodable body (or SSE data line); error_event: a provider error event mid-stream
    (shaped by ``error``/``status``)."""
    status: int = 500
    """HTTP status for ``status`` faults."""
    error: ErrorKind = "auto"
    """Shape of the provider error body; ``auto`` derives it from ``status``."""
    retry_after: str | None = None
    """``Retry-After`` header value."""
    after_events: int = 0
    """For ``cut``/``hang``/``garbage`` on a stream: events sent before the fault."""
    abort: bool = True
    """For ``cut``: drop the TCP connection (True) or end the HTTP body cleanly (False)."""
    message: str = ""
    """Error message; a provider-like default when empty."""


class Rule(msgspec.Struct, forbid_unknown_fields=True):
    """Match conditions (all given must hold) and the answer."""

    name: str = ""
    """Label for logs and ``FakeLLM.hits``."""
    user: str | None = None
    """Regex searched in the last user message's text."""
    system: str | None = None
    """Regex searched in the system prompt."""
    model: str | None = None
    """Regex searched in the requested model name."""
    tool_result: str | None = None
    """A tool result for this tool name (``*`` = any) is present after the last user message."""
    tool_result_content: str | None = None
    """Regex searched in the content of tool results after the last user message."""
    tool_offered: str | None = None
    """The request offers a tool of this name."""
    path: Literal["any", "openai", "anthropic"] = "any"
    """Restrict to one wire protocol."""
    times: int | None = None
    """Maximum uses; None = unlimited."""
    text: str = ""
    """Text to answer; ``{last_user}`` is replaced by the last user message and ``{user_group}`` by
    the first group captured by the ``user`` regex (also inside tool call arguments)."""
    tool_calls: list[FakeToolCall] = []
    """Tool calls to make (several = parallel calls)."""
    fault: Fault | None = None
    """Fail instead of answering (``cut``/``hang``/``garbage`` apply after ``after_events``)."""
    stop_reason: str | None = None
    """Override of the stop reason (e.g. ``max_tokens``)."""
    delay: float = 0.0
    """Seconds this rule waits before answering (on top of the server's ``ttft``)."""
    used: int = 0
    """Times this rule answered so far (runtime state)."""

    def __post_init__(self) -> None:
        for key in ("user", "system", "model", "tool_result_content"):
            pattern = getattr(self, key)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"rule {self.name!r}: bad regex in {key!r}: {exc}") from exc


class Script(msgspec.Struct, forbid_unknown_fields=True):
    """A whole script file: rules, the default answer and timing."""

    rules: list[Rule] = []
    """Rules in priority order."""
    default: Rule = msgspec.field(default_factory=lambda: Rule(name="default", text="ok"))
    """Answer when no rule matches."""
    ttft: float = 0.0
    """Seconds before the first streamed event."""
    token_latency: float = 0.0
    """Seconds between streamed chunks."""


def load_script(path: str | Path) -> Script:
    """Read a JSON or TOML script file; errors name the file and the bad key."""
    p = Path(path)
    raw = p.read_bytes()
    try:
        data = tomllib.loads(raw.decode()) if p.suffix == ".toml" else json.loads(raw)
        return msgspec.convert(data, Script)
    except (msgspec.ValidationError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"fake LLM script {str(p)!r}: {exc}") from exc


class Conversation(msgspec.Struct):
    """A request normalised across both wire protocols, for matching and recording."""

    protocol: str
    """openai or anthropic."""
    model: str
    """Requested model."""
    system: str
    """System prompt (joined)."""
    last_user: str
    """Text of the last user message."""
    tool_results: list[tuple[str, str]]
    """(tool name, content) of tool results after the last user message."""
    tools: list[str]
    """Names of tools offered."""
    stream: bool
    """Whether streaming was asked for."""
    include_usage: bool
    """OpenAI ``stream_options.include_usage``."""
    chars: int
    """Characters of all message text (for fake token counts)."""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text(b.get("text", "")) if isinstance(b, dict) else "" for b in content)
    return ""


def parse_conversation(protocol: str, body: dict[str, Any]) -> Conversation:
    """Normalise an OpenAI or Anthropic request body."""
    msgs = body.get("messages") or []
    names: dict[str, str] = {}
    system = _text(body.get("system", "")) if protocol == "anthropic" else ""
    last_user = ""
    results: list[tuple[str, str]] = []
    chars = len(system)
    for m in msgs:
        role, content = m.get("role"), m.get("content")
        chars += len(_text(content))
        if role == "system":
            system = (system + "\n\n" + _text(content)).strip()
        elif role == "assistant":
            for tc in m.get("tool_calls") or []:
                names[tc.get("id", "")] = tc.get("function", {}).get("name", "")
            if isinstance(content, list):
                for b in content:
                    if b.get("type") == "tool_use":
                        names[b.get("id", "")] = b.get("name", "")
        elif role == "tool":
            results.append((names.get(m.get("tool_call_id", ""), ""), _text(content)))
        elif role == "user":
            blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
            texts = [b.get("text", "") for b in blocks if b.get("type") == "text"]
            for b in blocks:
                if b.get("type") == "tool_result":
                    results.append((names.get(b.get("tool_use_id", ""), ""), _text(b.get("content"))))
            if texts:
                last_user = "".join(texts)
                results = []
    if protocol == "openai":
        tools = [t.get("function", {}).get("name", "") for t in body.get("tools") or []]
    else:
        tools = [t.get("name", "") for t in body.get("tools") or []]
    opts = body.get("stream_options") or {}
    return Conversation(
        protocol,
        str(body.get("model", "")),
        system,
        last_user,
        results,
        tools,
        bool(body.get("stream")),
        bool(opts.get("include_usage")),
        chars,
    )


def matches(rule: Rule, conv: Conversation) -> bool:
    """Whether every matcher the rule sets holds for ``conv`` (and it has uses left)."""
    if rule.times is not None and rule.used >= rule.times:
        return False
    if rule.path != "any" and rule.path != conv.protocol:
        return False
    if rule.user is not None and not re.search(rule.user, conv.last_user):
        return False
    if rule.system is not None and not re.search(rule.system, conv.system):
        return False
    if rule.model is not None and not re.search(rule.model, conv.model):
        return False
    if rule.tool_offered is not None and rule.tool_offered not in conv.tools:
        return False
    if rule.tool_result is not None and not any(
        rule.tool_result in ("*", name) for name, _ in conv.tool_results
    ):
        return False
    return rule.tool_result_content is None or any(
        re.search(rule.tool_result_content, content) for _, content in conv.tool_results
    )
