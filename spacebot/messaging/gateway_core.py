"""``gateway:<platform>:<instance>``: one platform account on one side, the agents on the other.

What is the same on every platform lives here, once:

* **the permission rule** (:func:`spacebot.messaging.bindings.decide`): which agent, if any, a
  message is for; dropped messages are counted by reason, never answered;
* **stored before seen**: a message is appended to its agent's transcript (``pending``) before the
  adapter acknowledges it to the platform; the platform's message id is the dedupe key, so a replay
  (Discord RESUME, Slack redelivery, a restart) is stored once and answered once;
* **delivery** to ``channel:<agent>:<conversation>`` as ``Inbound``, retried while it (re)starts;
  a person's edit or deletion is stored, and shown to a running conversation process as
  ``InboundEdit``;
* **what a reply carries** besides its text: a thread it opens (``OutMessage.thread_name``, where
  the adapter has :class:`~spacebot.messaging.platform.Threads`), ``@Name`` turned into mentions of
  the people seen in the chat (:mod:`spacebot.messaging.mentions`), a card
  (:mod:`spacebot.messaging.cards`);
* **the agent's side**: ``Out*`` from the conversation process go through the chat's
  :class:`~spacebot.messaging.outbox.ChatOutbox` (one rate budget, streaming as edits, splitting),
  and what was shown is recorded in :class:`~spacebot.messaging.deliveries.Deliveries`, so a
  restarted gateway finishes a half-streamed reply and posts a reply it missed, exactly once.

The platform module (:mod:`spacebot.messaging.discord`, :mod:`spacebot.messaging.slack`) holds
only the protocol, behind :class:`~spacebot.messaging.platform.Adapter`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, TypeVar, assert_never, cast

from spacebot.config import Config, PlatformInstance
from spacebot.errors import ConfigError, CredentialsRefused
from spacebot.ipc import ids
from spacebot.ipc.messages import (
    SUPERVISOR_ID,
    Body,
    ChannelUpsert,
    ConversationInfo,
    Envelope,
    Err,
    ErrorCode,
    Inbound,
    InboundEdit,
    Notice,
    OutAbort,
    Outbound,
    OutDelta,
    OutError,
    OutMessage,
    OutReaction,
    OutTyping,
    Ping,
    ReplyState,
    Shown,
    StoredMessage,
    TranscriptAppend,
    TranscriptEdit,
    TranscriptPage,
    TranscriptUnanswered,
)
from spacebot.ipc.replies import BusError, Reply, retry_transient
from spacebot.messaging import attachments, bindings, cards, mentions
from spacebot.messaging.deliveries import Deliveries, Served
from spacebot.messaging.outbox import ChatOutbox, files_op
from spacebot.messaging.platform import (
    Adapter,
    AuthRejected,
    OutFile,
    PlatformEdit,
    PlatformMessage,
    Threads,
)
from spacebot.runtime.child import ChildContext

log = logging.getLogger("spacebot.gateway")

T = TypeVar("T")

DELIVERY_DEADLINE = 120.0
"""Seconds a stored message is retried towards its conversation process before giving up (the
supervisor's resume sweep answers it later in any case)."""
MEMORY_ATTEMPTS = 30
RECOVER_WINDOW = 3600.0
"""How far back (last activity) a (re)started gateway looks at the conversations it served."""
CATCH_UP = 50
"""Platform messages read back per conversation after a restart."""
CATCH_UP_OVERLAP = 120.0
"""Seconds before a conversation's last stored message that the catch-up also takes: a message
received but not yet stored when the gateway died can be a little older than the last stored one
(its own message id keeps it to one answer)."""
EXIT_CONFIG = 78
"""Exit code for credentials the platform refused (``EX_CONFIG``): the supervisor marks the
process failed with the reason instead of restarting it into the same refusal."""


def gateway_id(platform: str, instance: str) -> str:
    return f"gateway:{platform}:{instance}"


class PlatformGateway:
    """The common half of every platform gateway (the :class:`~spacebot.messaging.platform.Sink`)."""

    def __init__(
        self,
        ctx: ChildContext,
        platform: str,
        instance: PlatformInstance,
        adapter: Adapter,
        deliveries: Deliveries,
    ) -> None:
        self.ctx = ctx
        self.platform = platform
        self.instance = instance
        self.adapter = adapter
        self.deliveries = deliveries
        self.id = ctx.id
        self.config: Config = ctx.config
        self.outboxes: dict[str, ChatOutbox] = {}
        self.agent_of: dict[str, str] = {}
        """Conversation → the agent that answers it."""
        self.known: set[str] = set()
        """Conversations registered with their agent's memory by this process."""
        self.arriving: set[str] = set()
        """Platform ids of the messages being taken right now (stored by their own call, never
        by another's history backfill, which would store them as already answered)."""
        self.dropped: collections.Counter[str] = collections.Counter()
        self.counters: dict[str, int] = {}
        self.people = mentions.People()
        """Who wrote in each chat, by name (``@Name`` in replies becomes a platform mention)."""
        self.editing: dict[str, asyncio.Lock] = {}
        """Conversation → held while a person's edit is stored and shown to its process."""
        self.handed: dict[str, float] = {}
        """Conversation → when a message was last handed to its process (epoch seconds)."""
        self.threaded: set[tuple[str, int]] = set()
        """``(agent, stored id)`` of the replies being shown in a thread they open."""
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- from the platform ---------------------------------------------------------------------

    async def message(self, msg: PlatformMessage) -> None:
        if msg.scope.author_id and msg.scope.author_id == getattr(self.adapter, "own_id", ""):
            return  # the bot's own message (a history catch-up sees them)
        # Everyone who writes here can be mentioned by name, not only those who address the bot.
        self.people.seen(msg.conversation, msg.author_name, msg.scope.author_id)
        decision = bindings.decide(
            msg.scope, self.instance, self.config.bindings, self.config.messaging.default_agent
        )
        if decision.agent is None:
            kind = decision.drop_kind or "dropped"
            self.dropped[kind] += 1
            log.info("dropped platform=%s conversation=%s reason=%s", self.platform, msg.conversation, kind)
            self.ctx.publish(
                f"gateway.{self.id}.dropped", Notice("dropped", {"reason": kind, "platform": self.platform})
            )
            return
        agent = decision.agent
        self.agent_of[msg.conversation] = agent
        self.arriving.add(msg.message_id)
        if msg.conversation not in self.known:
            await self._register(agent, msg)
        text = msg.text
        if msg.reply_to_text:
            text = f"(replying to {msg.reply_to_text})\n{text}"
        files = await attachments.take(
            msg.attachments,
            agent_home=Path(self.config.home) / "agents" / agent,
            message_key=f"{self.platform}-{msg.message_id}",
            save=self.config.channel.save_attachments,
        )
        text += files.text
        await self._after_edits(msg.conversation)
        stored = await self._mem(
            agent,
            TranscriptAppend(
                msg.conversation,
                text,
                author_id=f"{self.platform}:{msg.scope.author_id}",
                author_name=msg.author_name,
                platform_message_id=msg.message_id,
                attachments=files.meta or None,
                created_at=msg.timestamp,
                reply_state=ReplyState.PENDING,
            ),
            StoredMessage,
        )
        self.arriving.discard(msg.message_id)
        self.deliveries.served(msg.conversation, agent, msg.scope.is_dm)
        if stored.reply_state is ReplyState.PENDING:
            self._spawn(self._deliver(agent, stored, msg.conversation, msg.scope.is_dm))

    async def edit(self, edit: PlatformEdit) -> None:
        agent = self.agent_of.get(edit.conversation)
        if agent is None:
            return  # a conversation this process never took a message in: nothing stored to change
        conv = edit.conversation
        # Held until a running conversation process has the edit: a message that arrives behind it
        # (the platform sends them in order) is handed over after it (see ``_after_edits``).
        async with self.editing.setdefault(conv, asyncio.Lock()):
            stored = await self._mem(
                agent,
                TranscriptEdit(conv, edit.message_id, edit.text),
                StoredMessage | None,
            )
            if stored is None or not self._maybe_running(conv):
                return  # a conversation process started later reads the edit from storage
            try:
                await self.ctx.request(
                    ids.channel(agent, conv), InboundEdit(conv, stored), returns=None, timeout=15.0
                )
            except BusError as exc:
                log.info("edit not shown to conversation=%s error=%s", conv, exc)

    def _maybe_running(self, conv: str) -> bool:
        """Whether ``conv``'s process may be running: it was handed a message less than its idle
        timeout ago (a process that hibernated is not started again for an edit)."""
        last = self.handed.get(conv)
        idle = self.config.channel.idle_timeout
        return last is not None and (idle <= 0 or time.time() - last < idle)

    async def _after_edits(self, conv: str) -> None:
        """Wait for an edit of ``conv`` being stored and shown (a message behind it comes after)."""
        lock = self.editing.get(conv)
        if lock is not None and lock.locked():
            async with lock:
                pass

    async def _register(self, agent: str, msg: PlatformMessage) -> None:
        """First message of a conversation in this process: name it, and when memory has never
        seen it, backfill the platform's recent history (already answered, never re-answered)."""
        info = await self._mem(
            agent,
            ChannelUpsert(msg.conversation, self.platform, msg.conversation_name or msg.conversation),
            ConversationInfo,
        )
        self.known.add(msg.conversation)
        if self.instance.history_backfill <= 0 or time.time() - info.created_at > 60.0:
            return
        # New to memory: nothing stored yet (a restarted gateway meets conversations that are a
        # few seconds old and already hold their messages: those are not backfilled again).
        stored = await self._mem(agent, TranscriptPage(msg.conversation, limit=1), list[StoredMessage])
        if stored:
            return
        try:
            earlier = await self.adapter.history(msg.conversation, self.instance.history_backfill)
        except Exception as exc:  # the platform's own errors; backfill is a courtesy
            log.warning("history backfill failed conversation=%s error=%s", msg.conversation, exc)
            return
        own = getattr(self.adapter, "own_id", "")
        for old in earlier:
            if old.message_id in self.arriving or old.timestamp >= msg.timestamp:
                continue  # this message, or one taken at the same time (its own call stores it)
            if own and old.scope.author_id == own:
                continue  # the bot's own words from before memory knew the conversation
            self.people.seen(old.conversation, old.author_name, old.scope.author_id)
            await self._mem(
                agent,
                TranscriptAppend(
                    old.conversation,
                    old.text,
                    author_id=f"{self.platform}:{old.scope.author_id}",
                    author_name=old.author_name,
                    platform_message_id=old.message_id,
                    created_at=old.timestamp,
                    reply_state=ReplyState.NONE,
                ),
                StoredMessage,
            )

    async def _deliver(self, agent: str, stored: StoredMessage, conversation: str, direct: bool) -> None:
        inbound = Inbound(
            platform=self.platform,
            conversation=conversation,
            author_id=stored.author_id,
            author_name=stored.author_name,
            text=stored.text,
            message_id=stored.platform_message_id or str(stored.id),
            stored_id=stored.id,
            timestamp=stored.created_at,
            gateway=self.id,
            attachments=stored.attachments,
            direct=direct,
        )
        target = ids.channel(agent, conversation)
        self.handed[conversation] = time.time()
        try:
            await retry_transient(
                lambda: self.ctx.request(target, inbound, returns=None, timeout=15.0),
                deadline=time.monotonic() + DELIVERY_DEADLINE,
                what=f"delivery to {target}",
                first_delay=0.05,
            )
        except BusError as exc:
            # Stored pending: the supervisor's resume sweep starts the conversation later.
            log.error("delivery failed conversation=%s message=%d error=%s", conversation, stored.id, exc)

    # -- from conversation processes -----------------------------------------------------------

    def on_bus(self, env: Envelope) -> Reply | None:
        body = env.body
        if not isinstance(body, Outbound):
            return Err(ErrorCode.UNSUPPORTED, f"{self.id} does not handle {type(body).__name__}")
        self._outbound(body, _agent_of_channel(env.src))
        return None

    def _outbound(self, body: Outbound, agent: str) -> None:
        conv = body.conversation
        box = self._outbox(conv)
        match body:
            case OutDelta():
                box.delta(body.reply_id, body.text)
            case OutMessage():
                agent = agent or self.agent_of.get(conv, "")
                if body.thread_name and body.thread_on is not None and hasattr(self.adapter, "open_thread"):
                    # Shown in a thread: what was streamed here is taken back (or taken over by
                    # the conversation's next reply).
                    box.abort(body.reply_id)
                    self._spawn(self._in_thread(agent, body))
                else:
                    self._final(box, agent, body, body.reply_id)
            case OutAbort():
                box.abort(body.reply_id)
            case OutTyping():
                box.typing(body.state)
            case OutReaction():
                self._spawn(self._react(agent or self.agent_of.get(conv, ""), box, body))
            case OutError():
                box.call(lambda: self._post_plain(conv, f"⚠️ {body.text}"))
            case _:
                assert_never(body)

    def _final(self, box: ChatOutbox, agent: str, body: OutMessage, reply_id: str) -> None:
        """Show a stored message in ``box``'s chat: its files, then its text (and card)."""
        message = body.message
        files = _out_files(message)
        if files:
            box.call(files_op(self.adapter, box.conversation, files, ""))
        if not message.text.strip() and files:
            return
        text, card = message.text, None
        if body.card is not None and getattr(self.adapter, "renders_cards", False):
            own = cards.without_card(text, body.card)
            if own is not None:  # else cut by the length limit: shown as stored, in plain text
                text, card = own, body.card
        markup = getattr(self.adapter, "mention", None)
        if markup is not None:
            text = self.people.link(box.conversation, text, markup)
        box.final(reply_id, message.id, agent, text, card=card)

    async def _in_thread(self, agent: str, body: OutMessage) -> None:
        """``reply(thread_name=…)``: open a thread on the message answered, make it a conversation
        of its own whose history starts with that message and this reply, and show the reply
        there. Where no thread can be opened, the reply is shown in the conversation."""
        conv, message = body.conversation, body.message
        if (agent, message.id) in self.threaded or self.deliveries.delivered(agent, message.id):
            return  # a replayed OutMessage
        self.threaded.add((agent, message.id))
        thread: str | None = None
        parent: StoredMessage | None = None
        try:
            page = await self._mem(agent, TranscriptPage(conv, limit=200), list[StoredMessage])
            parent = next((m for m in page if m.id == body.thread_on), None)
            if parent is not None and parent.platform_message_id:
                opener = cast(Threads, self.adapter)
                thread = await opener.open_thread(conv, parent.platform_message_id, body.thread_name)
        except Exception as exc:  # the platform's own errors, or memory away: shown here instead
            log.warning("thread not opened conversation=%s error=%s: %s", conv, type(exc).__name__, exc)
        if thread is None or parent is None:
            self._final(self._outbox(conv), agent, body, body.reply_id)
            return
        self.agent_of.setdefault(thread, agent)
        self.people.inherit(thread, conv)
        try:
            await self._mem(agent, ChannelUpsert(thread, self.platform, body.thread_name), ConversationInfo)
            for line in (parent, message):
                await self._mem(
                    agent,
                    TranscriptAppend(
                        thread,
                        line.text,
                        author_id=line.author_id,
                        author_name=line.author_name,
                        role=line.role,
                        platform_message_id=line.platform_message_id
                        if line is parent
                        else f"thread-reply:{message.id}",
                        attachments=line.attachments or None,
                        created_at=line.created_at,
                        reply_state=ReplyState.NONE,
                    ),
                    StoredMessage,
                )
        except BusError as exc:  # the thread is open: the reply goes there, its history is short
            log.warning("thread history not stored conversation=%s error=%s", thread, exc)
        self.deliveries.served(thread, agent)
        self._final(self._outbox(thread), agent, body, "")

    async def _post_plain(self, conv: str, text: str) -> None:
        await self.adapter.post(conv, text)

    async def _react(self, agent: str, box: ChatOutbox, body: OutReaction) -> None:
        """A reaction names a stored message; the platform needs its platform id."""
        page = await self._mem(agent, TranscriptPage(body.conversation, limit=200), list[StoredMessage])
        target = next((m for m in page if m.id == body.message_id), None)
        pid = target.platform_message_id if target else None
        if target is not None and target.role == "assistant":
            pids = self.deliveries.platform_ids(agent, target.id)
            pid = pids[0] if pids else None
        if not pid:
            log.info("reaction to message %d: no platform message to react to", body.message_id)
            return
        box.call(lambda: self.adapter.react(body.conversation, pid, body.emoji))

    def _outbox(self, conv: str) -> ChatOutbox:
        box = self.outboxes.get(conv)
        if box is None:
            box = self.outboxes[conv] = ChatOutbox(
                self.adapter,
                conv,
                self.deliveries,
                edit_interval=self.instance.stream_edit_interval,
                counters=self.counters,
            )
        return box

    # -- after a restart -----------------------------------------------------------------------

    def adopt_streams(self) -> None:
        """Half-streamed replies a previous process of this gateway showed: taken over by the next
        reply of their conversation (called before any ``Out*`` is read, so the stream that goes
        on after a restart finds its message)."""
        for stream in self.deliveries.open_streams():
            self._outbox(stream.conversation).adopt(stream.reply_id, stream.platform_ids)

    async def recover(self) -> None:
        """What a previous process of this gateway left undone, for the conversations it served in
        the last hour, once it is connected again:

        * replies stored while it was down (their ``OutMessage`` had nowhere to go) are posted, with
          the card and in the thread they were sent with (stored with them);
        * messages it stored but had not yet handed to their conversation are handed over (a live
          conversation process answers only what it is sent);
        * messages people wrote while it was down — or that it received and had not stored when it
          died — are read back from the platform's history and taken like new ones (the platform
          message id keeps every one of them to one answer).
        """
        for served in self.deliveries.recent(time.time() - RECOVER_WINDOW):
            try:
                await self._recover(served)
            except BusError as exc:
                log.warning("recovery skipped conversation=%s error=%s", served.conversation, exc)

    async def _recover(self, served: Served) -> None:
        self.agent_of.setdefault(served.conversation, served.agent)
        self.handed.setdefault(served.conversation, served.last_at)
        page = await self._mem(
            served.agent, TranscriptPage(served.conversation, limit=30), list[StoredMessage]
        )
        for message in page:
            if (
                message.role == "assistant"
                and message.created_at >= served.first_at
                and not self.deliveries.delivered(served.agent, message.id)
            ):
                log.info(
                    "posting a reply missed while down conversation=%s id=%d", served.conversation, message.id
                )
                self._outbound(_as_meant(served.conversation, message), served.agent)
        pending = await self._mem(
            served.agent, TranscriptUnanswered(served.conversation, limit=50), list[StoredMessage]
        )
        for stored in pending:
            self._spawn(self._deliver(served.agent, stored, served.conversation, served.direct))
        try:
            recent = await self.adapter.history(served.conversation, CATCH_UP)
        except Exception as exc:  # the platform's own errors: catch-up is best effort
            log.warning("catch-up failed conversation=%s error=%s", served.conversation, exc)
            return
        since = served.last_at - CATCH_UP_OVERLAP
        for msg in recent:
            if msg.timestamp >= since:
                await self.message(msg)

    # -- helpers -------------------------------------------------------------------------------

    async def _mem(self, agent: str, body: Body, returns: Any) -> Any:
        return await retry_transient(
            lambda: self.ctx.request(ids.memory(agent), body, returns=returns, timeout=10.0),
            attempts=MEMORY_ATTEMPTS,
            what=f"{type(body).__name__} to memory of {agent}",
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for box in self.outboxes.values():
            await box.close()
        for task in list(self._tasks):
            task.cancel()


def _agent_of_channel(src: str) -> str:
    """The agent a sender works for: ``channel:<agent>:…``, or ``cortex:<agent>`` (a cron job's
    answer delivered to a platform conversation)."""
    if src.startswith("cortex:"):
        return src.removeprefix("cortex:")
    try:
        agent, _ = ids.parse_channel(src)
    except ids.IdError:
        return ""
    return agent


def _as_meant(conversation: str, message: StoredMessage) -> OutMessage:
    """A stored reply shown as its ``OutMessage`` showed it: with its card, in the thread it opens
    (what the conversation process stored with it, ``StoredMessage.shown``)."""
    shown = message.shown or Shown()
    return OutMessage(
        conversation, message, thread_name=shown.thread_name, thread_on=shown.thread_on, card=shown.card
    )


def _out_files(message: StoredMessage) -> list[OutFile]:
    """Files the agent shared with a message (``send_file``): a ``path`` in the attachment."""
    out = []
    for a in message.attachments or []:
        path = a.get("path") if isinstance(a, dict) else None
        if path:
            out.append(OutFile(str(a.get("name") or Path(path).name), Path(path)))
    return out


def find_instance(config: Config, platform: str, name: str) -> PlatformInstance:
    instances: list[PlatformInstance] = getattr(config.messaging, platform, [])
    for inst in instances:
        if inst.name == name:
            return inst
    raise ConfigError(f"no [[messaging.{platform}]] instance named {name!r}")


ADAPTERS = {
    "discord": "spacebot.messaging.discord_adapter:DiscordAdapter",
    "slack": "spacebot.messaging.slack_adapter:SlackAdapter",
    "webhook": "spacebot.messaging.webhook_adapter:WebhookAdapter",
    "twitch": "spacebot.messaging.twitch_adapter:TwitchAdapter",
    "telegram": "spacebot.messaging.telegram_adapter:TelegramAdapter",
}
"""Platform → ``module:class`` of its adapter, built as ``cls(ctx, instance)`` (an async factory
``cls.create``)."""


async def run(ctx: ChildContext, platform: str, instance: str) -> None:
    """Entry point of ``gateway:<platform>:<instance>``."""
    from spacebot.runtime.child import resolve

    inst = find_instance(ctx.config, platform, instance)
    target = ADAPTERS.get(platform)
    if target is None:
        raise ConfigError(f"unknown platform {platform!r} (known: {', '.join(ADAPTERS)})")
    factory: Any = resolve(target)
    adapter: Adapter = await factory.create(ctx, inst)
    deliveries = Deliveries(Path(ctx.config.home) / "gateways" / f"{platform}-{instance}.sqlite")
    gw = PlatformGateway(ctx, platform, inst, adapter, deliveries)
    gw.adopt_streams()
    ctx.on_message(gw.on_bus)

    def connected() -> None:
        log.info("connected platform=%s instance=%s", platform, instance)
        ctx.ready()
        gw._spawn(gw.recover())

    try:
        await adapter.run(gw, connected)
    except AuthRejected as exc:
        reason = f"{platform} token rejected ({exc})"
        log.error("%s: check the credentials of [[messaging.%s]] %r", reason, platform, instance)
        # The reason goes out as this process's task line, and a round trip to the supervisor
        # makes sure it was read before the exit is: status shows ``failed: <reason>``.
        ctx.progress(task=f"failed: {reason}")
        ctx.heartbeat()
        with contextlib.suppress(BusError):
            await ctx.request(SUPERVISOR_ID, Ping(b""), timeout=5.0)
        raise CredentialsRefused(reason) from None
    finally:
        await gw.close()
        await adapter.close()
        deliveries.close()


run.manual_ready = True  # type: ignore[attr-defined]  # ready once the platform accepted us
