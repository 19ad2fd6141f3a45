"""One ordered queue per chat: sends, edits, typing and reactions share one budget.

Everything the agent does in a chat goes through that chat's :class:`ChatOutbox`, one call at a
time. A rate-limit wait (the platform libraries sleep through a 429 themselves) therefore delays the
queue and never reorders or duplicates a send. A streamed reply is one platform message edited at
most every ``edit_interval`` seconds with the text so far (intermediate texts are coalesced, so a
slow platform sees fewer edits, never a backlog), split into more messages when it outgrows the
platform's limit; its final text always arrives — if an edit fails, the rest is posted as new
messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from spacebot.ipc.messages import Card
from spacebot.messaging.deliveries import Deliveries
from spacebot.messaging.platform import Adapter, OutFile
from spacebot.messaging.split import split_message

log = logging.getLogger("spacebot.gateway")

TYPING_EVERY = 8.0
"""Seconds between typing indicators while the agent works (Discord's lasts 10 s, Slack's status
until cleared)."""


@dataclass(slots=True)
class _Stream:
    reply_id: str
    text: str = ""
    platform_ids: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)
    """The text each platform message shows now."""
    final: tuple[int, str, str] | None = None
    """``(stored id, agent, final text)`` once the reply is finished."""
    card: Card | None = None
    """A card shown with the final text's last message (adapters with ``renders_cards``)."""
    last_edit: float = 0.0
    abandoned: bool = False


Op = Callable[[], Awaitable[None]]


class ChatOutbox:
    """The agent's side of one chat on one platform."""

    def __init__(
        self,
        adapter: Adapter,
        conversation: str,
        deliveries: Deliveries,
        *,
        edit_interval: float,
        counters: dict[str, int],
    ) -> None:
        self.adapter = adapter
        self.conversation = conversation
        self.deliveries = deliveries
        self.edit_interval = edit_interval
        self.counters = counters
        self.streams: dict[str, _Stream] = {}
        self.ops: list[Op] = []
        self.finals: set[tuple[str, int]] = set()
        """Stored replies queued or shown by this process (the start-up scan and a live
        ``OutMessage`` can both name one)."""
        self.typing_until = 0.0
        self.last_typing = 0.0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- what the gateway asks -----------------------------------------------------------------

    def adopt(self, reply_id: str, platform_ids: list[str]) -> None:
        """A reply a previous gateway process showed while streaming (from :class:`Deliveries`)."""
        stream = _Stream(reply_id, platform_ids=list(platform_ids), abandoned=True)
        stream.shown = ["…"] * len(platform_ids)
        self.streams[reply_id] = stream

    def delta(self, reply_id: str, text: str) -> None:
        stream = self.streams.get(reply_id)
        if stream is None:
            stream = self.streams[reply_id] = self._new_stream(reply_id)
        stream.text += text
        self._kick()

    def abort(self, reply_id: str) -> None:
        """The channel abandoned this stream: its message is reused by the next reply, or removed
        when the turn ends without one."""
        stream = self.streams.get(reply_id)
        if stream is not None:
            stream.abandoned = True

    def final(
        self, reply_id: str, stored_id: int, agent: str, text: str, *, card: Card | None = None
    ) -> None:
        """The finished reply ``text`` (with ``card`` on its last message: only for an adapter
        whose ``post`` and ``edit`` take ``card=``, its ``renders_cards`` attribute true)."""
        if (agent, stored_id) in self.finals or self.deliveries.delivered(agent, stored_id):
            return  # a replayed OutMessage, or found by the start-up scan already
        self.finals.add((agent, stored_id))
        stream = self.streams.get(reply_id) if reply_id else None
        if stream is None:
            stream = self.streams[reply_id or f"stored-{stored_id}"] = self._new_stream(
                reply_id or f"stored-{stored_id}"
            )
        stream.final = (stored_id, agent, text)
        stream.card = card
        self._kick()

    def typing(self, state: str) -> None:
        if state == "idle":
            self.typing_until = 0.0
            self.ops.append(self._drop_abandoned)
        else:
            if state == "thinking":
                # A turn begins. A live conversation process finishes or aborts every reply of its
                # previous turn first, so a stream still unfinished was left by a process that died
                # mid-reply: the next reply takes its message over (or the turn's end removes it).
                for stream in self.streams.values():
                    if stream.final is None:
                        stream.abandoned = True
            self.typing_until = time.monotonic() + 120.0
        self._kick()

    def call(self, op: Op) -> None:
        """Queue one platform call (a reaction, a file, an error notice) behind what is queued."""
        self.ops.append(op)
        self._kick()

    def idle(self) -> bool:
        return not self.ops and not self.streams and not self._changed.is_set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the queue -----------------------------------------------------------------------------

    def _new_stream(self, reply_id: str) -> _Stream:
        return _Stream(reply_id)

    def _take_over(self, stream: _Stream) -> None:
        """A reply after a restart or a fallback takes over the message the abandoned one showed.
        Done in the queue's task, when the reply is first shown: never while a call of the
        abandoned one is under way (a post whose message id is not known yet)."""
        for old_id, old in list(self.streams.items()):
            if old is not stream and old.abandoned and old.final is None:
                del self.streams[old_id]
                self.deliveries.stream_done(self.conversation, old_id)
                stream.platform_ids, stream.shown = old.platform_ids, old.shown
                return

    def _kick(self) -> None:
        self._changed.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"outbox:{self.conversation}"
            )

    async def _run(self) -> None:
        while True:
            wait = await self._step()
            if wait is None:
                if not self._changed.is_set():
                    return
                continue
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._changed.wait()

    async def _step(self) -> float | None:
        """Do what is due; returns seconds until something more is due (``None``: nothing)."""
        self._changed.clear()
        while self.ops:
            op = self.ops.pop(0)
            await self._guard("call", op)
        now = time.monotonic()
        next_due: float | None = None
        for reply_id, stream in list(self.streams.items()):
            if stream.final is not None:
                await self._finish(reply_id, stream)
                continue
            if stream.abandoned or not self.adapter.supports_edit or not stream.text.strip():
                continue
            due = stream.last_edit + self.edit_interval
            if now >= due:
                await self._show(stream, stream.text + " …")
                stream.last_edit = time.monotonic()
                self.deliveries.stream_shown(self.conversation, reply_id, stream.platform_ids)
            else:
                next_due = min(next_due or due, due)
        if self.typing_until > now and not any(s.text for s in self.streams.values()):
            if now - self.last_typing >= TYPING_EVERY:
                self.last_typing = now
                await self._guard("typing", lambda: self.adapter.typing(self.conversation))
            due = self.last_typing + TYPING_EVERY
            next_due = min(next_due or due, due)
        return None if next_due is None else max(0.0, next_due - time.monotonic())

    async def _finish(self, reply_id: str, stream: _Stream) -> None:
        assert stream.final is not None
        stored_id, agent, text = stream.final
        ids = await self._show(stream, text, final=True)
        del self.streams[reply_id]
        self.deliveries.mark_delivered(agent, stored_id, self.conversation, ids)
        self.deliveries.stream_done(self.conversation, reply_id)
        self.counters["replies"] = self.counters.get("replies", 0) + 1

    async def _show(self, stream: _Stream, text: str, *, final: bool = False) -> list[str]:
        """Make the platform show ``text`` for ``stream``: edit what it shows, post what is new."""
        if not stream.platform_ids:
            self._take_over(stream)
        card = stream.card if final else None
        parts = split_message(text, self.adapter.limit) or (["…"] if card is None else [""])
        nonce_base = f"sb{stream.final[0]}" if final and stream.final else ""
        kept: list[str] = []
        shown: list[str] = []
        replaced: list[str] = []
        for i, part in enumerate(parts):
            # The card goes with the last message of the final text (``card=`` only when there is
            # one: adapters without cards never see the keyword).
            extra: dict[str, Any] = {"card": card} if card is not None and i == len(parts) - 1 else {}
            if i < len(stream.platform_ids):
                pid = stream.platform_ids[i]
                if i < len(stream.shown) and stream.shown[i] == part and not extra:
                    kept.append(pid)
                    shown.append(part)
                    continue
                if await self._guard(
                    "edit",
                    lambda pid=pid, part=part, extra=extra: self.adapter.edit(  # type: ignore[misc]
                        self.conversation, pid, part, **extra
                    ),
                ):
                    kept.append(pid)
                    shown.append(part)
                    continue
                if not final:
                    # While streaming (a rate limit that outlasted the library's retries): the
                    # message keeps its older text and a later edit catches up.
                    kept.append(pid)
                    shown.append(stream.shown[i] if i < len(stream.shown) else "")
                    continue
                # The final edit failed (message deleted, permissions): post the part as a new
                # message, and remove the old one, which would go on showing an unfinished text.
                replaced.append(pid)
            nonce = f"{nonce_base}p{i}" if nonce_base else ""
            posted: list[str] = []

            async def post(
                part: str = part,
                nonce: str = nonce,
                posted: list[str] = posted,
                extra: dict[str, Any] = extra,
            ) -> None:
                posted.append(await self.adapter.post(self.conversation, part, nonce=nonce, **extra))

            if await self._guard("post", post, retries=3 if final else 0):
                kept.append(posted[0])
                shown.append(part)
        # A final text shorter than what was streamed leaves messages over.
        for pid in [*replaced, *stream.platform_ids[len(parts) :]]:
            if pid not in kept:
                await self._guard("delete", lambda pid=pid: self.adapter.delete(self.conversation, pid))  # type: ignore[misc]
        stream.platform_ids = kept
        stream.shown = shown
        return kept

    async def _drop_abandoned(self) -> None:
        """The turn ended: a stream abandoned and not taken over by a later reply is removed."""
        for reply_id, stream in list(self.streams.items()):
            if stream.abandoned and stream.final is None:
                del self.streams[reply_id]
                for pid in stream.platform_ids:
                    await self._guard("delete", lambda pid=pid: self.adapter.delete(self.conversation, pid))  # type: ignore[misc]
                self.deliveries.stream_done(self.conversation, reply_id)

    async def _guard(self, what: str, op: Op, *, retries: int = 0) -> bool:
        """Run one platform call; count it; a failure is logged (and retried for final posts),
        never raised into the queue."""
        for attempt in range(retries + 1):
            self.counters[what] = self.counters.get(what, 0) + 1
            try:
                await op()
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the platform's own errors: each library has its own types
                self.counters[f"{what}_failed"] = self.counters.get(f"{what}_failed", 0) + 1
                log.warning(
                    "%s failed conversation=%s attempt=%d error=%s: %s",
                    what,
                    self.conversation,
                    attempt + 1,
                    type(exc).__name__,
                    exc,
                )
                if attempt < retries:
                    await asyncio.sleep(0.5 * 2**attempt)
        return False


def files_op(adapter: Adapter, conversation: str, files: list[OutFile], text: str) -> Op:
    async def op() -> None:
        await adapter.send_files(conversation, files, text)

    return op
