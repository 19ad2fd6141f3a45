"""Redact secret values from text before it is shown, logged or handed to a model.

A value is found as itself and in the encodings a program is likely to print it in: base64
(standard and URL-safe, padded or not, also inside a longer base64 text such as an HTTP Basic
``Authorization`` header), percent-encoding (as ``quote``, ``quote_plus`` and with lower-case
escapes) and hex (lower and upper case). Each occurrence becomes ``[REDACTED:NAME]``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

MIN_LENGTH = 6
"""Values shorter than this are not scrubbed: they would redact ordinary words and numbers."""


def redaction(name: str) -> str:
    """What an occurrence of secret ``name`` is replaced with."""
    return f"[REDACTED:{name}]"


def encodings(value: str) -> set[str]:
    """``value`` and every encoded form of it that :class:`Scrubber` looks for."""
    raw = value.encode("utf-8")
    forms = {value, raw.hex(), raw.hex().upper()}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        padded = encode(raw).decode("ascii")
        forms.update((padded, padded.rstrip("=")))
        # Inside a longer base64 text the value starts at byte offset 0, 1 or 2 of a 3-byte group;
        # the characters that depend on the value's bytes alone are the same whatever surrounds it.
        for offset in range(3):
            shifted = encode(b"\0" * offset + raw).decode("ascii").rstrip("=")
            total = offset + len(raw)
            inner = shifted[(0, 2, 3)[offset] : 4 * (total // 3) + total % 3]
            if len(inner) >= MIN_LENGTH:
                forms.add(inner)
    for percent in (quote(value, safe=""), quote(value), quote_plus(value)):
        forms.add(percent)
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), percent))
    return {form for form in forms if len(form) >= MIN_LENGTH}


def _trie_pattern(forms: Iterable[str]) -> str:
    """A regex matching any of ``forms``, and at a given position the longest that fits.

    The forms share prefixes in a trie; a node where a form ends makes what follows it optional
    and greedy, so a longer form is tried first and a shorter one is the fallback.
    """
    root: dict[str, Any] = {}
    for form in forms:
        node = root
        for char in form:
            node = node.setdefault(char, {})
        node[""] = {}  # a form ends here

    def build(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + chain(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    def chain(node: dict[str, Any]) -> str:
        # A run of nodes with one way on is a plain literal: recursing only where forms branch or
        # end keeps the depth small for a secret of thousands of characters.
        run: list[str] = []
        while len(node) == 1 and "" not in node:
            ((char, node),) = node.items()
            run.append(re.escape(char))
        return "".join(run) + build(node)

    return build(root)


class Scrubber:
    """Replaces every secret value (and its encodings) in a text by ``[REDACTED:NAME]``."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        """Args:
        secrets: name -> value; values shorter than :data:`MIN_LENGTH` characters are ignored.
        """
        names: dict[str, str] = {}
        for name in sorted(secrets):  # the same value under two names: the first name, every time
            value = secrets[name]
            if len(value) < MIN_LENGTH:
                continue
            for form in encodings(value):
                names.setdefault(form, name)
        self._names = names
        # One regex, built once, that matches the longest form at each position. No Aho-Corasick
        # library is a dependency; `re` over the forms factored into a trie comes close enough: at
        # each position it follows the one branch the next character selects, instead of trying
        # every form in turn (a plain longest-first alternation), about four times faster on tool
        # output with tens of secrets.
        self._pattern = re.compile(_trie_pattern(names)) if names else None
        self.longest = max(map(len, names), default=0)
        """Length of the longest form searched for."""

    def scrub(self, text: str) -> str:
        """``text`` with every occurrence of a secret replaced."""
        if self._pattern is None:
            return text
        return self._pattern.sub(self._replace, text)

    def stream(self) -> StreamScrubber:
        """A scrubber for text that arrives in chunks (a tool's output as it is produced)."""
        return StreamScrubber(self)

    def _replace(self, match: re.Match[str]) -> str:
        return redaction(self._names[match.group()])

    def _scan(self, text: str, final: bool) -> tuple[str, int]:
        """Scrub the part of ``text`` that cannot change with what follows it.

        Returns the scrubbed part and how many characters of ``text`` it covers. A match that
        starts before ``len(text) - longest + 1`` is as long as it will ever be (its longest
        candidate fits in ``text``), and a position there without a match will never get one;
        anything later is held back unless ``final``.
        """
        if self._pattern is None:
            return text, len(text)
        limit = len(text) if final else len(text) - self.longest + 1
        out: list[str] = []
        done = 0
        for match in self._pattern.finditer(text):
            if match.start() >= limit:
                break
            out.append(text[done : match.start()])
            out.append(self._replace(match))
            done = match.end()
        end = max(done, limit)
        out.append(text[done:end])
        return "".join(out), end


class StreamScrubber:
    """Scrubs a text fed in chunks; the output, joined, equals :meth:`Scrubber.scrub` of the whole.

    At most ``longest - 1`` characters are held back between calls: a value split across chunks
    is still found, and everything that can no longer be part of one is released at once.
    """

    def __init__(self, scrubber: Scrubber) -> None:
        self._scrubber = scrubber
        self._held = ""

    def feed(self, chunk: str) -> str:
        """Add ``chunk``; return the scrubbed text that is now final (possibly empty)."""
        text = self._held + chunk
        out, end = self._scrubber._scan(text, final=False)
        self._held = text[end:]
        return out

    def flush(self) -> str:
        """Return the scrubbed remainder (the text has ended); the scrubber can be fed again."""
        out, _end = self._scrubber._scan(self._held, final=True)
        self._held = ""
        return out
