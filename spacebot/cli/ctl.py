"""``spacebotctl``: inspect and steer a running supervisor over its control socket.

Exit codes (:data:`EXIT_CODES`): 0 ok, 1 the command failed (or the process is not running, or
``listen`` saw no event), 2 usage error, 3 the daemon is not reachable (or not ours to talk to:
the socket and the run's key ``<runtime_dir>/ctl.key`` are the service user's).
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
from spacebot.errors import ConfigError, ProcessTimeout
from spacebot.ipc import codec
from spacebot.ipc.credentials import CredentialError, Credentials, KeyMissing, operator_ctl
from spacebot.ipc.events import EventStream
from spacebot.ipc.messages import (
    ControlFrame,
    ControlRequest,
    Err,
    ErrorCode,
    HistoryRequest,
    KillReport,
    KillRequest,
    Kind,
    ProcessInfo,
    ProcessRun,
    ReloadReport,
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

EXIT_CODES = f"""exit codes:
  {EXIT_OK}  ok
  {EXIT_FAILED}  the command failed; the process to kill is not running; listen --timeout: no event came
  {EXIT_USAGE}  usage error (bad arguments, a bad --runtime-dir, kill of the supervisor or its zygote)
  {EXIT_UNREACHABLE}  the daemon is not reachable, or this user may not talk to it"""
"""The ``--help`` epilog."""

NOT_MANAGED = {
    "supervisor": "the supervisor is stopped with: spacebotctl stop",
    "zygote": "the zygote is the supervisor's fork server; it stops with the supervisor: spacebotctl stop",
    "zygote:spare": "the spare zygote belongs to the supervisor; it stops with it: spacebotctl stop",
}
"""Rows of ``status`` that are not managed processes, and what to say when asked to kill one."""

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
            _state(p),
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


def _state(p: ProcessInfo) -> str:
    return "hibernated" if p.hibernated else p.state.value


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
    if args.id in NOT_MANAGED:
        print(f"spacebotctl: {NOT_MANAGED[args.id]}", file=sys.stderr)
        return EXIT_USAGE
    req = KillRequest(args.id, args.signal, args.grace, args.restart)
    wait = (args.grace if args.grace is not None else 30.0) + 15.0
    report = client.call(req, returns=KillReport, timeout=max(client.timeout, wait))
    if isinstance(report, Err):
        row = _stopped_row(client, args.id) if report.code is ErrorCode.BAD_REQUEST else None
        if row is not None:
            print(f"spacebotctl: {args.id}: not running ({_state(row)})", file=sys.stderr)
            return EXIT_FAILED
        return _fail(report)
    if args.json:
        print(_to_json(report))
    elif report.killed or report.survivors:
        for k in report.killed:
            print(f"{k.pid:>8}  {k.how:<8} {k.name}")
        print(
            f"{len(report.killed)} process(es) ended"
            + (f"; STILL ALIVE: {report.survivors}" if report.survivors else "")
        )
    else:  # it ended on its own before the signal reached it
        print(f"spacebotctl: {args.id}: not running", file=sys.stderr)
    return EXIT_OK if report.killed and not report.survivors else EXIT_FAILED


def _stopped_row(client: Client, ident: str) -> ProcessInfo | None:
    """The status row of ``ident`` when it is listed but has no process (the kill was refused)."""
    reply = client.call(StatusRequest(), returns=StatusReply)
    if isinstance(reply, Err):
        return None
    return next((p for p in reply.processes if p.id == ident and not p.pid), None)


def _cmd_reload(client: Client, args: argparse.Namespace) -> int:
    report = client.call(ReloadRequest(), returns=ReloadReport)
    if isinstance(report, Err):
        return _fail(report)
    if args.json:
        print(_to_json(report))
        return EXIT_OK
    if not report.changes:
        print("no changes")
    for change in report.changes:
        print(f"{change.key}: {change.effect.value}" + (f" ({change.note})" if change.note else ""))
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
            result = await asyncio.to_thread(lambda: client.call(SyncEvents(nonce), returns=None))
            if isinstance(result, Err):
                raise Unreachable(f"subscription handshake failed: {result.message}")

        seen = 0
        try:
            try:  # from here on, no event under these topics is missed
                await stream.sync(trigger, timeout=client.timeout)
            except ProcessTimeout as exc:
                raise Unreachable(str(exc)) from None
            while args.count == 0 or seen < args.count:
                event = await stream.next(timeout=args.idle_timeout or None)
                seen += 1
                if args.json:
                    print(json.dumps(msgspec.to_builtins(msgspec.structs.asdict(event))), flush=True)
                else:
                    stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
                    fields = json.dumps(msgspec.to_builtins(event.body))
                    print(f"{stamp} {event.topic} {fields}", flush=True)
        except TimeoutError:
            if seen:
                return EXIT_OK
            print(f"spacebotctl: no events within {args.idle_timeout:g} s", file=sys.stderr)
            return EXIT_FAILED
        finally:
            stream.close()
        return EXIT_OK

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return EXIT_OK


def _cmd_history(client: Client, args: argparse.Namespace) -> int:
    request = HistoryRequest(agent=args.agent, limit=args.limit, kind=args.kind, proc_id=args.proc)
    rows = client.call(request, returns=list[ProcessRun], timeout=max(client.timeout, 15.0))
    if isinstance(rows, Err):
        return _fail(rows)
    if args.json:
        print(_to_json(rows))
        return EXIT_OK
    table = [("ENDED", "ID", "KIND", "RAN", "EXIT", "DETAIL")]
    for run in rows:
        ended = time.strftime("%m-%d %H:%M:%S", time.localtime(run.ended_at)) if run.ended_at else "-"
        ran = f"{run.ended_at - run.started_at:.1f}s" if run.ended_at else "-"
        code = "-" if run.exit_code is None else str(run.exit_code)
        detail = ", ".join(f"{k}={v}" for k, v in run.detail.items() if k != "state")
        table.append((ended, run.proc_id, run.kind, ran, code, detail[:100]))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
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
    "history": _cmd_history,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="spacebotctl",
        description="Inspect and control a running Spacebot.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from spacebot.cli.main import version_line  # one definition for both commands

    parser.add_argument("--version", action="version", version=version_line())
    parser.add_argument(
        "--runtime-dir", help="socket directory (default: $SPACEBOT_RUNTIME_DIR, else from the config)"
    )
    parser.add_argument(
        "--timeout",
        dest="daemon_timeout",
        type=float,
        default=5.0,
        help="seconds to wait for the daemon to answer a command (default 5)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter
        )

    def json_flag(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--json", action="store_true", help=f"print {what} as JSON")

    p = command("status", "one row per process with live metrics")
    json_flag(p, "the status reply")
    p = command("tree", "the process tree, OS descendants included")
    json_flag(p, "the tree")
    p = command("kill", "kill a process and its whole tree")
    p.add_argument("id", help="the process id, as in the ID column of status (e.g. worker:ab12)")
    p.add_argument("--signal", default="TERM", help="first signal (default TERM; KILL skips the grace)")
    p.add_argument(
        "--grace", type=float, default=None, help="seconds before SIGKILL (default: the kind's budget)"
    )
    p.add_argument("--restart", action="store_true", help="let the restart policy bring it back")
    json_flag(p, "the kill report")
    p = command("reload", "re-read the configuration (like SIGHUP); says which changes are in effect")
    json_flag(p, "the reload report")
    command("stop", "shut everything down gracefully (like SIGTERM)")
    p = command("listen", "stream events (all, or those under the given topic prefixes)")
    p.add_argument("topic", nargs="*", help="topic prefix, e.g. proc.worker. (default: every event)")
    json_flag(p, "each event")
    p.add_argument("--count", type=int, default=0, help="exit after this many events (default: never)")
    p.add_argument(
        "--timeout",
        dest="idle_timeout",
        type=float,
        default=0.0,
        help="exit when no event arrives for this many seconds: code 0 after some, 1 if none came "
        "(default: wait for ever)",
    )
    p = command("spawn", "start a process from a dotted-path entry point")
    p.add_argument("target", help="package.module:function, e.g. spacebot.procs.testkit:idle")
    p.add_argument(
        "--kind", default="worker", choices=[k.value for k in Kind], help="process kind (default worker)"
    )
    p.add_argument("--id", default="", help="bus id (default: <kind>:<random>)")
    p.add_argument("--task", default="", help="one-line task shown in status")
    p.add_argument("--arg", action="append", default=[], help="KEY=VALUE argument for the entry point")
    p.add_argument(
        "--restart",
        choices=["always", "on-failure", "never"],
        help="restart policy (default: the kind's, from the config)",
    )
    p.add_argument("--no-wait", action="store_true", help="return once forked, not once ready")
    json_flag(p, "the spawn reply")
    p = command("history", "an agent's latest process runs and maintenance runs, newest first")
    p.add_argument("--agent", default="main", help="whose processes (default main)")
    p.add_argument("--limit", type=int, default=20, help="most rows (default 20)")
    p.add_argument("--kind", default="", help="only this kind: worker, branch, channel, maintenance, …")
    p.add_argument("--proc", default="", help="only this process id")
    json_flag(p, "the rows")
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
    client = Client(endpoints, args.daemon_timeout)
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
