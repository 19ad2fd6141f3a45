"""``@Name`` in the agent's text becomes a platform mention of the person of that name.

The model knows people by the names it reads in the conversation; the platforms mention by id. A
gateway remembers, per chat, the names of the people whose messages it took (a small, bounded map:
the most recently seen names of the most recently active chats) and, where its adapter has a
mention markup (:class:`~spacebot.messaging.platform.Mentions`), turns ``@Name`` into it. A name it
has not seen stays text. Nothing here ever makes a mass mention: ``@everyone``, ``@here`` and
``<!channel>`` are each adapter's to neutralise.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable

NAMES_PER_CHAT = 200
CHATS = 2000


class People:
    """Name → platform user id, per chat, bounded (least recently seen goes first)."""

    def __init__(self, *, names_per_chat: int = NAMES_PER_CHAT, chats: int = CHATS) -> None:
        self.names_per_chat = names_per_chat
        self.chats = chats
        self._chats: OrderedDict[str, OrderedDict[str, str]] = OrderedDict()

    def seen(self, chat: str, name: str, user_id: str) -> None:
        """``name`` (a display name) wrote in ``chat`` as ``user_id``."""
        name = name.strip()
        if not name or not user_id or len(name) > 100:
            return
        names = self._chats.get(chat)
        if names is None:
            names = self._chats[chat] = OrderedDict()
            while len(self._chats) > self.chats:
                self._chats.popitem(last=False)
        else:
            self._chats.move_to_end(chat)
        key = name.casefold()
        names[key] = user_id
        names.move_to_end(key)
        while len(names) > self.names_per_chat:
            names.popitem(last=False)

    def inherit(self, chat: str, parent: str) -> None:
        """A new chat (a thread) knows the people of the one it was opened from."""
        for key, user_id in list(self._chats.get(parent, {}).items()):
            self.seen(chat, key, user_id)

    def link(self, chat: str, text: str, markup: Callable[[str], str]) -> str:
        """``text`` with every ``@Name`` of a person seen in ``chat`` replaced by ``markup(id)``
        (the longest name wins: ``@Ana Maria`` before ``@Ana``); other ``@words`` stay as they are."""
        names = self._chats.get(chat)
        if not names or "@" not in text:
            return text
        ordered = sorted(names, key=len, reverse=True)
        pattern = re.compile(
            r"(?<![\w@<])@(" + "|".join(re.escape(n) for n in ordered) + r")(?![\w])", re.IGNORECASE
        )

        def replace(m: re.Match[str]) -> str:
            user_id = names.get(m.group(1).casefold())
            return markup(user_id) if user_id else m.group(0)

        # Code is shown as written: an ``@Name`` in a code block or span stays text.
        out: list[str] = []
        at = 0
        for code in _CODE.finditer(text):
            out.append(pattern.sub(replace, text[at : code.start()]))
            out.append(code.group(0))
            at = code.end()
        out.append(pattern.sub(replace, text[at:]))
        return "".join(out)


_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]+`", re.DOTALL)
"""Fenced code blocks (an unclosed one runs to the end, as the platforms show it) and inline spans."""
