"""Who may talk on the bus, the events socket and the control socket: ZAP over PLAIN, per run.

The supervisor's three sockets are PLAIN servers. ZeroMQ hands every handshake to the ZAP handler
on ``inproc://zeromq.zap.01`` in the supervisor's context; this module serves it from the
supervisor's own event loop (a ROUTER pumped like every other socket, each answer a few µs of
HMAC), so no thread and no blocking. What is accepted (``docs/security.md`` says why):

* ``bus`` and ``events``: a Spacebot process, ``username = its id`` and the password derived from
  :attr:`Authenticator._child_key`, a secret that exists only in this process's memory and reaches
  a child inside its spawn request; or an operator client with the password derived from the
  run's key file, **from a process that does not descend from the supervisor** (every tool does).
* ``ctl`` (and ``events``): ``spacebotctl`` with the key file's key, same descent rule.

Everything else is refused before a single message is read, counted, and published as
``sec.refused.<domain>``. Handshakes that never reach ZAP (a client speaking the NULL mechanism, as
a hand-written ZMTP client would) are seen on each socket's monitor and counted the same way.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from spacebot.ipc.credentials import (
    CHILD_TAG,
    CTL_USER,
    DOMAIN_BUS,
    DOMAIN_CTL,
    DOMAIN_EVENTS,
    OPERATOR_TAG,
    derive,
    key_path,
)
from spacebot.ipc.drain import Pump
from spacebot.ipc.messages import BROKER_ID, SUPERVISOR_ID, EventBody, Kind, Notice

log = logging.getLogger("spacebot.auth")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_REFUSED_EVENT_GAP = 1.0
"""Seconds between two ``sec.refused.*`` events (and log lines) of one domain and reason."""
_HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)  # failed auth is reported by the handler itself, with its reason

_current: Authenticator | None = None


def child_password(ident: str) -> str:
    """The bus password of the child ``ident`` of this supervisor ("" outside a supervisor).

    Called where a spawn request is packed for the zygote or a cold start: one authenticator per
    supervisor process, like its pid.
    """
    return _current.child_password(ident) if _current is not None else ""


class Authenticator:
    """The ZAP handler, the refusal counter and the run's keys."""

    def __init__(
        self,
        context: zmq.asyncio.Context,
        runtime_dir: Path,
        publish: Callable[[str, EventBody], None],
    ) -> None:
        self.context = context
        self.key_file = key_path(runtime_dir)
        self._publish = publish
        self._child_key = secrets.token_bytes(32)
        self._operator_key = secrets.token_bytes(32)
        self.accepted = 0
        self.refused = 0
        self._last_event: dict[tuple[str, str], float] = {}
        self._pending: dict[tuple[str, str], dict[str, object]] = {}
        self._scheduled: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._sock: zmq.Socket[bytes] = zmq.Socket(context, zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._pumps: list[Pump] = []
        self._zap_pump: Pump | None = None
        self._monitors: list[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]] = []
        self._me = os.getpid()
        self._uid = os.getuid()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Write the key file and serve ZAP; call before any secured socket binds."""
        global _current
        self._write_key()
        self._sock.bind(ZAP_ENDPOINT)
        self._zap_pump = Pump(self._sock, self._on_zap, name="zap")
        self._pumps.append(self._zap_pump)
        _current = self

    def _write_key(self) -> None:
        # A stale file (or something planted in its place) is removed, never followed or reused.
        self.key_file.unlink(missing_ok=True)
        fd = os.open(
            self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        with os.fdopen(fd, "w") as out:
            out.write(self._operator_key.hex() + "\n")

    def secure(self, sock: zmq.Socket[Any], domain: str) -> None:
        """Make ``sock`` (before it binds) a PLAIN server checked in ``domain``; watch its handshakes."""
        sock.setsockopt(zmq.PLAIN_SERVER, 1)
        sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
        address = f"inproc://spacebot.monitor.{domain}.{id(sock)}"
        sock.monitor(address, _HANDSHAKE_FAILURES)
        watcher: zmq.Socket[bytes] = zmq.Socket(self.context, zmq.PAIR)
        watcher.setsockopt(zmq.LINGER, 0)
        watcher.connect(address)
        self._monitors.append((sock, watcher))
        self._pumps.append(
            Pump(watcher, lambda frames: self._on_monitor(domain, frames), name=f"monitor-{domain}")
        )

    def close(self) -> None:
        """Stop serving and remove the key file (the sockets it secured are closed by their owners)."""
        global _current
        for pump in self._pumps:
            pump.close()
        for sock, watcher in self._monitors:
            if not sock.closed:
                sock.disable_monitor()
            watcher.close(linger=0)
        self._sock.close(linger=0)
        for handle in self._scheduled.values():
            handle.cancel()
        self.key_file.unlink(missing_ok=True)
        if _current is self:
            _current = None

    # -- credentials ---------------------------------------------------------------------------

    def child_password(self, ident: str) -> str:
        """The password the child ``ident`` connects with (handed over in its spawn request)."""
        return derive(self._child_key, CHILD_TAG, ident)

    def _is_child(self, user: str, password: str) -> bool:
        return hmac.compare_digest(password, derive(self._child_key, CHILD_TAG, user))

    def _is_operator(self, domain: str, user: str, password: str) -> bool:
        if domain in (DOMAIN_CTL, DOMAIN_EVENTS) and user == CTL_USER:
            return hmac.compare_digest(password, self._operator_key.hex())
        if domain in (DOMAIN_BUS, DOMAIN_EVENTS):
            return hmac.compare_digest(password, derive(self._operator_key, OPERATOR_TAG, user))
        return False

    def _descends_from_me(self, pid: int) -> bool:
        """Whether ``pid`` is one of the supervisor's descendants (every tool is: orphans are
        reparented to the supervisor, a child subreaper). Unknown pids count as descendants."""
        try:
            return any(p.pid == self._me for p in psutil.Process(pid).parents())
        except psutil.Error:
            return True

    def check(self, domain: str, address: str, mechanism: str, creds: list[bytes]) -> tuple[str, str]:
        """Decide one handshake: ``("", user_id)`` to accept, ``(reason, username)`` to refuse."""
        if mechanism != "PLAIN" or len(creds) != 2:
            return f"mechanism {mechanism} is not accepted", ""
        try:
            user, password = creds[0].decode(), creds[1].decode()
        except UnicodeDecodeError:
            return "credentials are not UTF-8", ""
        uid, pid = _peer(address)
        if uid is not None and uid != self._uid:
            return f"peer uid {uid} is not the service user", user
        if domain in (DOMAIN_BUS, DOMAIN_EVENTS) and user != CTL_USER and self._is_child(user, password):
            return "", user
        if not self._is_operator(domain, user, password):
            return "wrong credentials", user
        if user != CTL_USER and _reserved(user):
            return f"operator clients may not use the name {user!r} of a Spacebot process", user
        if pid is None or self._descends_from_me(pid):
            return f"operator credentials from pid {pid}, a process started by Spacebot", user
        return "", user

    # -- serving -------------------------------------------------------------------------------

    def _on_zap(self, frames: list[bytes]) -> None:
        # [route, b"", version, request id, domain, address, identity, mechanism, *credentials]
        if len(frames) < 8:
            log.warning("malformed ZAP request with %d frames", len(frames))
            return
        route, empty, version, request_id, domain_raw, address_raw, _identity, mechanism = frames[:8]
        domain = domain_raw.decode(errors="replace")
        address = address_raw.decode(errors="replace")
        reason, user = self.check(domain, address, mechanism.decode(errors="replace"), frames[8:])
        if reason:
            self.refuse(domain, reason, username=user, peer=address)
            status, text, user_id = b"400", reason.encode(), b""
        else:
            self.accepted += 1
            status, text, user_id = b"200", b"OK", user.encode()
        reply = (route, empty, version, request_id, status, text, user_id, b"")
        try:
            self._sock.send_multipart(reply, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("ZAP reply undeliverable error=%s", exc)
        finally:
            if self._zap_pump is not None:
                self._zap_pump.kick()  # a send may have consumed the edge that announces input

    def _on_monitor(self, domain: str, frames: list[bytes]) -> None:
        try:
            event = parse_monitor_message(frames)
        except Exception:  # a malformed monitor frame must not stop the pump
            return
        endpoint = event.get("endpoint", b"")
        peer = endpoint.decode(errors="replace") if isinstance(endpoint, bytes) else str(endpoint)
        self.refuse(domain, "handshake failed (not a PLAIN client?)", endpoint=peer)

    def refuse(self, domain: str, reason: str, **data: object) -> None:
        """Count one refusal; log and publish it, at most once per ``_REFUSED_EVENT_GAP`` for each
        domain and reason (a client retrying in a loop must flood neither the log nor the events)."""
        self.refused += 1
        key = (domain, reason)
        self._pending[key] = {"domain": domain, "reason": reason, **data}
        if key in self._scheduled:
            return
        wait = self._last_event.get(key, 0.0) + _REFUSED_EVENT_GAP - time.monotonic()
        if wait <= 0:
            self._emit(key)
        else:
            self._scheduled[key] = asyncio.get_running_loop().call_later(wait, self._emit, key)

    def _emit(self, key: tuple[str, str]) -> None:
        self._scheduled.pop(key, None)
        info = self._pending.pop(key, None)
        if info is None:
            return
        self._last_event[key] = time.monotonic()
        info["count"] = self.refused
        log.warning("refused connection %s", " ".join(f"{k}={v!r}" for k, v in info.items()))
        self._publish(f"sec.refused.{key[0]}", Notice("refused", info))


def _reserved(name: str) -> bool:
    """Names only the supervisor and its processes may hold on the bus."""
    return name in (SUPERVISOR_ID, BROKER_ID) or name.partition(":")[0] in {k.value for k in Kind}


def _peer(address: str) -> tuple[int | None, int | None]:
    """``(uid, pid)`` from a ZAP address; for ``ipc://`` libzmq appends ``:uid:gid:pid``."""
    parts = address.rsplit(":", 3)
    if len(parts) != 4:
        return None, None
    try:
        return int(parts[1]), int(parts[3])
    except ValueError:
        return None, None
