"""Read one string field out of a JSON object while it is still streaming.

A ``reply`` tool call streams its arguments as JSON fragments (``{"content": "Hel``, ``lo\\nwor``,
…). :class:`StreamedField` turns those fragments into the decoded characters of one top-level
string field as soon as they arrive, so a reply can be shown while the model is still writing it.
It handles escapes split across fragments (``\\``, ``\\u00`` + ``e9``) and surrogate pairs; it never
emits a character twice and never emits a partial escape.
"""

from __future__ import annotations

_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class StreamedField:
    """Incremental extractor of the top-level string field ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._buf = ""
        self._pos = 0  # next unread index in _buf
        self._depth = 0
        self._in_string = False
        self._string_is_key = False
        self._key = ""
        self._last_key = ""
        self._capturing = False
        self._done = False
        self._pending_high: int | None = None  # a high surrogate waiting for its pair
        self.value = ""
        """Everything decoded so far."""

    @property
    def done(self) -> bool:
        """True once the field's closing quote was seen."""
        return self._done

    def feed(self, fragment: str) -> str:
        """Add the next fragment; return the newly decoded characters of the field (maybe "")."""
        self._buf += fragment
        out: list[str] = []
        buf, n = self._buf, len(self._buf)
        i = self._pos
        while i < n:
            ch = buf[i]
            if self._in_string:
                if ch == "\\":
                    decoded, used = self._escape(buf, i)
                    if used == 0:
                        break  # incomplete escape: wait for more
                    if self._capturing and decoded:
                        out.append(decoded)
                    elif not self._capturing and self._string_is_key:
                        self._key += decoded
                    i += used
                    continue
                if ch == '"':
                    self._in_string = False
                    if self._string_is_key:
                        self._last_key = self._key
                    elif self._capturing:
                        self._capturing = False
                        self._done = True
                    i += 1
                    continue
                if self._capturing:
                    out.append(ch)
                elif self._string_is_key:
                    self._key += ch
                i += 1
                continue
            if ch == '"':
                self._in_string = True
                # At depth 1 a string right after "{" or "," is a key; after ":" it is a value.
                self._string_is_key = self._depth == 1 and self._expect_key
                if self._string_is_key:
                    self._key = ""
                else:
                    self._capturing = self._depth == 1 and self._last_key == self.name and not self._done
            elif ch in "{[":
                self._depth += 1
                self._expect_key = ch == "{"
            elif ch in "}]":
                self._depth -= 1
            elif ch == "," and self._depth == 1:
                self._expect_key = True
            elif ch == ":" and self._depth == 1:
                self._expect_key = False
            i += 1
        self._pos = i
        text = "".join(out)
        self.value += text
        return text

    _expect_key = False

    def _escape(self, buf: str, i: int) -> tuple[str, int]:
        """Decode the escape at ``buf[i]``; ``(text, chars used)``, ``used == 0`` if incomplete."""
        if i + 1 >= len(buf):
            return "", 0
        kind = buf[i + 1]
        if kind != "u":
            return _SIMPLE_ESCAPES.get(kind, kind), 2
        if i + 6 > len(buf):
            return "", 0
        try:
            code = int(buf[i + 2 : i + 6], 16)
        except ValueError:
            return "\ufffd", 6
        if 0xD800 <= code <= 0xDBFF:
            self._pending_high = code
            return "", 6
        if 0xDC00 <= code <= 0xDFFF and self._pending_high is not None:
            high, self._pending_high = self._pending_high, None
            return chr(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00)), 6
        self._pending_high = None
        return chr(code), 6
