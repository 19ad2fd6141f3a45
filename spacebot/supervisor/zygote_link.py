"""The supervisor's side of the zygote: start it, ask it to fork, hear about exits."""

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

from spacebot.config import Config
from spacebot.errors import ProcessTimeout, SpacebotError
from spacebot.ipc.codec import encode
from spacebot.ipc.messages import (
    SpawnSpec,
    ZygoteExit,
    ZygoteFailed,
    ZygoteForked,
    ZygoteHello,
    ZygoteSpawn,
)
from spacebot.supervisor import auth, framing

log = logging.getLogger("spacebot.supervisor")


class ZygoteGone(SpacebotError):
    """The zygote died or closed its socket."""


class ZygoteLink:
    """Owns the zygote process and the socketpair to it."""

    def __init__(self, on_exit: Callable[[int, int], None], on_lost: Callable[[], None]) -> None:
        self._on_exit = on_exit
        self._on_lost = on_lost
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

    @property
    def alive(self) -> bool:
        """Whether the link is up."""
        return self._writer is not None and self.hello is not None

    async def start(self, config: Config) -> ZygoteHello:
        """Start the zygote and wait until its imports are done."""
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd = [
            sys.executable,
            "-m",
            "spacebot.supervisor.zygote",
            "--fd",
            str(child_sock.fileno()),
            "--supervisor",
            str(os.getpid()),
            "--preload",
            ",".join(config.supervisor.preload),
            "--log-level",
            config.runtime.log_level,
        ]
        # Popen only forks and execs; it returns at once.
        self._proc = subprocess.Popen(cmd, pass_fds=[child_sock.fileno()], stdin=subprocess.DEVNULL)  # noqa: ASYNC220
        child_sock.close()
        self.pid = self._proc.pid
        self.started_at = time.monotonic()
        self._reader, self._writer = await asyncio.open_unix_connection(sock=parent_sock)
        try:
            async with asyncio.timeout(config.supervisor.zygote_start_timeout):
                msg = await self._read()
        except TimeoutError:
            self._abandon()
            raise ProcessTimeout(
                f"zygote pid {self.pid} did not finish importing within "
                f"{config.supervisor.zygote_start_timeout:g}s"
            ) from None
        if not isinstance(msg, ZygoteHello):
            self._abandon()
            raise ZygoteGone(f"zygote sent {type(msg).__name__ if msg else 'nothing'} before hello")
        self.hello = msg
        self._up.set()
        for failure in msg.failed_imports:
            log.warning("zygote could not preload %s", failure)
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop(), name="zygote-reader")
        return msg

    def _abandon(self) -> None:
        """A zygote that never said hello: kill it, so the next start does not run beside it."""
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._reader = None
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    async def _read(self) -> framing.FromZygote | None:
        assert self._reader is not None
        try:
            header = await self._reader.readexactly(framing.header_size())
            body = await self._reader.readexactly(framing.body_size(header))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return framing.from_zygote_decoder.decode(body)

    async def _read_loop(self) -> None:
        while True:
            msg = await self._read()
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
        if self._read_task is not None:
            self._read_task.cancel()
            await asyncio.gather(self._read_task, return_exceptions=True)
        proc = self._proc
        if proc is None:
            return
        try:
            await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
