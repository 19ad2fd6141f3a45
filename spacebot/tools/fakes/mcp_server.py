"""A real MCP server over stdio (the SDK's ``MCPServer``) for tests and local trials of ``[[tools.mcp]]``.

Run it as ``python -m spacebot.tools.fakes.mcp_server [options]``. Its tools:

* ``add(a, b)`` — the sum of two integers, as text.
* ``echo(text)`` — ``text`` back.
* ``fail(message)`` — a tool error (``isError``) carrying ``message``.
* ``reject(message)`` — a JSON-RPC error response carrying ``message``.
* ``hang()`` — never answers (for call timeouts).
* ``crash(code)`` — the server process exits at once with ``code`` (for restarts).
* ``big(size)`` — ``size`` characters of text (for result caps and oversized messages).
* ``pid()`` — the server's process id (tells a restarted server from the first).
* ``environ()`` — the server's environment, one ``NAME=value`` line each, sorted.
* ``picture()`` — a text block, a PNG image and an embedded resource.

Options:

* ``--flood N`` — also offer ``N`` tools with unruly names (``Tool #i!``) and 10,000-character
  descriptions, as a hostile server might.
* ``--exit-at-start CODE`` — exit with ``CODE`` before speaking MCP (a server that cannot start).
* ``--noise`` — write a line that is not JSON-RPC to stdout before serving.
* ``--name NAME`` — the server's name in ``initialize`` (default ``fake``).
* ``--http PORT`` — serve streamable HTTP on ``127.0.0.1:PORT/mcp`` instead of stdio (0: any free
  port); the first line on stdout is ``listening http://127.0.0.1:<port>/mcp``.
* ``--token TOKEN`` — with ``--http``, answer 401 unless ``Authorization: Bearer TOKEN`` is sent.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import sys
from collections.abc import Callable

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import EmbeddedResource, ImageContent, TextContent, TextResourceContents

PNG_1X1 = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
    )
).decode()
"""A one-pixel PNG, base64 (what ``picture`` returns)."""


def build(name: str = "fake", flood: int = 0) -> MCPServer:
    """The fake server with its tools (``flood`` extra ones with unruly names)."""
    server: MCPServer = MCPServer(name)

    @server.tool()
    def add(a: int, b: int) -> str:
        """Add two integers."""
        return str(a + b)

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def fail(message: str = "it failed") -> str:
        """Always fail with the given message."""
        raise ToolError(message)

    @server.tool()
    def reject(message: str = "rejected") -> str:
        """Answer with a protocol error (a JSON-RPC error, not a tool result)."""
        raise MCPError(-32001, message)

    @server.tool()
    async def hang() -> str:
        """Never answer."""
        await anyio.Event().wait()
        return "unreachable"

    @server.tool()
    def crash(code: int = 3) -> str:
        """Make the server process exit at once."""
        print(f"fake mcp server crashing with code {code}", file=sys.stderr, flush=True)
        os._exit(code)

    @server.tool()
    def big(size: int) -> str:
        """A text of ``size`` characters."""
        return "x" * size

    @server.tool()
    def pid() -> str:
        """The server's process id."""
        return str(os.getpid())

    @server.tool()
    def environ() -> str:
        """The server's environment variables."""
        return "\n".join(f"{k}={v}" for k, v in sorted(os.environ.items()))

    @server.tool()
    def picture() -> list[TextContent | ImageContent | EmbeddedResource]:
        """A caption, an image and an embedded resource."""
        return [
            TextContent(text="a red dot"),
            ImageContent(data=PNG_1X1, mime_type="image/png"),
            EmbeddedResource(
                resource=TextResourceContents(uri="file:///dot.txt", text="dot", mime_type="text/plain")
            ),
        ]

    for i in range(flood):
        server.add_tool(_flood_tool(i), name=f"Tool #{i}!", description=f"flood {i} " + "x" * 10_000)
    return server


def _flood_tool(i: int) -> Callable[[], str]:
    def tool() -> str:
        return f"flood {i}"

    return tool


def main(argv: list[str] | None = None) -> int:
    """Serve MCP on stdin/stdout until stdin closes."""
    parser = argparse.ArgumentParser(prog="spacebot.tools.fakes.mcp_server")
    parser.add_argument("--flood", type=int, default=0)
    parser.add_argument("--exit-at-start", type=int, default=None)
    parser.add_argument("--name", default="fake")
    parser.add_argument("--noise", action="store_true")
    parser.add_argument("--http", type=int, default=None, metavar="PORT")
    parser.add_argument("--token", default="")
    args = parser.parse_args(argv)
    if args.exit_at_start is not None:
        print("fake mcp server refusing to start", file=sys.stderr, flush=True)
        return int(args.exit_at_start)
    if args.noise:
        print("starting up, not JSON", flush=True)
    if args.http is not None:
        anyio.run(serve_http, build(args.name, args.flood), args.http, args.token)
        return 0
    build(args.name, args.flood).run("stdio")
    return 0


async def serve_http(server: MCPServer, port: int, token: str = "") -> None:
    """Serve ``server`` over streamable HTTP on loopback until killed."""
    import uvicorn
    from starlette.types import ASGIApp, Receive, Scope, Send

    inner = server.streamable_http_app(host="127.0.0.1")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if token and scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if given != f"Bearer {token}".encode():
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"bad token"})
                return
        await inner(scope, receive, send)

    asgi: ASGIApp = app
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may take the same port
    sock.bind(("127.0.0.1", port))
    # Listening before it says so: uvicorn listens only once its lifespan has started, and a client
    # that connected in between was refused. Connections now wait in the backlog until it accepts.
    sock.listen(128)
    print(f"listening http://127.0.0.1:{sock.getsockname()[1]}/mcp", flush=True)
    # lifespan "on": the Starlette app's lifespan runs the SDK's session manager.
    config = uvicorn.Config(asgi, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
