"""Who each memory is by or about, so a question that names a person is also searched among
that person's memories only.

A memory belongs to a person through its metadata: ``speaker`` (who said it: a transcript line, an
imported chat) and ``people`` (a list of whom it is about: what ``memory_save``'s ``about``
writes). A person may be known by several names: a memory whose metadata has ``person`` and
``aliases`` (``{"person": "Ana", "aliases": ["ana_b", "Anastasia"]}``, typically an identity
memory) makes each alias stand for that person in queries, for as long as it is not forgotten.

Names match a query as whole words, case-insensitively (``"Ana's"`` names Ana, ``"Banana"`` does
not); a name of several words must appear with its words in order. The index lives in memory
(one set of ids per name), is built from the store at start and kept current by saves and
forgets; it is guarded by one lock, since recalls run on several threads.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

_WORD = re.compile(r"\w+")
MIN_NAME_CHARS = 2
"""Shorter names are ignored (an initial would match every query holding that letter)."""


COMMON_WORDS = frozenset(
    """a an the this that these those and or but nor so yet if then than as of to in on at by for
    with from into onto about over under after before between through during without within up
    down out off i me my mine we us our ours you your yours he him his she her hers it its they
    them their theirs who whom whose what which when where why how all any each every some no not
    is am are was were be been being do does did done have has had having will would shall should
    can could may might must there here also just only very too again ever never yes oh hi hey ok
    okay please thanks""".split()  # noqa: SIM905 - a list literal of 130 words would be 130 lines
)
"""Function words no alias may be made of: an alias that is one (a prompt-injected "aliases":
["the"]) would add one person's lists to nearly every question."""


def common(name: tuple[str, ...]) -> bool:
    """Whether every word of ``name`` is a :data:`COMMON_WORDS` word."""
    return all(w in COMMON_WORDS for w in name)


def words(text: str) -> tuple[str, ...]:
    """``text`` as case-folded words (what names and queries are matched on)."""
    return tuple(_WORD.findall(text.casefold()))


def _name(value: Any) -> tuple[str, ...] | None:
    if not isinstance(value, str) or len(value.strip()) < MIN_NAME_CHARS:
        return None
    return words(value) or None


def members_of(metadata: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """The people a memory with ``metadata`` is by or about."""
    found = [_name(metadata.get("speaker"))]
    about = metadata.get("people")
    if isinstance(about, list):
        found.extend(_name(p) for p in about)
    return list(dict.fromkeys(n for n in found if n))


def aliases_in(metadata: Mapping[str, Any]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """``(alias, person)`` pairs a memory with ``metadata`` defines."""
    person = _name(metadata.get("person"))
    aliases = metadata.get("aliases")
    if person is None or not isinstance(aliases, list):
        return []
    return [
        (a, person) for a in (_name(x) for x in aliases) if a is not None and a != person and not common(a)
    ]


class People:
    """Name → memory ids, and alias → name (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: dict[tuple[str, ...], set[int]] = {}
        self._names_of: dict[int, list[tuple[str, ...]]] = {}
        self._aliases: dict[tuple[str, ...], dict[tuple[str, ...], set[int]]] = {}
        """alias → person → the memories saying so."""
        self._alias_defs: dict[int, list[tuple[tuple[str, ...], tuple[str, ...]]]] = {}
        self._by_first: dict[str, set[tuple[str, ...]]] = {}
        """First word → every known name and alias starting with it (what a query is scanned for)."""

    def add(self, items: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        """Index memories given as ``(id, metadata)``."""
        with self._lock:
            for mid, metadata in items:
                names = members_of(metadata)
                if names:
                    self._names_of[mid] = names
                    for n in names:
                        self._members.setdefault(n, set()).add(mid)
                        self._by_first.setdefault(n[0], set()).add(n)
                defs = aliases_in(metadata)
                if defs:
                    self._alias_defs[mid] = defs
                    for alias, person in defs:
                        self._aliases.setdefault(alias, {}).setdefault(person, set()).add(mid)
                        self._by_first.setdefault(alias[0], set()).add(alias)

    def remove(self, ids: Iterable[int]) -> None:
        """Forget memories (forgotten ones are never a person's, nor define an alias)."""
        with self._lock:
            for mid in ids:
                for n in self._names_of.pop(mid, []):
                    held = self._members.get(n)
                    if held is not None:
                        held.discard(mid)
                        if not held:
                            del self._members[n]
                for alias, person in self._alias_defs.pop(mid, []):
                    by = self._aliases.get(alias, {})
                    said = by.get(person)
                    if said is not None:
                        said.discard(mid)
                        if not said:
                            del by[person]
                    if not by:
                        self._aliases.pop(alias, None)

    def named_in(self, query: str) -> list[tuple[str, ...]]:
        """The people ``query`` names, directly or by an alias (each once, in order of mention)."""
        q = words(query)
        found: list[tuple[str, ...]] = []
        with self._lock:
            for at, word in enumerate(q):
                for name in self._by_first.get(word, ()):
                    if q[at : at + len(name)] != name:
                        continue
                    if name in self._members:
                        found.append(name)
                    found.extend(self._aliases.get(name, {}))
        return list(dict.fromkeys(found))

    def members(self, names: Iterable[tuple[str, ...]]) -> set[int]:
        """The memories by or about any of ``names``."""
        with self._lock:
            out: set[int] = set()
            for n in names:
                out |= self._members.get(n, set())
            return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._members)


__all__ = ["COMMON_WORDS", "People", "aliases_in", "common", "members_of", "words"]
