"""An MCP server reached over streamable HTTP (``[[tools.mcp]] url = …``): a running service that
every worker shares, instead of a program each worker starts.

The SDK's transport (``streamable_http_client``) and :class:`~mcp.ClientSession` live in one task
for the connection's life, as for stdio (anyio scopes close in the task that opened them). When
the transport fails — the service is down, restarted, or answers an HTTP error — that task ends
with the reason, the pending call fails with an error naming the server, the tool and the reason,
and the next call connects again (``initialize`` anew). Unlike a stdio server, there is no
process of ours to restart, so there is no once-per-worker limit: a service that comes back is
used again.

As for stdio, a server whose listing is cached is not contacted when the worker starts: the
first call connects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spacebot.tools.errors import ToolError
from spacebot.tools.mcp_cache import Listed, cache_key
from spacebot.tools.mcp_session import START_TIMEOUT, McpServer, _cut, load_sdk

if TYPE_CHECKING:
    from mcp import ClientSession

    from spacebot.config import McpServerSettings


def _reason(exc: BaseException, status: int) -> str:
    """The innermost meaningful error of what ended a connection (anyio wraps them in groups),
    with the last HTTP error status the server answered (the SDK's error does not carry it)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = f"{type(exc).__name__}: {str(exc) or type(exc).__name__}"
    if status >= 400:
        text = f"HTTP {status} ({text})"
        if status in (401, 403):
            text += "; the server refused the credentials: check the entry's headers"
    return _cut(text, 300)


class McpHttpServer(McpServer):
    """One ``url`` entry: a connection (re-opened when it fails) and the tools it listed.

    Args:
        settings: the ``[[tools.mcp]]`` entry (with ``url``).
        workspace: the worker's workspace (unused by the connection; kept for the common interface).
        headers: the entry's resolved headers (``Authorization`` …), sent with every request.
    """

    def __init__(self, settings: McpServerSettings, workspace: Path, headers: Mapping[str, str]) -> None:
        super().__init__(settings, workspace, {})
        self.headers = dict(headers)
        self.error = ""
        """Why the last connection ended (empty while it is up)."""
        self._status = 0

    @property
    def pid(self) -> int | None:
        """No process of ours: the server is a service of its own."""
        return None

    def _how(self) -> str:
        return f"the connection to {self.settings.url} ended: {self.error or 'closed'}"

    def cache_key(self) -> str:
        """The key of this server's listing: its URL and headers rather than a command."""
        from spacebot import __version__

        return cache_key(self.settings, self.headers, __version__)

    async def _open(self) -> list[Listed]:
        """Connect, ``initialize``, ``tools/list``: what it listed."""
        await load_sdk()
        self.error = ""
        ready: asyncio.Future[list[Listed]] = asyncio.get_running_loop().create_future()
        self._owner = asyncio.create_task(self._connect(ready), name=f"mcp:{self.name}")
        limit = max(self.settings.timeout, START_TIMEOUT)
        waits: set[asyncio.Future[Any]] = {ready, self._owner}
        done, _ = await asyncio.wait(waits, timeout=limit, return_when="FIRST_COMPLETED")
        if ready.done() and not ready.cancelled() and ready.exception() is None:
            return ready.result()
        await self.close()
        if not done:
            raise ToolError(
                f"no answer from {self.settings.url} to initialize and tools/list within {limit:g} s"
            )
        raise ToolError(f"could not connect to {self.settings.url}: {self.error or 'the connection closed'}")

    async def _connect(self, ready: asyncio.Future[list[Listed]]) -> None:
        """Owns the transport and the session until the connection fails or the server is closed."""
        from mcp import ClientSession
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client
        from mcp.types import Implementation

        from spacebot import __version__

        self._status = 0

        async def seen(response: Any) -> None:
            if response.status_code >= 400:
                self._status = response.status_code

        try:
            client = create_mcp_http_client(headers=self.headers)
            client.event_hooks["response"].append(seen)
            async with client, streamable_http_client(self.settings.url, http_client=client) as (read, write):
                info = Implementation(name="spacebot", version=__version__)
                async with ClientSession(read, write, client_info=info) as session:
                    await session.initialize()
                    tools = await self._list(session)
                    self._session = session
                    ready.set_result(tools)
                    await asyncio.Event().wait()  # until closed, or the transport fails and cancels this
        except asyncio.CancelledError:
            if not self.error and not ready.done():
                self.error = "cancelled"
            raise
        except BaseException as exc:  # an ExceptionGroup from the transport's task group
            self.error = _reason(exc, self._status)
            if not ready.done():
                ready.set_exception(ToolError(self.error))
                ready.exception()  # retrieved: the caller reads self.error
        finally:
            self._session = None
            if not ready.done():
                ready.cancel()

    async def _ensure(self, qualified: str) -> ClientSession:
        """The live session; a failed connection is opened again (every time: the service may be back)."""
        async with self._lock:
            if self._session is not None and self._owner is not None and not self._owner.done():
                return self._session
            await self.close()
            try:
                await self.start()
            except ToolError as exc:
                raise ToolError(f"{qualified}: MCP server {self.name!r} is unreachable: {exc}") from None
            assert self._session is not None
            return self._session

    def _stopped(self, qualified: str) -> str:
        return (
            f"{qualified}: MCP server {self.name!r} was lost during the call ({self._how()}); "
            "the next call connects again"
        )


__all__ = ["McpHttpServer"]
