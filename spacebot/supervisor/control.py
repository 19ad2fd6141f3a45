"""The control socket ``ipc://<runtime_dir>/ctl`` that ``spacebotctl`` talks to.

Each request type maps to one small named handler of the supervisor, chosen by an exhaustive
``match`` over :data:`~spacebot.ipc.messages.ControlRequest` (``Supervisor.control_request``);
signals go through the same :meth:`ControlServer.dispatch`. With an authenticator the
socket is a PLAIN server: only ``spacebotctl`` holding the run's key, from a process that Spacebot
did not start, gets a handshake (``spacebot.supervisor.auth``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec
import zmq
import zmq.asyncio

from spacebot.ipc import codec
from spacebot.ipc.credentials import DOMAIN_CTL
from spacebot.ipc.drain import Pump
from spacebot.ipc.messages import ControlReply, ControlRequest, Err, ErrorCode, Ok

if TYPE_CHECKING:
    from spacebot.supervisor.auth import Authenticator

log = logging.getLogger("spacebot.control")

ControlHandler = Callable[[ControlRequest], Awaitable[Ok | Err]]
"""Answers every control request (the union is decoded before it is called)."""


class ControlServer:
    """A ROUTER answering :class:`ControlFrame` s with :class:`ControlReply` s."""

    def __init__(
        self,
        context: zmq.asyncio.Context,
        endpoint: str,
        handler: ControlHandler,
        *,
        max_frame: int = codec.DEFAULT_MAX_FRAME,
        auth: Authenticator | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.handler = handler
        self.guard = codec.FrameGuard("ctl", max_frame)
        self._sock: zmq.Socket[bytes] = zmq.Socket(context, zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if auth is not None:
            auth.secure(self._sock, DOMAIN_CTL)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pump: Pump | None = None

    def start(self) -> None:
        """Bind and serve."""
        self._sock.bind(self.endpoint)
        self._pump = Pump(self._sock, self._on_frames, name="ctl")

    async def close(self) -> None:
        """Stop serving (requests in flight are cancelled) and close."""
        if self._pump is not None:
            self._pump.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._sock.close(linger=0)

    async def dispatch(self, request: ControlRequest) -> Ok | Err:
        """Run the handler for ``request``; every failure becomes an :class:`Err`."""
        try:
            return await self.handler(request)
        except Exception as exc:
            log.exception("control handler failed request=%s", type(request).__name__)
            return Err(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    def _on_frames(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self.guard.count("malformed", f"control message with {len(frames)} frames")
            return
        ident, payload = frames
        if len(payload) > self.guard.max_frame:
            self.guard.count("oversized", f"control message of {len(payload)} bytes")
            return
        try:
            frame = codec.control_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            self.guard.count("malformed", f"bad control message: {exc}")
            why = str(exc).replace("`$[1]", "`request")
            err = Err(ErrorCode.BAD_REQUEST, f"cannot decode request: {why}")
            self._send(ident, ControlReply(codec.control_id(payload), err))
            return
        task = asyncio.get_running_loop().create_task(self._answer(ident, frame.id, frame.request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, ident: bytes, rid: int, request: ControlRequest) -> None:
        result = await self.dispatch(request)
        self._send(ident, ControlReply(rid, result))

    def _send(self, ident: bytes, reply: ControlReply) -> None:
        try:
            self._sock.send_multipart((ident, codec.encode(reply)), zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("control reply undeliverable error=%s", exc)
        finally:
            if self._pump is not None:
                self._pump.kick()
