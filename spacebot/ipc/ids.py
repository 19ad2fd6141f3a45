"""Every id scheme in one place: bus ids of processes and ids of conversations.

A **conversation id** is ``<platform>:<part>[:<part>...]``; each platform has a fixed shape,
listed in :data:`SCHEMES`. Ids go into ZeroMQ routing ids, log lines, event topics and memory
rows, so every part is restricted to ``[A-Za-z0-9_.+-]`` (no ``:``, ``/``, spaces or control
characters) and a whole id to 200 characters. A platform's own ids are turned into parts by the
builders below; nothing a person writes ever becomes an id without them.

A **process id** (bus id) is ``<kind>:<rest>``: ``channel:<agent>:<conversation id>``,
``memory:<agent>``, ``gateway:<name>``, ``branch:<hex>``, ``worker:<hex>``, ``cortex:<agent>``.

Every ``parse_*`` raises :class:`IdError` naming what is wrong; ``format``/``parse`` round-trip.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from spacebot.errors import SpacebotError

MAX_LEN = 200
_PART = re.compile(r"[A-Za-z0-9_.+-]{1,100}")
_AGENT = re.compile(r"[A-Za-z0-9_-]{1,64}")

SCHEMES: dict[str, tuple[str, ...]] = {
    "web": ("conversation",),
    "discord": ("guild", "channel"),
    "slack": ("team", "channel", "thread"),
    "telegram": ("chat", "topic"),
    "twitch": ("channel",),
    "webhook": ("source", "key"),
    "cron": ("job",),
}
"""Platform → the names of its parts; the last part of discord (``dm`` guild aside), slack and
telegram ids is optional: ``slack:T1:C2`` is a channel, ``slack:T1:C2:1712.5`` a thread in it."""

_OPTIONAL_LAST = {"slack", "telegram"}

GATEWAYS: dict[str, str] = {"web": "gateway:webchat", "cron": "cortex"}
"""Platform → the bus id prefix of the process that owns its conversations, where it is not
``gateway:<platform>`` (cron conversations belong to the agent's cortex: ``cortex:<agent>``)."""


class IdError(SpacebotError, ValueError):
    """An id that does not have the shape its scheme requires."""


@dataclass(frozen=True, slots=True)
class ConversationId:
    """A parsed conversation id."""

    platform: str
    parts: tuple[str, ...]

    def __str__(self) -> str:
        return ":".join((self.platform, *self.parts))

    def part(self, name: str) -> str | None:
        """The part called ``name`` in this platform's scheme (``None`` where it is absent)."""
        names = SCHEMES[self.platform]
        i = names.index(name)
        return self.parts[i] if i < len(self.parts) else None


def _check_part(platform: str, name: str, value: str) -> str:
    if not _PART.fullmatch(value):
        raise IdError(
            f"{platform} conversation id: {name} {value!r} must be 1-100 characters of "
            "letters, digits, '_', '.', '+' or '-'"
        )
    return value


def parse_conversation(text: str) -> ConversationId:
    """``"discord:123:456"`` → ``ConversationId("discord", ("123", "456"))``."""
    if not isinstance(text, str) or not text:
        raise IdError("conversation id: empty")
    if len(text) > MAX_LEN:
        raise IdError(f"conversation id: {len(text)} characters (at most {MAX_LEN})")
    platform, _, rest = text.partition(":")
    names = SCHEMES.get(platform)
    if names is None:
        known = ", ".join(SCHEMES)
        raise IdError(f"conversation id {text[:60]!r}: unknown platform {platform[:20]!r} (known: {known})")
    parts = tuple(rest.split(":")) if rest else ()
    least = len(names) - (1 if platform in _OPTIONAL_LAST else 0)
    if not least <= len(parts) <= len(names):
        shape = ":".join((platform, *(f"<{n}>" for n in names)))
        raise IdError(f"conversation id {text[:60]!r}: expected {shape}")
    for name, value in zip(names, parts, strict=False):
        _check_part(platform, name, value)
    return ConversationId(platform, parts)


def conversation(platform: str, *parts: str | int) -> str:
    """Build (and check) a conversation id: ``conversation("slack", "T1", "C2")``."""
    return str(parse_conversation(":".join((platform, *(str(p) for p in parts)))))


def new_web_conversation() -> str:
    """A fresh web chat conversation id."""
    return conversation("web", secrets.token_hex(8))


def is_conversation(text: str) -> bool:
    try:
        parse_conversation(text)
    except IdError:
        return False
    return True


# -- process ids ---------------------------------------------------------------------------------


def _check_agent(agent: str) -> str:
    if not _AGENT.fullmatch(agent):
        raise IdError(f"agent id {agent[:60]!r}: 1-64 of A-Z a-z 0-9 _ -")
    return agent


def channel(agent: str, conversation_id: str) -> str:
    """Bus id of the process of ``conversation_id`` for ``agent``."""
    return f"channel:{_check_agent(agent)}:{parse_conversation(conversation_id)}"


def parse_channel(ident: str) -> tuple[str, ConversationId]:
    """``"channel:main:web:ab12"`` → ``("main", ConversationId("web", ("ab12",)))``."""
    kind, _, rest = ident.partition(":")
    agent, _, conv = rest.partition(":")
    if kind != "channel" or not agent or not conv:
        raise IdError(f"channel id {ident[:60]!r}: expected channel:<agent>:<conversation>")
    return _check_agent(agent), parse_conversation(conv)


def memory(agent: str) -> str:
    """Bus id of ``agent``'s memory process."""
    return f"memory:{agent}"


def cortex(agent: str) -> str:
    """Bus id of ``agent``'s cortex process."""
    return f"cortex:{agent}"


def gateway(platform: str, agent: str = "") -> str:
    """Bus id of the process that owns ``platform``'s conversations (for ``agent``, where the
    owner is per agent: cron conversations belong to ``cortex:<agent>``)."""
    owner = GATEWAYS.get(platform, f"gateway:{platform}")
    return f"{owner}:{agent}" if owner == "cortex" else owner


PLATFORM_DEFAULT_INSTANCE = "main"


def gateway_of(conversation_id: str, agent: str = "") -> str:
    """Bus id of the process that owns ``conversation_id``.

    A chat platform's conversations belong to ``gateway:<platform>:<instance>``. A webhook id names
    its instance (``webhook:<instance>:<conversation>``); the other platforms' ids do not, so a
    conversation started without a message in hand (a resume after a restart, a cron delivery, a
    message sent to another conversation) goes through the instance named ``main`` — a live
    conversation answers through the gateway its last message came from (``Inbound.gateway``).
    """
    platform, _, rest = conversation_id.partition(":")
    if platform == "webhook":
        return f"gateway:webhook:{rest.partition(':')[0] or PLATFORM_DEFAULT_INSTANCE}"
    if platform in ("discord", "slack", "telegram", "twitch"):
        return f"gateway:{platform}:{PLATFORM_DEFAULT_INSTANCE}"
    return gateway(platform, agent)


def process(kind: str) -> str:
    """A fresh id for a process of ``kind`` that has no name of its own (branch, worker)."""
    return f"{kind}:{secrets.token_hex(4)}"


def is_delegate(ident: str) -> bool:
    """Whether ``ident`` names a branch or worker process (the author of a result line)."""
    kind = ident.partition(":")[0]
    return kind in ("branch", "worker") and len(ident) > len(kind) + 1
