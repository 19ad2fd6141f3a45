"""Wire shapes of the fake server: OpenAI and Anthropic bodies, stream events and error bodies."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from spacebot.llm.fake.rules import Conversation, FakeToolCall, Fault

_TOKEN = re.compile(r"\S+\s*|\s+")


def chunks(text: str) -> list[str]:
    """Split text into word-sized stream chunks ("tokens")."""
    return _TOKEN.findall(text)


def arguments_of(call: FakeToolCall) -> str:
    """The JSON text of a fake call's arguments (verbatim when ``raw_arguments`` is set)."""
    return call.raw_arguments if call.raw_arguments is not None else json.dumps(call.arguments)


def split_args(args: str, size: int = 12) -> list[str]:
    """Split argument JSON into token-sized fragments, as real providers stream it (an escape
    sequence may well be cut in two, as it is by real providers)."""
    if not args:
        return [""]
    return [args[i : i + size] for i in range(0, len(args), size)]


def error_kind(fault: Fault) -> str:
    """The error shape of a status fault."""
    if fault.error != "auto":
        return fault.error
    return {
        429: "rate_limit",
        529: "overloaded",
        404: "model_not_found",
        401: "auth",
        403: "auth",
        400: "bad_request",
    }.get(fault.status, "server")


def error_body(protocol: str, fault: Fault, model: str) -> dict[str, Any]:
    """A provider-shaped error body."""
    kind = error_kind(fault)
    if protocol == "openai":
        code, etype, msg = {
            "rate_limit": ("rate_limit_exceeded", "requests", "Rate limit reached for requests"),
            "overloaded": ("server_overloaded", "server_error", "The server is overloaded"),
            "server": (
                "server_error",
                "server_error",
                "The server had an error while processing your request",
            ),
            "context_length": (
                "context_length_exceeded",
                "invalid_request_error",
                "This model's maximum context length is 8192 tokens. "
                "However, your messages resulted in 9000 tokens.",
            ),
            "model_not_found": (
                "model_not_found",
                "invalid_request_error",
                f"The model `{model}` does not exist",
            ),
            "auth": ("invalid_api_key", "invalid_request_error", "Incorrect API key provided"),
            "bad_request": ("invalid_request", "invalid_request_error", "Invalid request"),
        }[kind]
        return {"error": {"message": fault.message or msg, "type": etype, "param": None, "code": code}}
    etype, msg = {
        "rate_limit": ("rate_limit_error", "Number of requests has exceeded your rate limit"),
        "overloaded": ("overloaded_error", "Overloaded"),
        "server": ("api_error", "Internal server error"),
        "context_length": ("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
        "model_not_found": ("not_found_error", f"model: {model}"),
        "auth": ("authentication_error", "invalid x-api-key"),
        "bad_request": ("invalid_request_error", "Invalid request"),
    }[kind]
    return {"type": "error", "error": {"type": etype, "message": fault.message or msg}}


def usage_counts(conv: Conversation, text: str, calls: list[FakeToolCall]) -> tuple[int, int]:
    """Fake (input, output) token counts: ~4 chars per input token, one per chunk of output."""
    out = len(chunks(text)) + sum(1 + len(arguments_of(c)) // 4 for c in calls)
    return conv.chars // 4 + 1, max(out, 1)


def openai_events(
    conv: Conversation, text: str, calls: list[tuple[str, FakeToolCall]], stop: str | None
) -> list[str]:
    """``data:`` payloads of a streamed chat completion (without ``[DONE]``)."""
    base = {
        "id": f"chatcmpl-{int(time.time() * 1000)}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": conv.model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return json.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": c}) for c in chunks(text)]
    for i, (cid, call) in enumerate(calls):
        head = {"index": i, "id": cid, "type": "function", "function": {"name": call.name, "arguments": ""}}
        out.append(chunk({"tool_calls": [head]}))
        for frag in split_args(arguments_of(call)):
            out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": frag}}]}))
    finish = stop or ("tool_calls" if calls else "stop")
    out.append(chunk({}, finish))
    if conv.include_usage:
        inp, outp = usage_counts(conv, text, [c for _, c in calls])
        usage = {"prompt_tokens": inp, "completion_tokens": outp, "total_tokens": inp + outp}
        out.append(json.dumps({**base, "choices": [], "usage": usage}))
    return out


def openai_body(
    conv: Conversation, text: str, calls: list[tuple[str, FakeToolCall]], stop: str | None
) -> dict[str, Any]:
    """A non-streamed chat completion."""
    inp, outp = usage_counts(conv, text, [c for _, c in calls])
    msg: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        msg["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": c.name, "arguments": arguments_of(c)}}
            for cid, c in calls
        ]
    return {
        "id": f"chatcmpl-{int(time.time() * 1000)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": conv.model,
        "choices": [
            {"index": 0, "message": msg, "finish_reason": stop or ("tool_calls" if calls else "stop")}
        ],
        "usage": {"prompt_tokens": inp, "completion_tokens": outp, "total_tokens": inp + outp},
    }


def anthropic_events(
    conv: Conversation, text: str, calls: list[tuple[str, FakeToolCall]], stop: str | None
) -> list[tuple[str, str]]:
    """(event name, data) pairs of a streamed Messages API answer."""
    inp, outp = usage_counts(conv, text, [c for _, c in calls])
    message: dict[str, Any] = {
        "id": f"msg_{int(time.time() * 1000)}",
        "type": "message",
        "role": "assistant",
        "model": conv.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": inp, "output_tokens": 1},
    }
    out: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": message})]
    index = 0
    if text:
        out.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
        )
        for c in chunks(text):
            out.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": c}},
                )
            )
        out.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        index = 1
    for cid, call in calls:
        out.append(
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": cid, "name": call.name, "input": {}},
                },
            )
        )
        for frag in split_args(arguments_of(call)):
            out.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": frag},
                    },
                )
            )
        out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    reason = stop or ("tool_use" if calls else "end_turn")
    out.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": None},
                "usage": {"output_tokens": outp},
            },
        )
    )
    out.append(("message_stop", {"type": "message_stop"}))
    return [(name, json.dumps(data)) for name, data in out]


def anthropic_body(
    conv: Conversation, text: str, calls: list[tuple[str, FakeToolCall]], stop: str | None
) -> dict[str, Any]:
    """A non-streamed Messages API answer."""
    inp, outp = usage_counts(conv, text, [c for _, c in calls])
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for cid, c in calls:
        try:
            args = json.loads(arguments_of(c))
        except json.JSONDecodeError:
            args = {}
        content.append({"type": "tool_use", "id": cid, "name": c.name, "input": args})
    return {
        "id": f"msg_{int(time.time() * 1000)}",
        "type": "message",
        "role": "assistant",
        "model": conv.model,
        "content": content,
        "stop_reason": stop or ("tool_use" if calls else "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": inp, "output_tokens": outp},
    }
