"""Spacebot's memory engine: a typed, graph-connected store over DuckDB, hnswlib and tantivy.

The ``memory:<agent>`` process serves :class:`MemoryEngine`; everything else reaches it over the bus.
Importing this package is cheap: the engine (DuckDB, hnswlib, tantivy, onnxruntime) loads on first
use of :class:`MemoryEngine`, so processes that only exchange the typed values never pay for it.
Those values are wire types, defined in :mod:`spacebot.ipc.messages` and re-exported here as the
engine's API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spacebot.ipc.messages import (
    Association,
    ConversationInfo,
    IngestReport,
    MaintenanceReport,
    Memory,
    MemoryDraft,
    MemoryType,
    MessageHit,
    RecallHit,
    Relation,
    ReplyState,
    StoredMessage,
)
from spacebot.memory.config import MemoryConfig
from spacebot.memory.errors import (
    EmbedderError,
    MemoryInputError,
    MemoryNotFound,
    MemoryStoreError,
    SchemaVersionError,
)

if TYPE_CHECKING:
    from spacebot.memory.engine import MemoryEngine


def __getattr__(name: str) -> Any:
    if name == "MemoryEngine":
        from spacebot.memory.engine import MemoryEngine

        return MemoryEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Association",
    "ConversationInfo",
    "EmbedderError",
    "IngestReport",
    "MaintenanceReport",
    "Memory",
    "MemoryConfig",
    "MemoryDraft",
    "MemoryEngine",
    "MemoryInputError",
    "MemoryNotFound",
    "MemoryStoreError",
    "MemoryType",
    "MessageHit",
    "RecallHit",
    "Relation",
    "ReplyState",
    "SchemaVersionError",
    "StoredMessage",
]
