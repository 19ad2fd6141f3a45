"""Credentials for the bus, the events socket and the control socket (ZeroMQ PLAIN, checked by ZAP).

Two kinds of holder exist (see ``docs/security.md``, "The bus and the control socket"):

* a **Spacebot process** forked by the supervisor gets ``username = its process id`` and a password
  the supervisor derives from a secret that never leaves its memory; the password arrives inside
  the spawn request, so nothing a tool runs (exec'd, clean environment) ever holds one;
* the **operator's clients** (``spacebotctl``, the test harness, benchmarks), run by the service
  user outside the sandbox, read the run's key from ``<runtime_dir>/ctl.key`` (mode 0600, written
  at start) and derive theirs from it. The supervisor also refuses these from any process that
  descends from it, which every tool does.

This module is what the clients need; the checking side is ``spacebot.supervisor.auth``.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from spacebot.errors import SpacebotError

KEY_FILE = "ctl.key"
"""The operator key's file name inside the runtime directory."""
CTL_USER = "spacebotctl"
"""PLAIN username of an operator client on the control socket."""
DOMAIN_BUS, DOMAIN_EVENTS, DOMAIN_CTL = "bus", "events", "ctl"
"""ZAP domains of the three sockets."""
CHILD_TAG, OPERATOR_TAG = "child", "operator"
"""Derivation tags: a child's password and an operator client's bus password never coincide."""


class CredentialError(SpacebotError):
    """The operator key cannot be read (no supervisor, or not the service user)."""


class KeyMissing(CredentialError):
    """There is no key file: no supervisor runs on this runtime directory."""


@dataclass(frozen=True)
class Credentials:
    """A PLAIN username/password pair."""

    username: str
    password: str

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` authenticate with these (call before ``connect``)."""
        sock.setsockopt(zmq.PLAIN_USERNAME, self.username.encode())
        sock.setsockopt(zmq.PLAIN_PASSWORD, self.password.encode())


def derive(key: bytes, tag: str, ident: str) -> str:
    """The password of ``ident`` under ``key`` (HMAC-SHA256, hex)."""
    return hmac.new(key, f"{tag}\0{ident}".encode(), hashlib.sha256).hexdigest()


def key_path(runtime_dir: Path) -> Path:
    """Where the operator key of the supervisor using ``runtime_dir`` lives."""
    return Path(runtime_dir) / KEY_FILE


def read_key(runtime_dir: Path) -> bytes:
    """The operator key, or :class:`CredentialError` naming why it cannot be read."""
    path = key_path(runtime_dir)
    try:
        text = path.read_text().strip()
    except PermissionError:
        raise CredentialError(
            f"permission denied reading {path}: run this as the user Spacebot runs as"
        ) from None
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise KeyMissing(f"no supervisor key at {path} (is `spacebot run` running?)") from None
        raise CredentialError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise CredentialError(f"{path} does not hold a key (expected hex)") from None
    if len(key) < 16:
        raise CredentialError(f"{path} holds a key of {len(key)} bytes, expected 32")
    return key


def operator_ctl(runtime_dir: Path) -> Credentials:
    """Credentials of an operator client on the control and events sockets."""
    return Credentials(CTL_USER, read_key(runtime_dir).hex())


def operator_bus(runtime_dir: Path, ident: str) -> Credentials:
    """Credentials of an operator client joining the bus as ``ident`` (tests, benchmarks)."""
    return Credentials(ident, derive(read_key(runtime_dir), OPERATOR_TAG, ident))
