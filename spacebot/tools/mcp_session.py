"""One MCP server of a worker: its process, its ``mcp`` SDK session, and ``tools/call``.

The process: its own session (so one kill reaches everything it started), ``PR_SET_PDEATHSIG``
and ``no_new_privs`` as for tool programs, and only the environment it is given. Its pid is
counted among the sandbox's running calls, so the sweep that ends a shell call leaves it alone
and ``sandbox.kill_all`` (a worker on its way out) kills it.

The SDK's :class:`~mcp.ClientSession` runs over the process's pipes (one JSON-RPC message a line)
in a task that owns it for the process's life: anyio scopes must close in the task that opened
them, while calls come from the worker's tool loop. When the process ends (or its stdout does)
that task ends; the next call starts the server again, once.

A server whose listing was cached (:mod:`spacebot.tools.mcp_cache`) is not started with the
worker: its cached tools are offered and the first call starts it, under the same lock as a
restart. Every start compares the live listing with the cache and saves it when it changed; a call
to a tool the live listing no longer has is an error saying so.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spacebot.tools import sandbox
from spacebot.tools.errors import ToolError
from spacebot.tools.mcp_cache import Listed, ToolCache, cache_key, listed

if TYPE_CHECKING:
    import mcp.types as mt
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
    from mcp import ClientSession

    from spacebot.config import McpServerSettings

log = logging.getLogger("spacebot.tools.mcp")

RESULT_CHARS = 50_000
"""Longest result text handed to the model."""
MESSAGE_BYTES = 4 * 2**20
"""Largest message (one line) a server may send; a longer one ends the connection."""
LIST_PAGES = 8
"""Most ``tools/list`` pages read."""
LIST_TOOLS = 256
"""Most tools read from ``tools/list`` (far more than are offered)."""
STDERR_LINES = 5
"""Last lines of a server's stderr kept for error messages."""
START_TIMEOUT = 30.0
"""Seconds start-up (spawn, ``initialize``, ``tools/list``) may take at least, whatever ``timeout``."""
CLOSE_GRACE = 2.0
"""Seconds a server has to exit after its stdin closes before it is killed."""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def load_sdk() -> None:
    """Import the ``mcp`` SDK in a thread: it takes about a second, which would stall the loop.

    Raises :class:`ToolError` with the install command when it is missing.
    """
    try:
        await asyncio.to_thread(importlib.import_module, "mcp")
    except ImportError as exc:
        raise ToolError(f"MCP servers need the mcp package ({exc}): pip install mcp") from None


def format_result(result: mt.CallToolResult) -> str:
    """The text of a ``tools/call`` result: text blocks as they are, other content as a note."""
    import mcp.types as mt

    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mt.TextContent):
            parts.append(block.text)
        elif isinstance(block, mt.ImageContent | mt.AudioContent):
            what = "image" if isinstance(block, mt.ImageContent) else "audio"
            parts.append(f"[{what} {block.mime_type}, {len(block.data) * 3 // 4} bytes: not shown]")
        elif isinstance(block, mt.ResourceLink):
            parts.append(f"[resource link {block.uri}" + (f" ({block.name})" if block.name else "") + "]")
        elif isinstance(block, mt.EmbeddedResource):
            res = block.resource
            mime = res.mime_type or "unknown type"
            size = (
                f"{len(res.text)} characters"
                if isinstance(res, mt.TextResourceContents)
                else f"{len(res.blob) * 3 // 4} bytes"
            )
            parts.append(f"[resource {res.uri} ({mime}, {size}): not shown]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = "\n".join(parts) if parts else "(the tool returned nothing)"
    if len(text) > RESULT_CHARS:
        text = text[:RESULT_CHARS] + f"\n[truncated: showed {RESULT_CHARS} of {len(text)} characters]"
    return text


def _ended(code: int | None) -> str:
    if code is None:
        return "still running"
    return f"exit code {code}" if code >= 0 else f"killed by signal {-code}"


class McpServer:
    """One configured server: its process, its MCP session, the tools it listed.

    Args:
        settings: the ``[[tools.mcp]]`` entry.
        workspace: the worker's workspace (HOME, and the base of a relative ``cwd``).
        env: the entry's resolved variables (:func:`resolve_env`).
    """

    def __init__(self, settings: McpServerSettings, workspace: Path, env: Mapping[str, str]) -> None:
        self.settings = settings
        self.name = settings.name
        self.workspace = workspace
        self.env = {**sandbox.default_env(workspace), **env}
        self.tools: list[Listed] = []
        """The tools offered: the cached listing, else what ``tools/list`` answered at the first start."""
        self.live: list[Listed] | None = None
        """What ``tools/list`` answered at the last start (``None``: not started yet)."""
        self.cache: ToolCache | None = None
        """Where the listing is kept (:meth:`use_cache`); ``None``: not kept."""
        self._saved: list[Listed] | None = None
        self._tried = False
        self.restarts = 0
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._proc: asyncio.subprocess.Process | None = None
        self._owner: asyncio.Task[None] | None = None
        self._session: ClientSession | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        """The running server's process id."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    def cache_key(self) -> str:
        """The key of this server's listing (:func:`~spacebot.tools.mcp_cache.cache_key`)."""
        from spacebot import __version__

        return cache_key(self.settings, self.env, __version__)

    async def use_cache(self, data: Path) -> bool:
        """Keep the listing in ``data`` (the agent's data directory); with one saved under this
        server's key, offer it and start the server on the first call. Whether it was there."""
        self.cache = ToolCache(data, self.name, self.cache_key())
        saved = await asyncio.to_thread(self.cache.read)
        if saved is None:
            return False
        self.tools = self._saved = saved
        return True

    async def _listed(self, live: list[Listed]) -> None:
        """Record a start's listing; save it when it differs from what is cached."""
        self.live = live
        if not self.tools:
            self.tools = live
        if self.cache is not None and live != self._saved:
            if self._saved is not None:
                log.info(
                    "mcp server %r lists other tools than were cached: the cache is refreshed", self.name
                )
            self._saved = live
            await asyncio.to_thread(self.cache.write, live)

    def _how(self) -> str:
        """How the last process ended, with the tail of its stderr."""
        code = self._proc.returncode if self._proc is not None else None
        tail = " | ".join(line for line in self.stderr if line)
        if len(tail) > 400:
            tail = "…" + tail[-399:]
        return _ended(code) + (f"; its stderr ended with: {tail}" if tail else "")

    async def start(self) -> None:
        """Start (or connect), ``initialize``, ``tools/list``; a :class:`ToolError` saying why when
        it fails (and its cached listing, if any, is forgotten: the next worker lists it afresh)."""
        self._tried = True
        try:
            live = await self._open()
        except ToolError:
            if self.cache is not None:
                self._saved = None
                await asyncio.to_thread(self.cache.drop)
            raise
        await self._listed(live)

    async def _open(self) -> list[Listed]:
        """Spawn, ``initialize``, ``tools/list``: what it listed."""
        argv = list(self.settings.command)
        if "/" not in argv[0]:  # resolved with the server's own PATH, as exec would
            found = shutil.which(argv[0], path=self.env.get("PATH", ""))
            if found is None:
                raise ToolError(f"program {argv[0]!r} not found on PATH {self.env.get('PATH', '')!r}")
            argv[0] = found
        cwd = self.workspace / self.settings.cwd if self.settings.cwd else self.workspace
        (self.workspace / ".tmp").mkdir(parents=True, exist_ok=True)
        self.stderr.clear()
        try:
            # Forked from the loop's thread: PR_SET_PDEATHSIG follows the thread that forked.
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=lambda: sandbox._python_preexec([]),
                limit=MESSAGE_BYTES,
            )
        except OSError as exc:
            raise ToolError(f"could not start {argv[0]!r}: {exc}") from None
        sandbox._active.add(proc.pid)  # not an escapee for the sandbox's sweeps; killed by kill_all
        self._proc = proc
        try:
            await load_sdk()  # while the server boots (a lazy start may be the SDK's first use)
        except ToolError:
            await self._stop(proc)
            raise
        ready: asyncio.Future[list[Listed]] = asyncio.get_running_loop().create_future()
        self._owner = asyncio.create_task(self._own(proc, ready), name=f"mcp:{self.name}")
        limit = max(self.settings.timeout, START_TIMEOUT)
        waits: set[asyncio.Future[Any]] = {ready, self._owner}
        done, _ = await asyncio.wait(waits, timeout=limit, return_when="FIRST_COMPLETED")
        failure = ready.exception() if ready.done() and not ready.cancelled() else None
        if ready.done() and not ready.cancelled() and failure is None:
            return ready.result()
        alive = proc.returncode is None
        await self.close()
        if not done:
            raise ToolError(f"no answer to initialize and tools/list within {limit:g} s")
        if failure is not None and alive:
            raise ToolError(f"initialize or tools/list failed: {failure}")
        raise ToolError(f"the server stopped before it was ready ({self._how()})")

    async def _own(self, proc: asyncio.subprocess.Process, ready: asyncio.Future[list[Listed]]) -> None:
        """Owns the session for the process's life (anyio scopes must close in the task that opened them)."""
        import anyio
        from mcp import ClientSession
        from mcp.shared.message import SessionMessage
        from mcp.types import Implementation

        from spacebot import __version__

        read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_send, write_recv = anyio.create_memory_object_stream[SessionMessage](0)
        pumps = [
            asyncio.create_task(self._pump_out(proc, read_send)),
            asyncio.create_task(self._pump_in(proc, write_recv)),
            asyncio.create_task(self._pump_err(proc)),
        ]
        try:
            info = Implementation(name="spacebot", version=__version__)
            async with ClientSession(read_recv, write_send, client_info=info) as session:
                await session.initialize()
                tools = await self._list(session)
                self._session = session
                ready.set_result(tools)
                # Until the process ends, or its stdout does (the session is over either way).
                exited = asyncio.ensure_future(proc.wait())
                try:
                    await asyncio.wait({exited, pumps[0]}, return_when="FIRST_COMPLETED")
                finally:
                    exited.cancel()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.debug("mcp server %r: the session ended with %r", self.name, exc)
        finally:
            self._session = None
            await self._stop(proc)
            await asyncio.wait({pumps[2]}, timeout=1.0)  # the last stderr lines, for the error
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            if not ready.done():
                ready.cancel()

    async def _list(self, session: ClientSession) -> list[Listed]:
        from mcp.types import PaginatedRequestParams

        tools: list[mt.Tool] = []
        cursor: str | None = None
        for _ in range(LIST_PAGES):
            page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor or len(tools) >= LIST_TOOLS:
                break
        return [listed(tool) for tool in tools]

    async def _pump_out(self, proc: asyncio.subprocess.Process, send: MemoryObjectSendStream[Any]) -> None:
        """Server stdout -> session, one JSON-RPC message per line; closing ``send`` ends the session."""
        import mcp_types
        from mcp.shared.message import SessionMessage

        assert proc.stdout is not None
        async with send:
            while True:
                try:
                    line = await proc.stdout.readline()
                except ValueError:  # a line over the stream limit
                    log.warning(
                        "mcp server %r sent a message over %d bytes: stopping it", self.name, MESSAGE_BYTES
                    )
                    self.stderr.append(f"(sent a message over {MESSAGE_BYTES} bytes)")
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                try:
                    message = mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                except ValueError:
                    log.debug("mcp server %r wrote a line that is not JSON-RPC: %.200r", self.name, line)
                    continue
                await send.send(SessionMessage(message))

    async def _pump_in(
        self, proc: asyncio.subprocess.Process, receive: MemoryObjectReceiveStream[Any]
    ) -> None:
        """Session -> server stdin; closing ``receive`` makes the session's sends fail, not hang."""
        assert proc.stdin is not None
        async with receive:
            async for message in receive:
                data = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                try:
                    proc.stdin.write(data.encode())
                    await proc.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    return

    async def _pump_err(self, proc: asyncio.subprocess.Process) -> None:
        """The server's stderr: logged at debug level, the last lines kept for errors."""
        assert proc.stderr is not None
        while True:
            try:
                line = await proc.stderr.readline()
            except ValueError:
                continue
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            self.stderr.append(_cut(text, 300))
            log.debug("mcp %s: %s", self.name, text)

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        """End the process: stdin closed, a grace period, then its whole session killed; reaped."""
        if proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), CLOSE_GRACE)
        # Also whatever it started that is still in its session (and, in a worker, escapees).
        await sandbox.reap(sandbox.kill_group(proc.pid))
        await proc.wait()
        sandbox._active.discard(proc.pid)

    async def wait_stopped(self) -> None:
        """Return once the current process has ended and been reaped (at once when none runs)."""
        if self._owner is not None:
            await asyncio.shield(self._owner)

    async def close(self) -> None:
        """Stop the server (and the task that owns its session)."""
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await owner

    async def _ensure(self, qualified: str) -> ClientSession:
        """The live session; a stopped server is started again once."""
        async with self._lock:
            if self._session is not None and self._owner is not None and not self._owner.done():
                return self._session
            if not self._tried:  # offered from the cache: started by this first call
                log.info("mcp server %r: starting it for its first call", self.name)
                return await self._start_for(qualified, "could not be started")
            if self.restarts >= 1:
                raise ToolError(
                    f"{qualified}: MCP server {self.name!r} stopped again ({self._how()}) after being "
                    "restarted once; it is not started again in this task. Do without its tools."
                )
            self.restarts += 1
            log.warning("mcp server %r stopped (%s): restarting it", self.name, self._how())
            await self.close()
            return await self._start_for(qualified, "stopped and could not be restarted")

    async def _start_for(self, qualified: str, failed: str) -> ClientSession:
        """Start the server for a call to ``qualified``; a failure names the call and ``failed``."""
        try:
            await self.start()
        except ToolError as exc:
            raise ToolError(f"{qualified}: MCP server {self.name!r} {failed}: {exc}") from None
        assert self._session is not None
        return self._session

    async def _ended(self) -> bool:
        """Whether the process is gone, waiting a little for its owner to see a closed connection."""
        if self._owner is None:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._owner), CLOSE_GRACE + 5)
        return self._owner.done()

    def _stopped(self, qualified: str) -> str:
        again = (
            "it will be started again on the next call"
            if self.restarts < 1
            else "it was already restarted once and is not started again"
        )
        return f"{qualified}: MCP server {self.name!r} stopped during the call ({self._how()}); {again}"

    async def call(self, tool: str, qualified: str, args: dict[str, Any]) -> str:
        """``tools/call``; every failure a :class:`ToolError` naming the server and the tool."""
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED

        session = await self._ensure(qualified)
        if self.live is not None and all(t.name != tool for t in self.live):
            raise ToolError(
                f"{qualified}: MCP server {self.name!r} no longer offers the tool {tool!r} (its tools "
                "changed since they were cached; the next task is offered the new list). Do without it."
            )
        timeout = self.settings.timeout
        try:
            async with asyncio.timeout(timeout):
                result = await session.call_tool(tool, args)
        except TimeoutError:
            raise ToolError(
                f"{qualified}: MCP server {self.name!r} did not answer within {timeout:g} s; the call was "
                "abandoned (the server keeps running)"
            ) from None
        except MCPError as exc:
            if exc.code != CONNECTION_CLOSED or not await self._ended():
                answer = f"{exc.message} (code {exc.code})"
                raise ToolError(
                    f"{qualified}: MCP server {self.name!r} answered with an error: {answer}"
                ) from None
            raise ToolError(self._stopped(qualified)) from None
        except Exception as exc:  # a broken pipe, a malformed answer: never the worker's crash
            if await self._ended():
                raise ToolError(self._stopped(qualified)) from None
            raise ToolError(
                f"{qualified}: the call to MCP server {self.name!r} failed: {type(exc).__name__}: {exc}"
            ) from None
        text = format_result(result)
        if result.is_error:
            raise ToolError(f"{qualified}: the tool {tool!r} of MCP server {self.name!r} failed: {text}")
        return text


__all__ = ["McpServer", "format_result", "load_sdk"]
