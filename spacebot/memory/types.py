"""The memory engine's own constants. The values it returns cross the bus as they are, so they are
defined with every other wire type in :mod:`spacebot.ipc.messages`."""

from __future__ import annotations

from typing import Literal

from spacebot.ipc.messages import MemoryType

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

RecallSource = Literal["vector", "bm25", "vector_ctx", "bm25_ctx", "graph", "person"]
"""The ranked lists a hybrid recall fuses (keys of ``RecallHit.ranks`` and ``.scores``, beside
``rerank`` and ``query_N``; the ``person`` source gives two lists, ``person_vector`` and
``person_bm25_ctx``)."""
ALL_SOURCES: tuple[RecallSource, ...] = ("vector", "bm25", "vector_ctx", "bm25_ctx", "graph", "person")
