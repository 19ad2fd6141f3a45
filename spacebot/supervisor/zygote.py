"""The zygote: imports the heavy modules once, then forks children on request.

It opens no ZeroMQ socket and starts no thread, so a fork copies a clean single-threaded process.
It talks to the supervisor over one inherited socketpair (blocking, length-prefixed frames), reaps
its children on SIGCHLD and reports each exit. It dies with the supervisor (``PR_SET_PDEATHSIG``);
its children do not die with it — each watches the supervisor itself (see ``child.py``).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable

from spacebot import logs
from spacebot.ipc.messages import (
    ZygoteExit,
    ZygoteFailed,
    ZygoteForked,
    ZygoteHello,
    ZygotePreloadRest,
    ZygoteSpawn,
)
from spacebot.supervisor import framing, linux

log = logging.getLogger("spacebot.zygote")


def _preload(modules: list[str]) -> list[str]:
    failed = [error for name in modules if (error := _import(name)) is not None]
    # The child runtime itself, warmed up, so a fork has nothing left to import or build.
    child = importlib.import_module("spacebot.runtime.child")
    child.warm_up()
    return failed


def _import(name: str) -> str | None:
    """Import one module; an error message if it cannot load (an optional module missing must not
    stop the zygote).

    A module that defines ``async def warm_up() -> None`` has it run once here, on a private event
    loop closed before any fork: what every child would otherwise build or touch on first use
    (e.g. a model SDK's first call) is then shared instead of copied into each child.
    """
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        return f"{name}: {type(exc).__name__}: {exc}"
    warm = getattr(module, "warm_up", None)
    if inspect.iscoroutinefunction(warm):
        _warm_up(name, warm)
    return None


def _warm_up(name: str, warm: Callable[[], Awaitable[None]]) -> None:
    """Run a module's ``warm_up`` on the children's event loop; a failure is logged, not fatal."""
    from spacebot.runtime.child import _event_loop_runner

    async def run() -> int:
        await warm()
        return 0

    try:
        _event_loop_runner()(run())
    except Exception:
        log.warning("zygote could not warm up %s", name, exc_info=True)


def _import_target(target: str) -> str | None:
    """Import the module of an entry point here, once, so every child of it shares the pages.

    Without this each child imports its own module after the fork (measured: ~1.3 MiB more USS
    and twice the spawn time per child). Returns an error message if the module cannot load.
    """
    module = target.partition(":")[0]
    if module in sys.modules:
        return None
    try:
        importlib.import_module(module)
    except Exception as exc:
        return f"cannot import {module!r}: {type(exc).__name__}: {exc}"
    if threading.active_count() != 1:
        log.error("importing %s started a thread in the zygote; forking it is unsafe", module)
    gc.collect()
    gc.freeze()
    return None


def _reap() -> list[ZygoteExit]:
    exits = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        exits.append(ZygoteExit(pid, os.waitstatus_to_exitcode(status)))
    return exits


def _fork(req: ZygoteSpawn, sock: socket.socket, wake_r: int, wake_w: int) -> int:
    pid = os.fork()
    if pid:
        return pid
    # --- in the child ---
    code = 70
    try:
        os.setsid()  # own session and process group: killpg reaches exactly this subtree
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        sock.close()
        os.close(wake_r)
        os.close(wake_w)
        from spacebot.runtime.child import run_child

        code = run_child(req)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)
    return 0  # unreachable


def serve(sock: socket.socket, supervisor_pid: int, first: list[str], later: list[str]) -> int:
    """Import ``first``, say hello, then fork on request until the supervisor closes the socket.

    ``later`` is imported after the hello, once the supervisor sends :class:`ZygotePreloadRest`,
    one module at a time whenever no request is waiting:
    a (re)started service forks its memory process and gateways while the model SDKs (seconds of
    imports on a busy machine) still load. A fork of any other target (one that may call a model)
    first finishes ``later``, so the SDKs are imported once here, not by each child.
    """
    started = time.monotonic()
    failed = _preload(first)
    gc.collect()
    gc.freeze()  # keep the shared heap shared: a child's first GC must not touch these pages
    threads = threading.active_count()
    if threads != 1:
        log.error("zygote has %d threads after preload; forking it is unsafe", threads)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a Python handler, so the wakeup fd is written
    signal.set_wakeup_fd(wake_w)
    sock.sendall(framing.pack(ZygoteHello(os.getpid(), time.monotonic() - started, threads, failed)))
    log.info(
        "zygote ready preload_s=%.2f modules=%d failed=%d",
        time.monotonic() - started,
        len(first),
        len(failed),
    )
    todo: list[str] = []  # filled when the supervisor says so (ZygotePreloadRest)
    while True:
        # Nothing left to import: block until a request or an exit; else only look.
        ready, _, _ = select.select([sock.fileno(), wake_r], [], [], None if not todo else 0)
        if not ready:
            _import_later(todo.pop(0), started, done=not todo)
            continue
        if wake_r in ready:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
            for exit_msg in _reap():
                sock.sendall(framing.pack(exit_msg))
        if sock.fileno() in ready:
            frame = framing.recv_frame(sock)
            if frame is None:
                log.info("supervisor closed the zygote socket; exiting")
                return 0
            req = framing.to_zygote_decoder.decode(frame)
            if isinstance(req, ZygotePreloadRest):
                todo = [name for name in later if name not in sys.modules]
                if not todo:
                    log.info("zygote preload done preload_s=%.2f", time.monotonic() - started)
                continue
            if os.getppid() != supervisor_pid:
                return 1  # the supervisor is gone; forking now would make orphans
            if req.spec.target.partition(":")[0] not in first:
                # Anything but the first-stage processes may call a model: import the rest now,
                # once, rather than in each of the (possibly many) children forked meanwhile.
                todo = [name for name in later if name not in sys.modules]
                while todo:
                    _import_later(todo.pop(0), started, done=not todo)
            error = _import_target(req.spec.target)
            if error is not None:
                sock.sendall(framing.pack(ZygoteFailed(req.spec.id, error)))
                continue
            try:
                pid = _fork(req, sock, wake_r, wake_w)
            except OSError as exc:
                sock.sendall(framing.pack(ZygoteFailed(req.spec.id, f"fork failed: {exc}")))
                continue
            sock.sendall(framing.pack(ZygoteForked(req.spec.id, pid)))


def _import_later(name: str, started: float, *, done: bool) -> None:
    error = _import(name)
    if error is not None:
        log.warning("zygote could not preload %s", error)
    if threading.active_count() != 1:
        log.error("importing %s started a thread in the zygote; forking it is unsafe", name)
    gc.collect()
    gc.freeze()
    if done:
        log.info("zygote preload done preload_s=%.2f", time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m spacebot.supervisor.zygote --fd N --supervisor PID``."""
    parser = argparse.ArgumentParser(prog="spacebot-zygote")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--supervisor", type=int, required=True)
    parser.add_argument("--first", default="", help="modules to import before saying hello")
    parser.add_argument("--preload", default="", help="modules to import after it")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    args = parser.parse_args(argv)
    linux.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != args.supervisor:
        return 1  # the supervisor died before PDEATHSIG was armed
    linux.set_name("spacebot-zygote")
    linux.forbid_dumps()  # it holds keys (environment): no same-user /proc/<pid>/environ
    logs.setup("zygote", args.log_level, args.log_format)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    sock = socket.socket(fileno=args.fd)
    first = [m for m in args.first.split(",") if m]
    later = [m for m in args.preload.split(",") if m]
    try:
        return serve(sock, args.supervisor, first, later)
    except (BrokenPipeError, ConnectionResetError):
        return 0


if __name__ == "__main__":
    sys.exit(main())
