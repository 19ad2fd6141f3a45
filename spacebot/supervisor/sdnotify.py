"""The systemd notification protocol (``sd_notify(3)``) without a new dependency."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("spacebot.supervisor")


class Notifier:
    """Sends ``READY=1``, ``STATUS=…``, ``WATCHDOG=1`` and ``STOPPING=1`` to ``$NOTIFY_SOCKET``.

    Without ``NOTIFY_SOCKET`` (not under systemd) every call is a no-op.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self._addr: str | None = None
        if path.startswith("@"):
            self._addr = "\0" + path[1:]  # abstract namespace
        elif path.startswith("/"):
            self._addr = path
        self._sock: socket.socket | None = None
        if self._addr is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not watchdog_pid or watchdog_pid == str(os.getpid())):
            # Ping at half the timeout, as sd_watchdog_enabled(3) recommends.
            self.watchdog_interval = int(usec) / 2_000_000
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        """Whether a notification socket is configured."""
        return self._sock is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines in one datagram."""
        if self._sock is None or self._addr is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self._addr)
        except OSError as exc:
            log.warning("sd_notify failed socket=%s error=%s", self._addr.lstrip("\0"), exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        """The service is up."""
        self._last_status = status
        return self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        """Update the one-line status (sent only when it changed)."""
        if status == self._last_status:
            return False
        self._last_status = status
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        """Keep-alive ping."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """Shutdown has begun."""
        return self.notify("STOPPING=1", "STATUS=stopping")

    def reloading(self) -> bool:
        """A reload has begun (``READY=1`` follows when it is done)."""
        return self.notify("RELOADING=1")

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
