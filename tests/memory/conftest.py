from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from spacebot.memory import MemoryConfig, MemoryEngine
from spacebot.memory.embedder import Embedder


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """One loaded model for the whole session (loading costs time)."""
    return Embedder(threads=2)


@pytest.fixture
def engine(tmp_path: Path, embedder: Embedder) -> Iterator[MemoryEngine]:
    eng = MemoryEngine(tmp_path / "data", MemoryConfig(), embedder=embedder)
    yield eng
    eng.close()
