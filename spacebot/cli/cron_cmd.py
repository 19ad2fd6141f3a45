"""``spacebot cron list|add|rm|enable|disable|run-now|history``: an agent's scheduled jobs.

Each command goes through the running supervisor's control socket to ``cortex:<agent>``, which
owns the scheduler (``spacebot.cron.runner``). Exit codes: 0 ok, 1 the command was refused (the
message says why), 2 usage or configuration error, 3 the daemon is not reachable.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime
from typing import Any

import msgspec

from spacebot.ipc.messages import (
    CronCmdAdd,
    CronCmdEnable,
    CronCmdHistory,
    CronCmdList,
    CronCmdRemove,
    CronCmdRunNow,
    CronCommand,
    CronJob,
    CronJobSpec,
    CronRequest,
    CronRun,
    Err,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """``90``, ``15m``, ``2h``, ``1d`` → seconds (argparse type)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90, 15m, 2h, 1d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cron`` and its subcommands to the top-level ``spacebot`` parser."""
    cron = subparsers.add_parser(
        "cron",
        help="list, add, remove and run an agent's scheduled jobs (talks to the running service)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    csub = cron.add_subparsers(dest="cron_command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = csub.add_parser(name, help=help_text)
        p.add_argument("--agent", default="main", help="the agent whose jobs are meant (default main)")
        p.add_argument("--json", action="store_true", help="print the answer as JSON")
        p.set_defaults(func=handler)
        return p

    command("list", "every job with its schedule, next run and state")
    p = command("add", "define a job (again: redefine it and enable it)")
    p.add_argument("id", help="job id: 1-64 of A-Z a-z 0-9 _ -")
    p.add_argument("--prompt", required=True, help="what the agent is asked to do at each run")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--cron", default="", metavar="EXPR", help="5-field cron expression, e.g. '30 8 * * 1-5'"
    )
    when.add_argument(
        "--every", type=duration, default=0.0, help="an interval: 90, 15m, 2h, 1d (at least 1m)"
    )
    p.add_argument("--tz", default="", help="IANA zone (default [defaults] timezone, else the host's)")
    p.add_argument("--active-hours", default="", metavar="HH:MM-HH:MM", help="only run inside this window")
    p.add_argument("--once", action="store_true", help="run at the first due time, then never again")
    p.add_argument(
        "--deliver-to", default="", metavar="CONVERSATION", help="post the answer there, e.g. web:4f2a…"
    )
    p.add_argument(
        "--timeout", type=duration, default=0.0, help="run time limit (default [defaults] cron_timeout)"
    )
    p = command("rm", "delete a job (its run history stays)")
    p.add_argument("id")
    p = command("enable", "enable a job (clears its failure count)")
    p.add_argument("id")
    p = command("disable", "stop scheduling a job")
    p.add_argument("id")
    p = command("run-now", "start a run now, outside the schedule")
    p.add_argument("id")
    p = command("history", "the execution log, newest first")
    p.add_argument("id", nargs="?", default=None, help="one job (default: all)")
    p.add_argument("--limit", type=int, default=20, help="most rows (default 20)")


def _request(args: argparse.Namespace) -> CronCommand:
    match args.cron_command:
        case "list":
            return CronCmdList()
        case "add":
            spec = CronJobSpec(
                id=args.id,
                prompt=args.prompt,
                cron=args.cron,
                every=args.every,
                timezone=args.tz,
                active_hours=args.active_hours,
                run_once=args.once,
                deliver_to=args.deliver_to,
                timeout=args.timeout,
            )
            return CronCmdAdd(spec)
        case "rm":
            return CronCmdRemove(args.id)
        case "enable" | "disable":
            return CronCmdEnable(args.id, args.cron_command == "enable")
        case "run-now":
            return CronCmdRunNow(args.id)
        case _:
            return CronCmdHistory(args.id, args.limit)


RETURNS: dict[str, Any] = {
    "list": list[CronJob],
    "add": CronJob,
    "rm": bool,
    "enable": CronJob,
    "disable": CronJob,
    "run-now": CronRun,
    "history": list[CronRun],
}


def handler(args: argparse.Namespace) -> int:
    """Send the command to the agent's cortex and print its answer."""
    from spacebot.cli.ctl import Client, Denied, Unreachable
    from spacebot.cli.main import _load
    from spacebot.paths import Endpoints, runtime_dir

    _path, cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    endpoints = Endpoints(runtime_dir(cfg))
    client = Client(endpoints, 25.0)
    try:
        value = client.call(CronRequest(args.agent, _request(args)), returns=RETURNS[args.cron_command])
    except Denied as exc:
        print(f"spacebot: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except Unreachable as exc:
        print(f"spacebot: the service is not reachable: {exc} (is `spacebot run` running?)", file=sys.stderr)
        return EXIT_UNREACHABLE
    if isinstance(value, Err):
        print(f"spacebot: cron {args.cron_command}: {value.message} ({value.code.value})", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(msgspec.to_builtins(value), indent=2))
    else:
        _print(args.cron_command, value)
    return EXIT_OK


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _schedule(job: CronJob) -> str:
    text = job.cron or f"every {job.every:g}s"
    if job.timezone:
        text += f" {job.timezone}"
    if job.active_hours:
        text += f" [{job.active_hours}]"
    return text + (" once" if job.run_once else "")


def _print(command: str, value: Any) -> None:
    if command in ("list", "add", "enable", "disable"):
        jobs = value if isinstance(value, list) else [value]
        if not jobs:
            print("no cron jobs")
        for job in jobs:
            state = "enabled" if job.enabled else f"DISABLED ({job.disabled_reason or 'by an operator'})"
            print(f"{job.id}  {_schedule(job)}  next={_when(job.next_run_at)}  {state}  source={job.source}")
            print(f"    to={job.deliver_to or '-'}  failures={job.failures}  prompt={job.prompt[:70]!r}")
    elif command == "rm":
        print("removed")
    elif command == "run-now":
        print(f"run {value.id} started in {value.conversation}")
    else:
        if not value:
            print("no runs")
        for run in value:
            took = (
                f"{run.ended_at - run.started_at:.1f}s"
                if run.ended_at
                else f"{time.time() - run.started_at:.0f}s so far"
            )
            mark = "delivered" if run.delivered else "not delivered"
            print(f"{run.id}  {run.job_id}  {_when(run.started_at)}  {run.outcome}  {took}  {mark}")
            if run.error:
                print(f"    error: {run.error[:200]}")
