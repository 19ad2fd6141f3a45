"""``spacebotctl``: inspect and steer a running supervisor over its control socket.

Exit codes: 0 ok, 1 the command failed, 2 usage error, 3 the daemon is not reachable (or not
ours to talk to: the socket and the run's key ``<runtime_dir>/ctl.key`` are the service user's).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

import msgspec
import zmq

from spacebot import config as config_mod
from spacebot.errors import ConfigError
from spacebot.ipc import codec
from spacebot.ipc.credentials import CredentialError, Credentials, KeyMissing, operator_ctl
from spacebot.ipc.events import EventStream
from spacebot.ipc.messages import (
    ControlFrame,
    ControlRequest,
    Err,
    KillReport,
    KillRequest,
    Kind,
    ReloadRequest,
    ShutdownRequest,
    Spawned,
    SpawnSpec,
    StatusReply,
    StatusRequest,
    SyncEvents,
    TreeNode,
    TreeRequest,
)
from spacebot.ipc.replies import BusError, typed
from spacebot.paths import Endpoints, runtime_dir

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

T = TypeVar("T")


class Unreachable(Exception):
    """The control socket did not answer."""


class Denied(Exception):
    """This user may not talk to the daemon (the runtime dir or the key is not readable)."""


class Client:
    """A blocking request/reply client for the control socket."""

    _ids = itertools.count(1)

    def __init__(self, endpoints: Endpoints, timeout: float) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self._credentials: Credentials | None = None

    def credentials(self) -> Credentials | None:
        """The run's operator credentials; ``None`` when there is no key (no live supervisor: the
        call then ends as "no answer"). Raises :class:`Denied` when this user may not read them."""
        path = self.endpoints.ctl_path
        try:
            present = path.exists()
        except PermissionError:
            raise Denied(
                f"permission denied on {self.endpoints.dir}: run spacebotctl as the user Spacebot runs as"
            ) from None
        if not present:
            raise Unreachable(f"no control socket at {path}")
        if self._credentials is None:
            try:
                self._credentials = operator_ctl(self.endpoints.dir)
            except KeyMissing:
                return None
            except CredentialError as exc:
                raise Denied(str(exc)) from None
        return self._credentials

    @overload
    def call(self, request: ControlRequest, *, returns: type[T], timeout: float | None = None) -> T | Err: ...
    @overload
    def call(self, request: ControlRequest, *, returns: None, timeout: float | None = None) -> Err | None: ...
    def call(self, request: ControlRequest, *, returns: Any, timeout: float | None = None) -> Any:
        """Send one request and wait for its reply: the value as ``returns`` (``None``: no value), or
        the daemon's :class:`Err` — also made here, ``bad_reply``, for a value that does not fit."""
        path = self.endpoints.ctl_path
        credentials = self.credentials()
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if credentials is not None:
            credentials.apply(sock)
        try:
            sock.connect(self.endpoints.ctl)
            rid = next(self._ids)
            sock.send(codec.encode(ControlFrame(rid, request)))
            deadline = time.monotonic() + (timeout or self.timeout)
            while (left := deadline - time.monotonic()) > 0:
                if not sock.poll(int(left * 1000)):
                    break
                reply = codec.control_reply_decoder.decode(sock.recv())
                if reply.id != rid:
                    continue
                if isinstance(reply.result, Err):
                    return reply.result
                try:
                    return typed(reply.result.value, returns, self.endpoints.ctl)
                except BusError as exc:
                    return Err(exc.code, exc.message)
            raise Unreachable(f"no answer from {path} within {timeout or self.timeout:g}s")
        finally:
            sock.close(linger=0)
            ctx.term()


def _endpoints(args: argparse.Namespace) -> Endpoints:
    if args.runtime_dir:
        return Endpoints(Path(args.runtime_dir))
    try:
        cfg = config_mod.load()
    except (ConfigError, OSError):
        cfg = None  # a broken config must not stop the operator from inspecting the daemon
    return Endpoints(runtime_dir(cfg))


def _age(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def _print_status(reply: StatusReply) -> None:
    cols = (
        "ID",
        "KIND",
        "PID",
        "STATE",
        "UPTIME",
        "CPU%",
        "RSS_MB",
        "USS_MB",
        "HB_AGE",
        "PROG_AGE",
        "PARENT",
        "TASK",
    )
    rows = [
        (
            p.id,
            p.kind,
            str(p.pid or "-"),
            p.state.value,
            _age(p.uptime_s if p.pid else None),
            f"{p.cpu_percent:.1f}",
            f"{p.rss_mb:.1f}",
            f"{p.uss_mb:.1f}",
            _age(p.heartbeat_age_s),
            _age(p.progress_age_s),
            p.parent or "-",
            p.task[:40],
        )
        for p in reply.processes
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    b = reply.broker
    print(
        f"\nbroker: routed={reply.routed} malformed={b.malformed} oversized={b.oversized} "
        f"unknown={b.unknown} shed={b.shed}  runtime_dir={reply.runtime_dir}"
    )
    sb = reply.sandbox
    if sb:
        landlock = f"landlock ABI {sb.get('landlock_abi')}" if sb.get("landlock") else "no landlock"
        line = sb.get("summary") or f"{sb.get('mode')} ({landlock})"  # summary: what is enforced/missing
        print(f"tool sandbox: {line}")


def _print_tree(node: TreeNode, prefix: str = "", last: bool = True, top: bool = True) -> None:
    label = (
        f"{node.id} (pid {node.pid}, {node.state}{', ' + node.command if node.command != node.id else ''})"
    )
    print(label if top else f"{prefix}{'└─ ' if last else '├─ '}{label}")
    child_prefix = "" if top else prefix + ("   " if last else "│  ")
    for i, child in enumerate(node.children):
        _print_tree(child, child_prefix, i == len(node.children) - 1, False)


def _to_json(value: Any) -> str:
    return json.dumps(msgspec.to_builtins(value), indent=2)


def _cmd_status(client: Client, args: argparse.Namespace) -> int:
    reply = client.call(StatusRequest(), returns=StatusReply)
    if isinstance(reply, Err):
        return _fail(reply)
    if args.json:
        print(_to_json(reply))
    else:
        _print_status(reply)
    return EXIT_OK


def _cmd_tree(client: Client, args: argparse.Namespace) -> int:
    node = client.call(TreeRequest(), returns=TreeNode)
    if isinstance(node, Err):
        return _fail(node)
    print(_to_json(node)) if args.json else _print_tree(node)
    return EXIT_OK


def _cmd_kill(client: Client, args: argparse.Namespace) -> int:
    req = KillRequest(args.id, args.signal, args.grace, args.restart)
    wait = (args.grace if args.grace is not None else 30.0) + 15.0
    report = client.call(req, returns=KillReport, timeout=max(client.timeout, wait))
    if isinstance(report, Err):
        return _fail(report)
    if args.json:
        print(_to_json(report))
    else:
        for k in report.killed:
            print(f"{k.pid:>8}  {k.how:<8} {k.name}")
        print(
            f"{len(report.killed)} process(es) ended"
            + (f"; STILL ALIVE: {report.survivors}" if report.survivors else "")
        )
    return EXIT_FAILED if report.survivors else EXIT_OK


def _cmd_reload(client: Client, args: argparse.Namespace) -> int:
    result = client.call(ReloadRequest(), returns=None)
    if isinstance(result, Err):
        return _fail(result)
    print("configuration reloaded")
    return EXIT_OK


def _cmd_stop(client: Client, args: argparse.Namespace) -> int:
    result = client.call(ShutdownRequest(), returns=None)
    if isinstance(result, Err):
        return _fail(result)
    print("shutdown started")
    return EXIT_OK


def _cmd_spawn(client: Client, args: argparse.Namespace) -> int:
    kwargs: dict[str, Any] = {}
    for item in args.arg:
        key, sep, value = item.partition("=")
        if not sep:
            print(
                f"spacebotctl: --arg {item!r} must be KEY=VALUE (VALUE is JSON or a plain string)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    spec = SpawnSpec(
        kind=Kind(args.kind),
        target=args.target,
        id=args.id or "",
        args=kwargs,
        task=args.task or "",
        wait_ready=not args.no_wait,
        restart=args.restart or "",
    )
    spawned = client.call(spec, returns=Spawned, timeout=max(client.timeout, 60.0))
    if isinstance(spawned, Err):
        return _fail(spawned)
    print(_to_json(spawned) if args.json else f"{spawned.id} pid {spawned.pid} {spawned.state.value}")
    return EXIT_OK


def _cmd_listen(client: Client, args: argparse.Namespace) -> int:
    credentials = client.credentials()  # the events socket takes the same key as ctl

    async def run() -> int:
        stream = EventStream(client.endpoints.events, args.topic or [""], credentials=credentials)

        async def trigger(nonce: str) -> None:
            result = await asyncio.to_thread(
                lambda: client.call(SyncEvents(nonce), returns=None, timeout=2.0)
            )
            if isinstance(result, Err):
                raise Unreachable(f"subscription handshake failed: {result.message}")

        seen = 0
        try:
            await stream.sync(trigger)  # from here on, no event under these topics is missed
            while args.count == 0 or seen < args.count:
                event = await stream.next(timeout=args.timeout or None)
                seen += 1
                if args.json:
                    print(json.dumps(msgspec.to_builtins(msgspec.structs.asdict(event))), flush=True)
                else:
                    stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
                    fields = json.dumps(msgspec.to_builtins(event.body))
                    print(f"{stamp} {event.topic} {fields}", flush=True)
        except TimeoutError:
            return EXIT_OK if seen else EXIT_FAILED
        finally:
            stream.close()
        return EXIT_OK

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return EXIT_OK


def _fail(err: Err) -> int:
    print(f"spacebotctl: {err.code.value}: {err.message}", file=sys.stderr)
    return EXIT_FAILED


COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "status": _cmd_status,
    "tree": _cmd_tree,
    "kill": _cmd_kill,
    "reload": _cmd_reload,
    "stop": _cmd_stop,
    "spawn": _cmd_spawn,
    "listen": _cmd_listen,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="spacebotctl", description="Inspect and control a running Spacebot."
    )
    parser.add_argument("--runtime-dir", help="socket directory (default: from config/environment)")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the daemon (default 5)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("status", help="one row per process with live metrics")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("tree", help="the process tree, OS descendants included")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("kill", help="kill a process and its whole tree")
    p.add_argument("id")
    p.add_argument("--signal", default="TERM", help="first signal (default TERM; KILL skips the grace)")
    p.add_argument(
        "--grace", type=float, default=None, help="seconds before SIGKILL (default: the kind's budget)"
    )
    p.add_argument("--restart", action="store_true", help="let the restart policy bring it back")
    p.add_argument("--json", action="store_true")
    sub.add_parser("reload", help="re-read the configuration (like SIGHUP)")
    sub.add_parser("stop", help="shut everything down gracefully (like SIGTERM)")
    p = sub.add_parser("listen", help="stream events (all, or those under the given topic prefixes)")
    p.add_argument("topic", nargs="*")
    p.add_argument("--json", action="store_true")
    p.add_argument("--count", type=int, default=0, help="exit after this many events")
    p.add_argument("--timeout", type=float, default=0.0, help="exit when no event arrives for this long")
    p = sub.add_parser("spawn", help="start a process from a dotted-path entry point")
    p.add_argument("target", help="package.module:function, e.g. spacebot.procs.testkit:idle")
    p.add_argument("--kind", default="worker", choices=[k.value for k in Kind])
    p.add_argument("--id", default="")
    p.add_argument("--task", default="")
    p.add_argument("--arg", action="append", default=[], help="KEY=VALUE argument for the entry point")
    p.add_argument("--restart", choices=["always", "on-failure", "never"])
    p.add_argument("--no-wait", action="store_true", help="return once forked, not once ready")
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    try:
        endpoints = _endpoints(args)
    except ConfigError as exc:
        print(f"spacebotctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    client = Client(endpoints, args.timeout)
    try:
        return COMMANDS[args.command](client, args)
    except Denied as exc:
        print(f"spacebotctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except Unreachable as exc:
        print(
            f"spacebotctl: daemon not reachable: {exc}\n"
            f"  hint: is `spacebot run` running? Its runtime dir is printed at start; pass it with "
            f"--runtime-dir or set SPACEBOT_RUNTIME_DIR (tried {endpoints.ctl_path}).",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE


def main_entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
