"""What runs inside every forked child: bus connection, heartbeats, stop handling, supervisor watch.

A child's entry point is an ``async def entry(ctx: ChildContext, **args)`` named by a dotted path.
The runtime sends ``Ready`` once the entry has started — after the code before its first ``await``
has run, so a handler it registers there answers the first request (or the entry sets
``entry.manual_ready = True`` and calls :meth:`ChildContext.ready` itself after a slow start-up),
heartbeats from the child's own event loop, and turns SIGTERM or a ``Stop`` message into
cancellation of the entry.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, overload

import msgspec
import psutil
import zmq.asyncio

from spacebot import logs
from spacebot.config import Config
from spacebot.errors import CredentialsRefused, SpacebotError
from spacebot.ipc.bus import BusClient
from spacebot.ipc.credentials import Credentials
from spacebot.ipc.events import EventStream
from spacebot.ipc.messages import (
    SUPERVISOR_ID,
    Body,
    Envelope,
    Err,
    ErrorCode,
    EventBody,
    Heartbeat,
    Kind,
    Ok,
    Ready,
    Spawned,
    SpawnSpec,
    Stop,
    ZygoteSpawn,
)
from spacebot.ipc.replies import UNTYPED, Handler, Reply
from spacebot.paths import Endpoints
from spacebot.supervisor import linux

log = logging.getLogger("spacebot.child")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_TARGET = 78
EXIT_CONFIG = 78
"""``EX_CONFIG``: the entry could not be loaded, or a platform refused its credentials
(:class:`~spacebot.errors.CredentialsRefused`). Restarting would meet the same problem: the
supervisor marks it ``failed``."""

T = TypeVar("T")


def watch_supervisor(supervisor_pid: int) -> None:
    """Kill this process group the moment the supervisor dies, even if our event loop is wedged.

    The parent of a child is the zygote, so ``PR_SET_PDEATHSIG`` would fire on the wrong death.
    Instead a tiny thread blocks in ``poll`` on a pidfd of the supervisor.
    """
    try:
        pidfd = os.pidfd_open(supervisor_pid)
    except ProcessLookupError:
        os.killpg(0, signal.SIGKILL)
        return

    def _wait() -> None:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.poll()
        # Descendants that moved to a session of their own are outside our group: kill them first.
        try:
            for proc in psutil.Process().children(recursive=True):
                proc.kill()
        except psutil.Error:
            pass
        os.killpg(0, signal.SIGKILL)

    threading.stack_size(256 * 1024)
    threading.Thread(target=_wait, name="supervisor-watch", daemon=True).start()
    threading.stack_size(0)


def resolve(target: str) -> Callable[..., Coroutine[Any, Any, None]]:
    """Import ``package.module:function``."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"target {target!r} is not of the form 'package.module:function'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"target {target!r} is not callable")
    return obj


class ChildContext:
    """What an entry point gets: its identity, the config, the bus, and lifecycle hooks."""

    def __init__(self, spec: SpawnSpec, config: Config, endpoints: Endpoints, bus: BusClient) -> None:
        self.id = spec.id
        self.kind: Kind = spec.kind
        self.spec = spec
        self.config = config
        self.endpoints = endpoints
        self.bus = bus
        self.policy = config.policy(spec.kind)
        self.stopping = asyncio.Event()
        self.stop_reason = ""
        self.task = spec.task
        self.busy = False
        self.progress_at = time.time()
        self._handler: Handler | None = None
        self._ready_sent = False

    # -- lifecycle -----------------------------------------------------------------------------

    def ready(self) -> None:
        """Tell the supervisor this process can serve (sent once)."""
        if not self._ready_sent:
            self._ready_sent = True
            self.bus.send(SUPERVISOR_ID, Ready(os.getpid(), self.kind))

    def progress(self, task: str | None = None) -> None:
        """Record real progress (a token, a tool call); optionally change the task line."""
        self.progress_at = time.time()
        if task is not None:
            self.task = task

    def set_busy(self, busy: bool, task: str | None = None) -> None:
        """Mark the process busy or idle (shown as its state) and send it right away."""
        changed = busy != self.busy
        self.busy = busy
        self.progress(task)
        if changed:
            self.heartbeat()

    def heartbeat(self) -> None:
        """Send one heartbeat now."""
        self.bus.send(
            SUPERVISOR_ID, Heartbeat(self.progress_at, self.busy, self.task, self.bus.guard.snapshot())
        )

    def request_stop(self, reason: str) -> None:
        """Ask the entry point to finish (SIGTERM and ``Stop`` both land here)."""
        if not self.stopping.is_set():
            self.stop_reason = reason
            log.info("stop requested reason=%r", reason)
            self.stopping.set()

    # -- bus helpers ---------------------------------------------------------------------------

    def on_message(self, handler: Handler) -> None:
        """Receive every message other than ``Stop``/``Ping`` (handled by the runtime)."""
        self._handler = handler

    def _dispatch(self, env: Envelope) -> Awaitable[Reply | None] | Reply | None:
        # Not a complete dispatch: ``Stop`` is the runtime's, every other body is the entry's.
        match env.body:
            case Stop(reason=reason):
                self.request_stop(reason or f"stop from {env.src}")
                return Ok()
            case _ if self._handler is not None:
                return self._handler(env)
            case _:
                # Connected but still loading (memory opening its database): a retryable answer, so
                # callers wait instead of failing the work (``unsupported`` would be final).
                return None if env.id == 0 else _not_ready(self.id, env.body)

    @overload
    async def request(self, dst: str, body: Body, *, returns: type[T], timeout: float = 5.0) -> T: ...
    @overload
    async def request(self, dst: str, body: Body, *, returns: None, timeout: float = 5.0) -> None: ...
    @overload
    async def request(self, dst: str, body: Body, *, timeout: float = 5.0) -> Any: ...
    async def request(self, dst: str, body: Body, *, returns: Any = UNTYPED, timeout: float = 5.0) -> Any:
        """Request/reply over the bus: the reply's value converted to ``returns`` (``None``: no
        value), failed at once with ``unavailable`` if ``dst`` exits first, with ``bad_reply`` if
        the value does not fit. See :meth:`spacebot.ipc.bus.BusClient.request`."""
        return await self.bus.request(dst, body, returns=returns, timeout=timeout)

    def publish(self, topic: str, body: EventBody) -> bool:
        """Publish an event."""
        return self.bus.publish(topic, body)

    async def spawn(self, spec: SpawnSpec, *, timeout: float = 30.0) -> Spawned:
        """Ask the supervisor to start another process with this one as its parent."""
        return await self.bus.request(SUPERVISOR_ID, spec, returns=Spawned, timeout=timeout)

    async def events(self, *topics: str) -> EventStream:
        """A confirmed subscription to the events socket."""
        return await self.bus.subscribe(*topics)


def _not_ready(ident: str, body: object) -> Reply:
    return Err(ErrorCode.NOT_READY, f"{ident!r} is starting and cannot handle {type(body).__name__} yet")


async def _heartbeats(ctx: ChildContext) -> None:
    interval = ctx.policy.heartbeat_interval
    while True:
        ctx.heartbeat()
        await asyncio.sleep(interval)


async def _main(req: ZygoteSpawn, config: Config) -> int:
    spec = req.spec
    endpoints = Endpoints(Path(req.runtime_dir))
    context = zmq.asyncio.Context()
    bus = BusClient(
        spec.id,
        endpoints.bus,
        events_endpoint=endpoints.events,
        context=context,
        max_frame=config.runtime.max_frame_bytes,
        hwm=config.runtime.hwm,
        credentials=Credentials(spec.id, req.bus_key),  # from the spawn request, never the environment
    )
    ctx = ChildContext(spec, config, endpoints, bus)
    bus.on_message(ctx._dispatch)
    bus.start()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, ctx.request_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, ctx.request_stop, "SIGINT")
    code = EXIT_OK
    try:
        entry = resolve(spec.target)
    except Exception as exc:
        log.error("cannot load target=%r error=%s", spec.target, exc)
        await bus.close()
        context.term()
        return EXIT_BAD_TARGET
    beats = asyncio.create_task(_heartbeats(ctx), name="heartbeats")
    work = asyncio.create_task(entry(ctx, **spec.args), name=f"entry:{spec.target}")
    if not getattr(entry, "manual_ready", False):
        # Scheduled after the entry's first step (the loop runs callbacks in order): a request
        # sent the moment the supervisor reports us ready finds the entry's handler in place. Sent
        # before it, a child paused by a busy host right after ``Ready`` could see that request
        # before its entry ran and answer ``not_ready``.
        asyncio.get_running_loop().call_soon(ctx.ready)
    stop = asyncio.create_task(ctx.stopping.wait(), name="stop-wait")
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            work.cancel()
        try:
            await work
        except asyncio.CancelledError:
            pass
        except CredentialsRefused as exc:
            log.error("entry stopped: credentials refused target=%s: %s", spec.target, exc)
            code = EXIT_CONFIG
        except SpacebotError as exc:  # raised on purpose, with a message that says it all
            log.error("entry failed target=%s: %s", spec.target, exc)
            code = EXIT_ERROR
        except Exception:
            log.exception("entry failed target=%s", spec.target)
            code = EXIT_ERROR
    finally:
        beats.cancel()
        stop.cancel()
        await asyncio.gather(beats, stop, return_exceptions=True)
        await bus.close(linger=1.0)  # our last messages (replies, the exit) still go out
        # Subscriptions and clients the entry left open would make ``term()`` wait for ever (and
        # raise ``ContextTerminated`` in their loop callbacks): close whatever is left, then term.
        context.destroy(linger=0)
    return code


_config_decoder = msgspec.msgpack.Decoder(Config)


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop when installed, unless ``SPACEBOT_EVENT_LOOP=asyncio`` asks for the stdlib loop."""
    if os.environ.get("SPACEBOT_EVENT_LOOP") == "asyncio":
        return asyncio.run
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run


def warm_up() -> None:
    """Run in the zygote before forking: touch what every child will touch, so it stays shared.

    Lazily built state — msgspec's per-type decoders, the event loop machinery, logging — would
    otherwise be created in each child's private memory (measured: ~2 MB of USS per child).
    """
    from spacebot.config import from_dict
    from spacebot.ipc import codec
    from spacebot.ipc.messages import Echo, Event, Notice, Ping

    _config_decoder.decode(msgspec.msgpack.encode(from_dict({}, {})))
    for body in (Ready(1, Kind.WORKER), Heartbeat(0.0, False), Ping(), Echo(1), Stop(), Ok()):
        codec.envelope_decoder.decode(codec.encode(Envelope("a", "b", 1, 0, body)))
    codec.event_decoder.decode(codec.encode(Event("t", "a", 0.0, Notice("x"))))

    async def _spin() -> int:
        await asyncio.sleep(0)
        return 0

    _event_loop_runner()(_spin())


def run_child(req: ZygoteSpawn) -> int:
    """Run one child to completion; returns its exit code."""
    config = _config_decoder.decode(req.config)
    logs.setup(req.spec.id, config.runtime.log_level, config.runtime.log_format)
    linux.set_name(req.spec.id[-15:])
    linux.forbid_dumps()  # it holds keys (environment, config): no same-user /proc/<pid>/environ
    watch_supervisor(req.supervisor_pid)
    return _event_loop_runner()(_main(req, config))
