from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from spacebot.testing import SupervisorProcess, short_tempdir


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp dir short enough for ipc:// socket paths."""
    path = short_tempdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def supervisor(short_tmp: Path) -> AsyncIterator[SupervisorProcess]:
    """A real `spacebot run` with fast budgets; stopped and cleaned up after the test."""
    sup = SupervisorProcess(short_tmp)
    await sup.start()
    try:
        yield sup
    finally:
        await sup.stop()


@pytest.fixture(autouse=True)
def _no_leftover_children() -> Iterator[None]:
    """SIGKILL any process a test left behind under this pytest process."""
    yield
    me = psutil.Process(os.getpid())
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()
