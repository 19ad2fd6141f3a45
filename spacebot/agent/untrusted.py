"""Person-supplied text on its way into a prompt: the one rendering rule every gateway and process uses.

A transcript is line-based: every line that starts at the left edge was written by Spacebot
(``[#12] (new) Ana: …``, ``[notice] …``). What people write can never produce such a line:

* **Labels** (display names, conversation titles, file names) become one line: every line break and
  control character turns into a space, runs of whitespace collapse, invisible bidirectional
  controls are dropped, and the result is capped (``…`` marks a cut). An empty label is ``?``.
  Inside system text a label is also quoted with ``"`` and ``\\`` escaped, so it cannot end the
  quotation it is put in.
* **Message text** keeps its lines (people write code and lists), but every line break form
  (``\\r\\n``, ``\\r``, vertical tab, form feed, U+0085, U+2028, U+2029, …) becomes ``\\n`` and every
  following non-empty line is indented by :data:`INDENT`, so no line of a message starts at the left
  edge. Other control characters and bidirectional controls are shown as visible escapes
  (``\\x07``, ``\\u202e``) instead of acting on the text.

See docs/security.md, "Untrusted text in prompts".
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

NAME_LIMIT = 64
"""Longest display name shown to a model (characters)."""
TITLE_LIMIT = 120
"""Longest conversation title shown to a model."""
FILE_NAME_LIMIT = 120
"""Longest file name shown to a model."""
INDENT = "  "
"""Put before every continuation line of a message, so none starts at the left edge."""

# Everything a model (or a terminal) may take as the end of a line.
_BREAKS = re.compile(r"\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# Invisible characters that reorder how text is displayed (they can hide or fake what follows).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc" or ch in _BIDI


def _cap(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: max(limit - 1, 0)].rstrip() + "…"


def label(value: str, limit: int = NAME_LIMIT) -> str:
    """A name, title or file name as one safe line of at most ``limit`` characters."""
    flat = _BREAKS.sub(" ", value)
    flat = "".join("" if ch in _BIDI else " " if _is_control(ch) or ch.isspace() else ch for ch in flat)
    flat = " ".join(flat.split())
    return _cap(flat, limit) or "?"


def quoted(value: str, limit: int = TITLE_LIMIT) -> str:
    """A label in double quotes, for system text: it cannot close the quotation early."""
    inner = label(value, limit).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{inner}"'


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def text(value: str) -> str:
    """Message text that keeps its lines but cannot start a line of the transcript."""
    lines = _BREAKS.split(value)
    shown = ["".join(_escape(ch) if ch != "\t" and _is_control(ch) else ch for ch in ln) for ln in lines]
    first, rest = shown[0], shown[1:]
    return "\n".join([first, *(INDENT + ln if ln.strip() else "" for ln in rest)])


def line(head: str, name: str, body: str) -> str:
    """One transcript line: ``head`` (written by Spacebot, e.g. ``[#12] (new)``), a name, the text."""
    return f"{head} {label(name)}: {text(body)}"


def file_list(names: Iterable[str]) -> str:
    """File names as a comma-separated list of quoted labels."""
    return ", ".join(quoted(n, FILE_NAME_LIMIT) for n in names)
