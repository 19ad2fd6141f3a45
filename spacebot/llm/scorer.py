"""A cheap, deterministic prompt-complexity score in [0, 1].

Features (each documented, each bounded, summed with fixed weights):

- ``length``: characters of the last user message, saturating at 2,000 (weight 0.3).
- ``code``: code fences or inline code / stack-trace markers present (0.3).
- ``questions``: number of ``?`` beyond the first, saturating at 3 (0.1).
- ``reasoning``: reasoning keywords (why, explain, compare, design, prove, analyze, step by step,
  trade-off, debug, optimize, architecture, refactor, implement, plan), saturating at 2 hits (0.3).
- ``lines``: line count beyond 3, saturating at 20 (0.1).
- ``tools``: a conversation carrying tool results is mid-task, never simple (forces >= 0.5).

A score below ``ScorerConfig.simple_below`` (and a prompt of at most ``max_simple_chars``) steps a
process's default tier down one; a tier a task type asks for is kept (``routing.py``). The same input
always gives the same score.
"""

from __future__ import annotations

import re

import msgspec

from spacebot.llm.types import Request, TextPart, ToolMessage, UserMessage

_REASONING = re.compile(
    r"\b(why|explain|compare|design|prove|analy[sz]e|step by step|trade-?offs?|debug|optimi[sz]e|"
    r"architecture|refactor|implement|plan)\b",
    re.IGNORECASE,
)
_CODE = re.compile(
    r"```|`[^`\n]+`|Traceback \(most recent call last\)|\bdef \w+\(|\bclass \w+[:(]|[{};]\s*$", re.M
)


class Score(msgspec.Struct, frozen=True):
    """The score and the contribution of each feature."""

    value: float
    """Total in [0, 1]."""
    features: dict[str, float]
    """Feature name → weighted contribution."""
    chars: int
    """Length of the scored text."""


def last_user_text(request: Request) -> str:
    """Text of the last user message ('' if none)."""
    for msg in reversed(request.messages):
        if isinstance(msg, UserMessage):
            if isinstance(msg.content, str):
                return msg.content
            return "\n".join(p.text for p in msg.content if isinstance(p, TextPart))
    return ""


def score(request: Request) -> Score:
    """Score the request's last user message."""
    text = last_user_text(request)
    feats = {
        "length": 0.3 * min(len(text) / 2000.0, 1.0),
        "code": 0.3 if _CODE.search(text) else 0.0,
        "questions": 0.1 * min(max(text.count("?") - 1, 0) / 3.0, 1.0),
        "reasoning": 0.3 * min(len(_REASONING.findall(text)) / 2.0, 1.0),
        "lines": 0.1 * min(max(text.count("\n") + 1 - 3, 0) / 20.0, 1.0),
    }
    total = min(sum(feats.values()), 1.0)
    if any(isinstance(m, ToolMessage) for m in request.messages):
        feats["tools"] = max(0.0, 0.5 - total)
        total = max(total, 0.5)
    return Score(round(min(total, 1.0), 4), {k: round(v, 4) for k, v in feats.items()}, len(text))
