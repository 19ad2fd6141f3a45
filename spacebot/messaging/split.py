"""Cutting a reply into messages a chat platform accepts (Discord: 2000 characters; Slack: ~4000).

:func:`split_message` breaks at the coarsest boundary that works: between paragraphs, else lines,
else sentences, else words, and inside a word only when the word alone is longer than the limit.
A fenced code block is kept whole when it fits; a longer one is cut between lines, each part
closing the fence and the next reopening it with the same info string (```` ```python ````), so
every message renders as code. Only whitespace is lost at the cuts.
"""

from __future__ import annotations

import re

_FENCE_OPEN = re.compile(r"[ \t]*```[^`\n]*")
"""A line that opens a fenced code block (CommonMark: no backtick in the info string)."""
_FENCE_CLOSE = re.compile(r"[ \t]*```[ \t]*")
"""A line that closes one."""
_LEVELS = (re.compile(r"\n[ \t]*\n\s*"), re.compile(r"\n"), re.compile(r"(?<=[.!?])\s+"), re.compile(r"\s+"))
"""Where prose may be cut, most preferred first: paragraphs, lines, sentences, words."""
_BLANK_START = re.compile(r"\A(?:[ \t]*\n)+")
"""Blank lines at the start of a part (a platform would trim them anyway)."""


def split_message(text: str, limit: int) -> list[str]:
    """``text`` cut into parts of at most ``limit`` characters (none empty or only whitespace).

    Raises:
        ValueError: ``limit`` is below 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit!r}")
    units: list[tuple[str, str, bool]] = []  # (separator before, unit, is code): paragraphs, code blocks
    for kind, block, sep in _blocks(text):
        if kind == "code":
            units.append((sep, block, True))
        else:
            units.extend((s, piece, False) for s, piece in _pieces(block, _LEVELS[0], sep))
    parts: list[str] = []
    current = ""
    for sep, unit, is_code in units:
        if not unit.strip():
            continue
        if len(unit) > limit:
            parts.append(current)
            current = ""
            parts.extend(_code(unit, limit) if is_code else _prose(unit, 1, limit))
        elif current and len(current) + len(sep) + len(unit) <= limit:
            current += sep + unit
        else:
            parts.append(current)
            current = unit
    parts.append(current)
    return [_BLANK_START.sub("", part).rstrip() for part in parts if part.strip()]


def _blocks(text: str) -> list[tuple[str, str, str]]:
    """``text`` as prose and fenced code blocks: ``(kind, text, whitespace before it)``."""
    blocks: list[tuple[str, str, str]] = []
    prose: list[str] = []
    lines = text.split("\n")
    n = 0
    while n < len(lines):
        if not _FENCE_OPEN.fullmatch(lines[n]):
            prose.append(lines[n])
            n += 1
            continue
        end = next((m for m in range(n + 1, len(lines)) if _FENCE_CLOSE.fullmatch(lines[m])), len(lines) - 1)
        if prose:
            blocks.append(("prose", "\n".join(prose), "\n"))
            prose = []
        blocks.append(("code", "\n".join(lines[n : end + 1]), "\n"))
        n = end + 1
    if prose:
        blocks.append(("prose", "\n".join(prose), "\n"))
    return blocks


def _pieces(text: str, level: re.Pattern[str], first_sep: str) -> list[tuple[str, str]]:
    """``text`` cut at every match of ``level``: ``(separator before, piece)`` pairs."""
    pieces: list[tuple[str, str]] = []
    sep, pos = first_sep, 0
    for match in level.finditer(text):
        pieces.append((sep, text[pos : match.start()]))
        sep, pos = match.group(), match.end()
    pieces.append((sep, text[pos:]))
    return pieces


def _prose(text: str, level: int, limit: int) -> list[str]:
    """``text`` (longer than ``limit``) packed into parts cut at ``_LEVELS[level]``, a piece still
    too long cut at the next level, a word too long cut every ``limit`` characters."""
    if level == len(_LEVELS):
        return [text[i : i + limit] for i in range(0, len(text), limit)]
    parts: list[str] = []
    current = ""
    for sep, piece in _pieces(text, _LEVELS[level], ""):
        if not piece.strip():
            continue
        if len(piece) > limit:
            parts.append(current)
            current = ""
            parts.extend(_prose(piece, level + 1, limit))
        elif current and len(current) + len(sep) + len(piece) <= limit:
            current += sep + piece
        else:
            parts.append(current)
            current = piece
    parts.append(current)
    return [part for part in parts if part.strip()]


def _code(block: str, limit: int) -> list[str]:
    """A fenced code block longer than ``limit`` cut between lines, each part a closed block."""
    lines = block.split("\n")
    opening = lines[0]
    closed = len(lines) > 1 and bool(_FENCE_CLOSE.fullmatch(lines[-1]))
    body = lines[1:-1] if closed else lines[1:]
    reopen = "```" + opening.strip()[3:].strip()
    room = limit - max(len(opening), len(reopen)) - len("\n\n```")
    if room < 1:  # the fences alone fill the limit: send it as plain text
        return _prose(block, 1, limit)
    chunks: list[list[str]] = []
    size = room + 1  # forces a new chunk for the first line
    for line in body:
        pieces = _prose(line, len(_LEVELS) - 1, room) if len(line) > room else [line]
        for piece in pieces:
            if size + 1 + len(piece) > room:
                chunks.append([piece])
                size = len(piece)
            else:
                chunks[-1].append(piece)
                size += 1 + len(piece)
    chunks = [chunk for chunk in chunks if "".join(chunk).strip()] or [[""]]
    return ["\n".join([opening if n == 0 else reopen, *chunk, "```"]) for n, chunk in enumerate(chunks)]
