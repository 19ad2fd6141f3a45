"""Who may talk to the bot on a chat platform, and which agent answers: the one permission rule.

Every platform gateway (Discord, Slack, and those to come) asks :func:`decide` about each inbound
message and does what it says; nothing else admits a message. The rule fails closed: a message is
accepted only when every step allows it. In order:

1. a message from a bot is dropped unless the instance has ``allow_bots = true``;
2. a direct message is dropped unless its author is in the instance's ``dm_allowed_users``
   (empty: no direct messages at all);
3. the first ``[[bindings]]`` entry that matches names the agent; when none does, the
   ``[messaging] default_agent`` answers, and without one the message is dropped;
4. outside direct messages, when mentions are required (the binding's ``require_mention``, else
   the instance's), a message that neither mentions the bot nor replies to it is dropped.

A binding matches when its ``platform`` is the message's and each of ``instance``, ``guild`` and
``channels`` that is set agrees (a thread agrees by its own id or by its parent channel's). A direct
message matches only bindings with ``dms = true``; a binding with ``dms = true`` and neither
``guild`` nor ``channels`` matches direct messages only. ``spacebot bindings explain`` prints the
same reasoning (:func:`explain`). See docs/platforms.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from spacebot.config import PLATFORMS, Binding, Config, PlatformInstance

DropKind = Literal["bot", "dm_not_allowed", "no_binding", "needs_mention"]
"""Why a message was dropped; gateways count drops by it."""


@dataclass(frozen=True)
class Scope:
    """Where an inbound message was said and by whom, as a gateway sees it."""

    platform: str
    """``discord``, ``slack``, ..."""
    instance: str
    """The ``[[messaging.<platform>]]`` instance that received it."""
    guild: str
    """Discord guild id or Slack team id; empty in direct messages."""
    channel: str
    """The channel (or thread, or direct-message channel) id."""
    parent_channel: str = ""
    """The channel a thread belongs to; empty unless ``channel`` is a thread."""
    is_dm: bool = False
    """A direct message to the bot."""
    author_id: str = ""
    """The platform's id of the author."""
    author_is_bot: bool = False
    """The author is a bot account."""
    mentions_bot: bool = False
    """The message mentions the bot or replies to one of its messages."""


@dataclass(frozen=True)
class Decision:
    """What to do with one message and why."""

    agent: str | None
    """The agent that answers; ``None``: the message is dropped."""
    reason: str
    """Why, in one sentence for logs and ``spacebot bindings explain``."""
    binding: int | None = None
    """Index of the ``[[bindings]]`` entry that matched (from 0); ``None`` for the default agent or a drop."""
    drop_kind: DropKind | None = None
    """Why it was dropped; ``None`` when accepted."""
    authority: bool = False
    """The author may use ``/commands`` (is in the instance's ``authority``)."""

    @property
    def accepted(self) -> bool:
        """An agent answers the message."""
        return self.agent is not None


def match(binding: Binding, scope: Scope) -> str | None:
    """Why ``binding`` does not match ``scope``, or ``None`` when it does."""
    if binding.platform != scope.platform:
        return f"platform {binding.platform!r} is not {scope.platform!r}"
    if binding.instance and binding.instance != scope.instance:
        return f"instance {binding.instance!r} is not {scope.instance!r}"
    if scope.is_dm:
        return None if binding.dms else "it does not take direct messages (dms = false)"
    if binding.dms and not binding.guild and not binding.channels:
        return "it takes direct messages only (dms = true, no guild or channels)"
    if binding.guild and binding.guild != scope.guild:
        return f"guild {binding.guild!r} is not {scope.guild!r}"
    if binding.channels:
        if scope.channel in binding.channels:
            return None
        if scope.parent_channel and scope.parent_channel in binding.channels:
            return None
        where = f"channel {scope.channel!r}"
        if scope.parent_channel:
            where += f" (a thread of {scope.parent_channel!r})"
        return f"{where} is not in its channels"
    return None


def decide(
    scope: Scope, instance: PlatformInstance, bindings: Sequence[Binding], default_agent: str
) -> Decision:
    """The fate of one inbound message: which agent answers it, or why it is dropped.

    Args:
        scope: the message's platform, place and author.
        instance: the configuration of the instance that received it.
        bindings: ``config.bindings``, in file order (the first match wins).
        default_agent: ``config.messaging.default_agent`` (empty: unmatched messages are dropped).
    """
    authority = scope.author_id in instance.authority
    if scope.author_is_bot and not instance.allow_bots:
        return _drop("bot", f"author {scope.author_id!r} is a bot and allow_bots is false", authority)
    if scope.is_dm and scope.author_id not in instance.dm_allowed_users:
        why = "dm_allowed_users is empty" if not instance.dm_allowed_users else "not in dm_allowed_users"
        return _drop("dm_not_allowed", f"direct message from {scope.author_id!r}: {why}", authority)
    index = next((n for n, b in enumerate(bindings) if match(b, scope) is None), None)
    if index is not None:
        agent = bindings[index].agent
        override = bindings[index].require_mention
        require = instance.require_mention if override is None else override
        via = f"bindings[{index}]"
    elif default_agent:
        agent, require, via = default_agent, instance.require_mention, "default_agent (no binding matches)"
    else:
        return _drop("no_binding", "no binding matches and messaging.default_agent is not set", authority)
    if require and not scope.is_dm and not scope.mentions_bot:
        return _drop(
            "needs_mention",
            f"{via} requires a mention of the bot (or a reply to it) and the message has none",
            authority,
        )
    return Decision(agent, f"accepted: agent {agent!r} answers, by {via}", index, None, authority)


def _drop(kind: DropKind, reason: str, authority: bool) -> Decision:
    return Decision(None, f"dropped: {reason}", None, kind, authority)


def explain(
    scope: Scope, instance: PlatformInstance, bindings: Sequence[Binding], default_agent: str
) -> list[str]:
    """The reasoning of :func:`decide`, one line per step taken and per binding considered."""
    lines = [f"scope: {_describe(scope)}"]
    if scope.author_is_bot:
        verdict = "allowed" if instance.allow_bots else "dropped here"
        lines.append(f"bot author: {verdict} (allow_bots = {_toml(instance.allow_bots)})")
        if not instance.allow_bots:
            return [*lines, _authority_line(scope, instance)]
    if scope.is_dm:
        allowed = scope.author_id in instance.dm_allowed_users
        lines.append(
            "direct message: author is in dm_allowed_users"
            if allowed
            else "direct message: author is not in dm_allowed_users: dropped here"
        )
        if not allowed:
            return [*lines, _authority_line(scope, instance)]
    index: int | None = None
    for n, binding in enumerate(bindings):
        if index is not None:
            lines.append(f"  bindings[{n}] -> {binding.agent!r}: not considered (an earlier binding matched)")
            continue
        why = match(binding, scope)
        if why is None:
            index = n
        lines.append(f"  bindings[{n}] -> {binding.agent!r}: " + ("matches" if why is None else f"no: {why}"))
    if not bindings:
        lines.append("  no [[bindings]] entries")
    if index is None:
        lines.append(
            f"default_agent: {default_agent!r}" if default_agent else "default_agent: not set: dropped here"
        )
    if not scope.is_dm and (index is not None or default_agent):
        override = bindings[index].require_mention if index is not None else None
        require = instance.require_mention if override is None else override
        source = f"bindings[{index}]" if override is not None else f"instance {instance.name!r}"
        lines.append(
            f"require_mention: {_toml(require)} (from {source}); "
            f"the message {'mentions' if scope.mentions_bot else 'does not mention'} the bot"
        )
    return [*lines, _authority_line(scope, instance)]


def _authority_line(scope: Scope, instance: PlatformInstance) -> str:
    verb = "is" if scope.author_id in instance.authority else "is not"
    return f"authority: author {verb} in the instance's authority (/commands)"


def _describe(scope: Scope) -> str:
    parts = [f"{scope.platform}/{scope.instance}"]
    if scope.is_dm:
        parts.append("direct message")
    else:
        parts.append(f"guild {scope.guild!r}" if scope.guild else "no guild")
        parts.append(f"channel {scope.channel!r}")
        if scope.parent_channel:
            parts.append(f"thread of {scope.parent_channel!r}")
    parts.append(f"author {scope.author_id!r}" + (" (bot)" if scope.author_is_bot else ""))
    return ", ".join(parts)


def _toml(value: bool) -> str:
    return "true" if value else "false"


def instance_of(config: Config, platform: str, name: str) -> PlatformInstance | None:
    """The ``[[messaging.<platform>]]`` instance called ``name``, or ``None``."""
    instances: list[PlatformInstance] = getattr(config.messaging, platform, None) or []
    return next((inst for inst in instances if inst.name == name), None)


def warnings(config: Config) -> list[str]:
    """What a valid configuration will not do as its author may expect (``spacebot config check``)."""
    found: list[str] = []
    ms = config.messaging
    for n, binding in enumerate(config.bindings):
        instances = [i for i in getattr(ms, binding.platform, None) or [] if i.enabled]
        if binding.instance:
            instances = [i for i in instances if i.name == binding.instance]
        if not instances:
            found.append(
                f"bindings[{n}] never matches: no enabled [[messaging.{binding.platform}]]"
                + (f" named {binding.instance!r}" if binding.instance else "")
            )
        elif binding.dms and not any(i.dm_allowed_users for i in instances):
            found.append(
                f"bindings[{n}] takes direct messages but dm_allowed_users is empty "
                f"(no direct message is accepted)"
            )
    for platform in PLATFORMS:
        for inst in getattr(ms, platform):
            bound = any(b.platform == platform and b.instance in ("", inst.name) for b in config.bindings)
            if inst.enabled and not bound and not ms.default_agent:
                found.append(
                    f"messaging.{platform} {inst.name!r}: no binding covers it and messaging.default_agent "
                    "is not set, so every message is dropped"
                )
    return found
