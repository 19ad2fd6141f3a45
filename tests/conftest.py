"""Fixtures every test gets, and the guards that keep the suite honest.

Modelled on pyzmq's own conftest: every ZeroMQ context and socket a test opens is tracked and
closed (linger 0, a bounded ``term()``), and a leak fails the test. Two more guards: an async test
whose event loop is blocked fails, and so does any connection to a host that is not this machine.
"""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import gc
import importlib
import ipaddress
import logging
import os
import shutil
import socket
import threading
import traceback
import warnings
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio
import zmq

import spacebot
from spacebot.config import SupervisorSection
from spacebot.testing import SupervisorProcess, short_tempdir

# Spacebot's processes import the model SDKs before they start serving (the zygote's `preload`),
# so a first model call never imports them inside a running event loop: the adapters are
# imported lazily, in the loop (spacebot/llm/providers/base.py, make_provider), and importing the
# anthropic SDK takes over a second. The test process does what the zygote does, or whichever
# test makes the first model call would trip the blocked-loop guard.
for _module in SupervisorSection().preload:
    importlib.import_module(_module)

SLOW_CALLBACK_S = 1.0
"""A callback (one step of a task) that holds the loop this long fails the test.

asyncio's own default (0.1 s) is for a quiet machine. The suite runs with ``pytest -n 4`` on two
cores next to a CPU burner (tools/stress-tests.sh), under asyncio debug mode (itself slower):
a step that takes 50 ms of CPU can take several times that of wall clock when the scheduler
preempts it. A second is far above that and far below a real blocking call (a ``time.sleep``, a
synchronous ``wait()`` on a child, a ``Context.term()`` waiting on a linger)."""

TERM_TIMEOUT_S = 10.0
"""How long a leftover context may take to terminate once its sockets are closed."""


# -- the blocked-loop guard ----------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """Write the package's bytecode caches once, before any test starts a process.

    Every test starts Python processes (``spacebot run``, the fakes, CLI calls); with
    ``PYTHONDONTWRITEBYTECODE`` set, as on some CI machines, none of them writes the ``.pyc`` files
    an installed package or a normal first run would leave, and each process compiled the whole
    package from source again (~0.15 s per ``spacebot run``). ``compileall`` writes them whatever
    that variable says; it is a no-op when they are current. (The xdist controller does it before
    any worker starts.)
    """
    if not hasattr(config, "workerinput"):
        compileall.compile_dir(Path(spacebot.__file__).parent, quiet=1)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move everything loaded so far (the package, the libraries, the test modules) out of the
    garbage collector's sight: the full collection after every test (``_zmq_leaks``) then looks only
    at what tests made, ~1 ms instead of ~0.1 s (two minutes over the suite)."""
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the loop watch first in every async test, so it also sees its async fixtures run."""
    for item in items:
        if pytest_asyncio.is_async_test(item):
            item.fixturenames.insert(0, "_loop_watch")  # type: ignore[attr-defined]


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing ") and " took " in message:
            self.found.append(message)


@pytest.fixture
async def _loop_watch() -> AsyncIterator[None]:
    """Fail an async test whose event loop was blocked for ``SLOW_CALLBACK_S`` or more.

    asyncio's debug mode times every callback and logs ``Executing <handle> took N seconds`` for a
    slow one; the handle names the coroutine and where it was created.
    """
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_S
    logger = logging.getLogger("asyncio")
    level, disabled = logger.level, logger.disabled
    handler = _SlowCallbacks()
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    logger.disabled = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled
    if handler.found:
        pytest.fail(
            f"the event loop was blocked for {SLOW_CALLBACK_S:g}s or more (something synchronous ran in "
            "it: move it to a thread or await it):\n" + "\n".join(handler.found),
            pytrace=False,
        )


# -- the network guard ---------------------------------------------------------------------------


class NetworkBlocked(RuntimeError):
    """A test tried to reach a host that is not this machine."""


def _loopback(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a name other than localhost would need a resolver and could go anywhere
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


def _allowed(sock: socket.socket, address: Any) -> bool:
    if sock.family == socket.AF_UNIX:
        return True
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) and address:
        return _loopback(address[0])
    return False


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    """Refuse (and fail the test on) a connection to anything but loopback or a Unix socket.

    Covers ``socket.socket.connect``/``connect_ex`` in the test process, which is what asyncio,
    aiohttp, httpx and ``socket.create_connection`` all go through. It does not cover child
    processes (the supervisor and everything it forks) nor libzmq's own sockets; those are kept
    local by configuration (``ipc://`` endpoints, the fake model on 127.0.0.1).
    """
    refused: list[str] = []
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(sock: socket.socket, address: Any) -> None:
        if not _allowed(sock, address):
            what = f"connection to {address!r} (family {socket.AddressFamily(sock.family).name})"
            refused.append(what)
            raise NetworkBlocked(f"tests may only connect to this machine: refused a {what}")

    def guarded_connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return connect_ex(self, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", guarded_connect)
        patch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
        yield
    if refused:  # also when the code under test caught the exception
        pytest.fail("the test tried to leave this machine: " + "; ".join(refused), pytrace=False)


# -- the ZeroMQ guard ----------------------------------------------------------------------------


_REPO = Path(__file__).resolve().parent.parent


def _where(stack: traceback.StackSummary) -> str:
    """The innermost frames of a creation stack that are this project's code (not this file)."""
    mine = []
    for frame in stack:
        path = Path(frame.filename).resolve()
        if frame.filename != __file__ and path.is_relative_to(_REPO) and "site-packages" not in path.parts:
            mine.append(f"{path.relative_to(_REPO)}:{frame.lineno} {frame.name}")
    return " <- ".join(reversed(mine[-4:])) or "(outside this project)"


def _term(ctx: zmq.Context[Any], timeout: float) -> bool:
    """``ctx.term()`` in a thread; False when it did not return within ``timeout``."""
    done = threading.Thread(target=ctx.term, name="zmq-term", daemon=True)
    done.start()
    done.join(timeout)
    return not done.is_alive()


@pytest.fixture(autouse=True)
def _zmq_leaks() -> Iterator[None]:
    """Track every ZeroMQ context and socket opened in the test process; close what is left.

    Leftover sockets are closed with linger 0 and leftover contexts terminated in a thread under
    ``TERM_TIMEOUT_S``; either fails the test: whoever opens a ``BusClient``, ``ControlClient``
    or ``EventStream`` closes it (``finally`` or ``async with``).

    Objects are tracked weakly, so garbage collection works as it does outside the tests. One
    dropped while still open (an ``EventStream`` nobody closed) is closed by pyzmq's ``__del__``
    as usual and reported here: with warnings turned into errors, that ``__del__`` would otherwise
    raise its ``ResourceWarning`` before closing, and the socket would keep its context's
    ``term()`` waiting forever.
    """
    contexts: weakref.WeakKeyDictionary[zmq.Context[Any], traceback.StackSummary]
    contexts = weakref.WeakKeyDictionary()
    sockets: weakref.WeakKeyDictionary[zmq.Socket[Any], traceback.StackSummary]
    sockets = weakref.WeakKeyDictionary()
    problems: list[str] = []
    ctx_init, sock_init = zmq.Context.__init__, zmq.Socket.__init__
    ctx_del, sock_del = zmq.Context.__del__, zmq.Socket.__del__

    def tracked_ctx_init(self: zmq.Context[Any], *args: Any, **kw: Any) -> None:
        ctx_init(self, *args, **kw)
        if not self._shadow:
            contexts[self] = traceback.extract_stack(limit=12)

    def tracked_sock_init(self: zmq.Socket[Any], *args: Any, **kw: Any) -> None:
        sock_init(self, *args, **kw)
        if not self._shadow:
            sockets[self] = traceback.extract_stack(limit=12)

    def tracked_ctx_del(self: zmq.Context[Any]) -> None:
        stack = contexts.get(self)
        if stack is not None and not self.closed:
            problems.append(f"context {self!r} dropped without term(), created at {_where(stack)}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            ctx_del(self)

    def tracked_sock_del(self: zmq.Socket[Any]) -> None:
        stack = sockets.get(self)
        if stack is not None and not self.closed:
            problems.append(f"socket {self!r} dropped while open, created at {_where(stack)}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            sock_del(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zmq.Context, "__init__", tracked_ctx_init)
        patch.setattr(zmq.Socket, "__init__", tracked_sock_init)
        patch.setattr(zmq.Context, "__del__", tracked_ctx_del)
        patch.setattr(zmq.Socket, "__del__", tracked_sock_del)
        yield
        # Objects in reference cycles are judged in this test, not a later one (ZeroMQ's here, any
        # other resource by pytest's unraisable-exception check). Cheap since everything loaded at
        # collection is frozen out of the collector (pytest_collection_finish).
        gc.collect()
        for sock, stack in list(sockets.items()):
            if not sock.closed:
                problems.append(f"socket {sock!r} left open, created at {_where(stack)}")
                sock.close(linger=0)
        for ctx, stack in list(contexts.items()):
            if ctx.closed:
                continue
            problems.append(f"context {ctx!r} not terminated, created at {_where(stack)}")
            if not _term(ctx, TERM_TIMEOUT_S):
                # Like pyzmq's conftest: a context that cannot end must not poison later tests.
                zmq.Context._instance = None
                problems.append(f"context {ctx!r} did not terminate within {TERM_TIMEOUT_S:g}s")
    if problems:
        pytest.fail("ZeroMQ objects leaked by the test:\n" + "\n".join(problems), pytrace=False)


# -- processes and directories -------------------------------------------------------------------


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp dir short enough for ipc:// socket paths (unique per test, so safe under xdist)."""
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
