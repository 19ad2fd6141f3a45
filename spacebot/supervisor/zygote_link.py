"""The supervisor's side of the zygote: start it, ask it to fork, hear about exits.

With ``[supervisor] spare_zygote`` (the default) a second zygote is kept warm beside the one that
forks: when the forking zygote dies, the spare takes over at once and a new spare is started in the
background. Replacing a zygote otherwise means importing everything again (seconds on a busy
2-core machine), and every process that has to start meanwhile — a conversation woken by a
message, a crashed memory process — waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import assert_never

from spacebot.config import Config
from spacebot.errors import ProcessTimeout, SpacebotError
from spacebot.ipc.codec import encode
from spacebot.ipc.messages import (
    SpawnSpec,
    ZygoteExit,
    ZygoteFailed,
    ZygoteForked,
    ZygoteHello,
    ZygotePreloadRest,
    ZygoteSpawn,
)
from spacebot.supervisor import auth, framing

log = logging.getLogger("spacebot.supervisor")


_PROVIDER_MODULES = {
    "spacebot.llm.providers.anthropic": ("anthropic",),
    "spacebot.llm.providers.openai": ("openai", "openai_compatible"),
}
"""Preload modules that are model SDK adapters, with the provider kinds that use them."""


def preload_modules(config: Config) -> list[str]:
    """``[supervisor] preload`` without the SDKs of providers the configuration does not use.

    Importing an SDK nobody calls costs every zygote start seconds on a busy machine (anthropic's
    alone is ~1.6 s idle) and a conversation process woken right after a restart waits for it. A
    provider added later by a reload is imported by the process that first uses it.
    """
    kinds = {provider.kind for provider in config.llm.providers.values()}
    return [
        name
        for name in config.supervisor.preload
        if name not in _PROVIDER_MODULES or kinds.intersection(_PROVIDER_MODULES[name])
    ]


class ZygoteGone(SpacebotError):
    """The zygote died or closed its socket."""


@dataclass
class _Warm:
    """A zygote that has said hello: its process and its end of the socketpair."""

    proc: subprocess.Popen[bytes]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    hello: ZygoteHello
    started_at: float


class ZygoteLink:
    """Owns the zygote process (and its warm spare) and the socketpair to it."""

    def __init__(
        self,
        on_exit: Callable[[int, int], None],
        on_lost: Callable[[], None],
        on_spare: Callable[[int], None] = lambda pid: None,
    ) -> None:
        self._on_exit = on_exit
        self._on_lost = on_lost
        self._on_spare = on_spare
        self.pid = 0
        self.hello: ZygoteHello | None = None
        self.started_at = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[str, asyncio.Future[int]] = {}
        self._read_task: asyncio.Task[None] | None = None
        self._spawn_lock = asyncio.Lock()
        self._up = asyncio.Event()
        self._stopped = False
        self._spare: _Warm | None = None
        self._launching: set[int] = set()
        self._spare_task: asyncio.Task[None] | None = None

    @property
    def spare_pid(self) -> int:
        """Pid of the warm spare (0 when there is none)."""
        return self._spare.proc.pid if self._spare is not None else 0

    @property
    def spare_started_at(self) -> float:
        """When the spare was started (monotonic; 0 when there is none)."""
        return self._spare.started_at if self._spare is not None else 0.0

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` is the zygote or its spare."""
        return pid != 0 and (pid in (self.pid, self.spare_pid) or pid in self._launching)

    @property
    def alive(self) -> bool:
        """Whether the link is up."""
        return self._writer is not None and self.hello is not None

    async def start(self, config: Config, *, warm_next: bool = True) -> ZygoteHello:
        """Make a zygote the forking one: the warm spare at once if there is one, else a new one
        (waiting until its first imports are done). Then, with ``spare_zygote`` and ``warm_next``, warm
        the next spare (the service's first start warms it only after its core processes are up,
        so their start-up does not share the CPU with a second zygote's imports)."""
        spare, self._spare = self._spare, None
        if self._spare_task is not None:  # it watches the spare's socket, which becomes ours
            self._spare_task.cancel()
            await asyncio.gather(self._spare_task, return_exceptions=True)
            self._spare_task = None
        if spare is not None and spare.proc.poll() is None:
            warm = spare  # it was told to import the rest when it came up
            log.info("spare zygote pid=%d takes over", warm.proc.pid)
        else:
            warm = await self._launch(config)
            if warm_next:  # a replacement: spawns wait for it already; the rest follows them
                self._preload_rest(warm.writer)
        self._proc, self._reader, self._writer = warm.proc, warm.reader, warm.writer
        self.pid, self.started_at, self.hello = warm.proc.pid, warm.started_at, warm.hello
        self._up.set()
        for failure in warm.hello.failed_imports:
            log.warning("zygote could not preload %s", failure)
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop(), name="zygote-reader")
        if config.supervisor.spare_zygote and warm_next and not self._stopped:
            self.warm_spare(config)
        return warm.hello

    def preload_rest(self) -> None:
        """Let the forking zygote import ``preload`` (the model SDKs), between fork requests."""
        if self._writer is not None:
            self._preload_rest(self._writer)

    @staticmethod
    def _preload_rest(writer: asyncio.StreamWriter) -> None:
        # A few bytes on a fresh socketpair: write() buffers them without blocking.
        with contextlib.suppress(ConnectionError):
            writer.write(framing.pack(ZygotePreloadRest()))

    def warm_spare(self, config: Config, delay: float = 0.0) -> None:
        """Start a spare zygote in the background unless one is running or being started."""
        if self._spare_task is None or self._spare_task.done():
            self._spare_task = asyncio.get_running_loop().create_task(
                self._keep_spare(config, delay), name="zygote-spare"
            )

    async def _keep_spare(self, config: Config, delay: float) -> None:
        """Start a spare and watch it: a spare that dies is replaced (after a pause)."""
        await asyncio.sleep(delay)
        try:
            spare = await self._launch(config)
        except SpacebotError as exc:
            log.error("spare zygote failed to start: %s", exc)
            if not self._stopped:
                self.warm_spare(config, delay=max(delay * 2, 5.0))
            return
        if self._stopped:
            spare.writer.close()
            return
        self._spare = spare
        self._preload_rest(spare.writer)
        log.info("spare zygote up pid=%d preload_s=%.2f", spare.proc.pid, spare.hello.preload_s)
        self._on_spare(spare.proc.pid)
        await self._read(spare.reader)  # a spare says nothing: this returns when it dies
        if self._spare is spare:  # it died as a spare, not after taking over
            self._spare = None
            spare.writer.close()
            if not self._stopped:
                log.warning("spare zygote pid=%d exited; starting another", spare.proc.pid)
                self._spare_task = None
                self.warm_spare(config, delay=1.0)

    async def _launch(self, config: Config) -> _Warm:
        """Start a zygote and wait until its imports are done."""
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd = [
            sys.executable,
            "-m",
            "spacebot.supervisor.zygote",
            "--fd",
            str(child_sock.fileno()),
            "--supervisor",
            str(os.getpid()),
            "--first",
            ",".join(config.supervisor.preload_first),
            "--preload",
            ",".join(preload_modules(config)),
            "--log-level",
            config.runtime.log_level,
            "--log-format",
            config.runtime.log_format,
        ]
        # Popen only forks and execs; it returns at once.
        proc = subprocess.Popen(cmd, pass_fds=[child_sock.fileno()], stdin=subprocess.DEVNULL)  # noqa: ASYNC220
        child_sock.close()
        started_at = time.monotonic()
        self._launching.add(proc.pid)  # a zygote still importing is ours too, not an orphan
        try:
            return await self._hello(proc, parent_sock, started_at, config)
        finally:
            self._launching.discard(proc.pid)

    async def _hello(
        self, proc: subprocess.Popen[bytes], sock: socket.socket, started_at: float, config: Config
    ) -> _Warm:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        try:
            async with asyncio.timeout(config.supervisor.zygote_start_timeout):
                msg = await self._read(reader)
        except TimeoutError:
            self._abandon(proc, writer)
            raise ProcessTimeout(
                f"zygote pid {proc.pid} did not finish importing within "
                f"{config.supervisor.zygote_start_timeout:g}s"
            ) from None
        if not isinstance(msg, ZygoteHello):
            self._abandon(proc, writer)
            raise ZygoteGone(f"zygote sent {type(msg).__name__ if msg else 'nothing'} before hello")
        return _Warm(proc, reader, writer, msg, started_at)

    @staticmethod
    def _abandon(proc: subprocess.Popen[bytes], writer: asyncio.StreamWriter) -> None:
        """A zygote that never said hello: kill it, so the next start does not run beside it."""
        writer.close()
        with contextlib.suppress(ProcessLookupError):
            proc.kill()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> framing.FromZygote | None:
        try:
            header = await reader.readexactly(framing.header_size())
            body = await reader.readexactly(framing.body_size(header))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return framing.from_zygote_decoder.decode(body)

    async def _read_loop(self) -> None:
        assert self._reader is not None
        while True:
            msg = await self._read(self._reader)
            match msg:
                case None:
                    break
                case ZygoteForked(id=ident, pid=pid):
                    fut = self._pending.pop(ident, None)
                    if fut is not None and not fut.done():
                        fut.set_result(pid)
                    else:
                        # Nobody waits for this fork any more (the request timed out and was
                        # sent again, or given up): it must not live on unsupervised.
                        log.warning("killing late fork id=%s pid=%d", ident, pid)
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(pid, signal.SIGKILL)
                case ZygoteFailed(id=ident, error=error):
                    fut = self._pending.pop(ident, None)
                    if fut is not None and not fut.done():
                        fut.set_exception(SpacebotError(error))
                case ZygoteExit(pid=pid, exit_code=code):
                    self._on_exit(pid, code)
                case ZygoteHello():
                    log.warning("zygote sent a second hello")
                case _:
                    assert_never(msg)
        self._drop_link("zygote closed its socket")
        self._on_lost()

    def _drop_link(self, why: str) -> None:
        self._up.clear()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ZygoteGone(why))
        self._pending.clear()
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self.hello = None

    async def spawn(
        self, spec: SpawnSpec, config: Config, runtime_dir: str, *, timeout: float | None = None
    ) -> int:
        """Fork a child; returns its pid.

        While a crashed zygote is being replaced this waits for the new one (until it has said
        hello: a zygote still importing reads nothing), and a request that was lost with the dying
        zygote, or not answered within ``timeout``, is sent again — within one overall bound of a
        zygote start-up plus ``timeout``. A fork reported after its request was given up is killed.
        """
        timeout = config.supervisor.fork_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.supervisor.zygote_start_timeout + timeout
        while True:
            await self._wait_up(deadline - loop.time())
            try:
                return await self._spawn_once(spec, config, runtime_dir, timeout)
            except (ZygoteGone, ProcessTimeout) as exc:
                if self._stopped or loop.time() >= deadline:
                    raise
                log.warning("spawn id=%s not done (%s); sending it again", spec.id, exc)

    async def _wait_up(self, timeout: float) -> None:
        if self.alive:
            return
        if self._stopped:
            raise ZygoteGone("zygote is stopped")
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await self._up.wait()
        except TimeoutError:
            raise ZygoteGone(f"zygote is not running (waited {timeout:g}s for a new one)") from None

    async def _spawn_once(self, spec: SpawnSpec, config: Config, runtime_dir: str, timeout: float) -> int:
        assert self._writer is not None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[spec.id] = fut
        req = ZygoteSpawn(spec, encode(config), runtime_dir, os.getpid(), auth.child_password(spec.id))
        try:
            async with self._spawn_lock:
                self._writer.write(framing.pack(req))
                await self._writer.drain()
            async with asyncio.timeout(timeout):
                return await fut
        except ConnectionError as exc:
            raise ZygoteGone(f"zygote socket failed: {exc}") from None
        except TimeoutError:
            raise ProcessTimeout(f"zygote did not fork {spec.id!r} within {timeout:g}s") from None
        finally:
            self._pending.pop(spec.id, None)

    async def stop(self, timeout: float = 3.0) -> None:
        """Close the socket (the zygote exits on EOF) and wait for it; SIGKILL if it lingers."""
        self._stopped = True
        self._drop_link("supervisor stopping")
        spare, self._spare = self._spare, None
        for task in (self._read_task, self._spare_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        procs = [p for p in (self._proc, spare.proc if spare is not None else None) if p is not None]
        if spare is not None:
            spare.writer.close()
        await asyncio.gather(*(self._reap(p, timeout) for p in procs))

    @staticmethod
    async def _reap(proc: subprocess.Popen[bytes], timeout: float) -> None:
        try:
            await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
