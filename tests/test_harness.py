"""The suite's own guards (tests/conftest.py) fail the tests they exist to fail, and only those.

A copy of the conftest runs a small suite in a pytest of its own (a subprocess: the guards patch
process-wide things, which must not be nested inside this test's own guards).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")

INI = """
[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
filterwarnings = ["error"]
"""

SUITE = """
import asyncio
import socket
import time

import zmq
import zmq.asyncio


async def test_loop_blocked():
    time.sleep(1.5)  # the guard's threshold is 1 s


async def test_loop_free():
    await asyncio.sleep(0.01)


def test_leaves_the_machine():
    sock = socket.socket()
    sock.settimeout(0.5)
    try:
        sock.connect(("192.0.2.1", 80))  # TEST-NET-1: never a real host
    except Exception:
        pass  # the code under test swallowing the refusal does not hide it
    finally:
        sock.close()


async def test_stays_on_loopback():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _reader, writer = await asyncio.open_connection("localhost", port)
    writer.close()
    server.close()
    await server.wait_closed()


def test_socket_left_open():
    ctx = zmq.Context()
    test_socket_left_open.keep = ctx.socket(zmq.PUSH)


async def test_stream_dropped_open():
    ctx = zmq.asyncio.Context()

    def subscribe():
        ctx.socket(zmq.SUB).connect("inproc://nobody")

    subscribe()
    ctx.term()  # returns: the dropped socket was closed after all


async def test_everything_closed():
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.PULL)
    sock.close(linger=0)
    ctx.term()
"""


def test_the_guards_fail_what_they_should(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "pyproject.toml").write_text(INI)
    (tmp_path / "test_guarded.py").write_text(SUITE)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-p", "no:xdist"],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "1000"},  # summary lines in full
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = result.stdout.splitlines()

    def outcome(test: str) -> str:
        found = [line for line in lines if f"test_guarded.py::{test}" in line]
        return " | ".join(found)

    assert "ERROR" in outcome("test_loop_blocked") and "event loop was blocked" in outcome(
        "test_loop_blocked"
    )
    assert "leave this machine" in outcome("test_leaves_the_machine")
    assert "ZeroMQ objects leaked" in outcome("test_socket_left_open")
    assert "ZeroMQ objects leaked" in outcome("test_stream_dropped_open")
    for clean in ("test_loop_free", "test_stays_on_loopback", "test_everything_closed"):
        assert outcome(clean).startswith("PASSED"), result.stdout
    assert "7 passed, 4 errors" in result.stdout, result.stdout
