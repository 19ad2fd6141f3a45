"""The typed values the memory engine returns; they cross the bus, so they are frozen msgspec Structs."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

import msgspec


class MemoryType(StrEnum):
    """What kind of thing a memory records."""

    FACT = "fact"
    PREFERENCE = "preference"
    DECISION = "decision"
    IDENTITY = "identity"
    EVENT = "event"
    OBSERVATION = "observation"
    GOAL = "goal"
    TODO = "todo"


DEFAULT_IMPORTANCE: dict[MemoryType, float] = {
    MemoryType.IDENTITY: 1.0,
    MemoryType.GOAL: 0.8,
    MemoryType.DECISION: 0.75,
    MemoryType.PREFERENCE: 0.7,
    MemoryType.FACT: 0.6,
    MemoryType.TODO: 0.6,
    MemoryType.EVENT: 0.5,
    MemoryType.OBSERVATION: 0.3,
}
"""Importance a memory gets when its draft gives none. Identity is highest and never decays."""


class Relation(StrEnum):
    """The kind of an association between two memories."""

    RELATED_TO = "related_to"
    UPDATES = "updates"
    CONTRADICTS = "contradicts"
    CAUSED_BY = "caused_by"
    PART_OF = "part_of"


class ReplyState(StrEnum):
    """Whether an inbound message has been dealt with."""

    PENDING = "pending"
    ANSWERED = "answered"
    SKIPPED = "skipped"
    NONE = "none"
    """Outbound or system messages, which expect no reply."""


RecallMode = Literal["hybrid", "recent", "important", "typed"]
RecallSource = Literal["vector", "bm25", "vector_ctx", "bm25_ctx", "graph"]
ALL_SOURCES: tuple[RecallSource, ...] = ("vector", "bm25", "vector_ctx", "bm25_ctx", "graph")


class MemoryDraft(msgspec.Struct, frozen=True, kw_only=True):
    """A memory to be saved."""

    content: str
    """The text of the memory (at most ``max_content_bytes``)."""
    type: MemoryType = MemoryType.FACT
    """Its kind."""
    importance: float | None = None
    """0..1; ``None`` takes the type's default."""
    source: str = ""
    """Where it came from (``channel``, ``ingest:<file>``, ``branch``...)."""
    channel: str | None = None
    """The conversation it belongs to, if any."""
    metadata: dict[str, Any] = {}
    """Free JSON; ``date`` and ``speaker`` are also indexed with the content."""
    follows: int | None = None
    """Id of the memory it comes right after in a sequence (a transcript, a document); recall scores
    a memory together with its sequence neighbours."""
    created_at: float | None = None
    """Unix time it happened; ``None`` = now."""


class Memory(msgspec.Struct, frozen=True, kw_only=True):
    """A stored memory."""

    id: int
    """Unique, increasing id."""
    content: str
    """The text."""
    type: MemoryType
    """Its kind."""
    importance: float
    """0..1, lowered by decay and by newer duplicates."""
    created_at: float
    """Unix time it was saved (or happened)."""
    updated_at: float
    """Unix time of the last change."""
    last_accessed_at: float
    """Unix time it was last returned by recall."""
    access_count: int
    """How many times recall returned it."""
    source: str
    """Where it came from."""
    channel: str | None
    """The conversation it belongs to, if any."""
    forgotten: bool
    """Pruned, merged or forgotten: kept in the store but never recalled."""
    metadata: dict[str, Any]
    """Free JSON."""
    follows: int | None
    """The memory before it in its sequence, if any."""


class Association(msgspec.Struct, frozen=True, kw_only=True):
    """A weighted, directed edge between two memories (unique per source, target, relation)."""

    source_id: int
    """Edge start."""
    target_id: int
    """Edge end."""
    relation: Relation
    """Edge kind."""
    weight: float
    """0..1 strength."""
    created_at: float
    """Unix time it was made."""


class RecallHit(msgspec.Struct, frozen=True, kw_only=True):
    """One recalled memory with how each source ranked it."""

    memory: Memory
    """The memory."""
    score: float
    """Fused score (RRF for hybrid; the sort key for the other modes)."""
    ranks: dict[str, int] = {}
    """1-based rank in each source list that contained it (``vector``, ``bm25``, ``vector_ctx``,
    ``bm25_ctx``, ``graph``)."""
    scores: dict[str, float] = {}
    """Raw score in each source list: cosine, BM25, context scores, graph weight."""


class Channel(msgspec.Struct, frozen=True, kw_only=True):
    """A conversation on some platform."""

    id: str
    """Spacebot's conversation id (e.g. ``discord:123:456``)."""
    platform: str
    """``discord``, ``slack``, ``telegram``, ``twitch``, ``web``..."""
    display_name: str
    """Human name (``#general``, a DM partner)."""
    last_activity_at: float
    """Unix time of its last message."""
    created_at: float
    """Unix time it was first seen."""


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """One transcript entry."""

    id: int
    """Store id, increasing in arrival order."""
    channel_id: str
    """The conversation."""
    platform_message_id: str | None
    """The platform's id; appending the same one twice stores it once."""
    author_id: str
    """Platform user id (or the agent's id)."""
    author_name: str
    """Display name at the time."""
    role: str
    """``user``, ``assistant`` or ``system``."""
    text: str
    """Message text."""
    attachments: list[dict[str, Any]]
    """Attachment metadata (name, url, mime, size...)."""
    created_at: float
    """Unix time it was sent."""
    reply_state: ReplyState
    """Pending/answered/skipped for inbound messages; ``none`` otherwise."""
    replied_at: float | None
    """Unix time its reply state last changed."""
    reactions: list[str] = []
    """Emoji reactions the agent added, in order."""


class MessageHit(msgspec.Struct, frozen=True, kw_only=True):
    """A transcript search result."""

    message: Message
    """The message."""
    score: float
    """BM25 score."""
    channel_name: str
    """Display name of its channel."""


class MaintenanceReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a maintenance operation changed."""

    examined: int
    """Memories looked at."""
    changed: int
    """Memories decayed, pruned or merged away."""


class IngestReport(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of ingesting one file."""

    file_name: str
    """Name inside the ingest folder."""
    sha256: str
    """Content hash that keys the progress."""
    chunks_total: int
    """Chunks the file splits into."""
    chunks_done: int
    """Chunks finished (including ones finished by an earlier, interrupted run)."""
    memories_created: int
    """Memories saved by this run."""
    status: Literal["done", "failed"]
    """``done``: the file was removed; ``failed``: it was kept."""
    error: str | None = None
    """Why it failed."""
