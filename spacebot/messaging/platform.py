"""What every platform adapter gives the gateway layer, and what the gateway layer gives it back.

A platform module (``discord.py``, ``slack.py`` …) holds only its protocol: it connects, turns the
platform's events into :class:`PlatformMessage` / :class:`PlatformEdit` / :class:`PlatformDelete`
for a :class:`Sink`, and carries out the calls of :class:`Adapter`. Everything that is the same on
every platform — bindings and permissions, storing before acknowledging, dedupe, delivery to the
conversation process, the per-chat rate budget, streaming as edits, splitting — lives once in
:mod:`spacebot.messaging.gateway_core`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from spacebot.errors import SpacebotError
from spacebot.messaging.bindings import Scope


class AuthRejected(SpacebotError):
    """The platform refused the credentials: a configuration problem, not worth a restart loop."""


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file attached to a person's message."""

    name: str
    url: str
    mime: str = "application/octet-stream"
    size: int = 0
    fetch: Callable[[], Awaitable[bytes]] | None = field(default=None, compare=False, repr=False)
    """Downloads the file with the adapter's credentials (``None``: not downloadable)."""


@dataclass(frozen=True, slots=True)
class PlatformMessage:
    """A person's (or another bot's) message, as every platform looks to the gateway layer."""

    conversation: str
    """Spacebot's conversation id (``discord:<guild>:<channel>``, ``slack:<team>:<channel>``…)."""
    scope: Scope
    """Where it was said and by whom, for the permission rule."""
    message_id: str
    """The platform's id of the message (the dedupe key)."""
    author_name: str
    text: str
    """The text with the platform's mention markup rendered as names."""
    timestamp: float
    conversation_name: str = ""
    """How people call the conversation (``#general``, ``DM with Ana``)."""
    reply_to_text: str = ""
    """The message this one replies to, quoted as context (``Name: text``)."""
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True, slots=True)
class PlatformEdit:
    """A person edited (``text``) or deleted (``text is None``) a message."""

    conversation: str
    message_id: str
    text: str | None


class Sink(Protocol):
    """What an adapter reports to. ``message`` returns once the message is stored (or dropped):
    an adapter that must acknowledge to its platform (Slack) does so after it returns."""

    async def message(self, msg: PlatformMessage) -> None: ...

    async def edit(self, edit: PlatformEdit) -> None: ...


@dataclass(frozen=True, slots=True)
class OutFile:
    """A file the agent sends."""

    name: str
    path: Path


class Adapter(Protocol):
    """One connection to one platform account."""

    platform: ClassVar[str]
    limit: int
    """Longest message the platform takes, in characters."""
    supports_edit: bool
    """Whether replies can be streamed as edits of one message."""
    own_id: str
    """The bot's own user id on the platform, once connected (its messages are never taken)."""

    async def run(self, sink: Sink, connected: Callable[[], None]) -> None:
        """Connect and report events until cancelled; call ``connected`` once the platform accepted
        the credentials. Raises :class:`AuthRejected` when it did not."""
        ...

    async def post(self, conversation: str, text: str, *, nonce: str = "") -> str:
        """Send a message; returns its platform id. ``nonce`` makes a retried post idempotent
        where the platform supports it."""
        ...

    async def edit(self, conversation: str, message_id: str, text: str) -> None: ...

    async def delete(self, conversation: str, message_id: str) -> None: ...

    async def react(self, conversation: str, message_id: str, emoji: str) -> None: ...

    async def typing(self, conversation: str) -> None: ...

    async def send_files(self, conversation: str, files: list[OutFile], text: str = "") -> str: ...

    async def history(self, conversation: str, limit: int) -> list[PlatformMessage]:
        """The last ``limit`` messages before now, oldest first (a new conversation's backfill)."""
        ...

    async def close(self) -> None: ...


class Threads(Protocol):
    """An adapter whose platform has threads (optional: the gateway asks with ``getattr``)."""

    async def open_thread(self, conversation: str, message_id: str, name: str) -> str | None:
        """Open a thread called ``name`` on message ``message_id`` of ``conversation`` (or find the
        one it has); returns the thread's conversation id, or ``None`` where no thread can be
        opened (a direct message, a conversation that is a thread already)."""
        ...


class Mentions(Protocol):
    """An adapter with a markup for mentioning a person by id (optional, asked with ``getattr``)."""

    def mention(self, user_id: str) -> str:
        """The markup that mentions ``user_id`` (``<@123>`` on Discord, ``<@U1>`` on Slack)."""
        ...
