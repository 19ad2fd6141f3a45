"""``spacebot fake-llm`` and ``spacebot routing explain`` subcommands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

import msgspec

from spacebot.llm.errors import LLMConfigError
from spacebot.llm.routing import Router
from spacebot.llm.types import Request, UserMessage


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fake-llm`` and ``routing`` to the top-level ``spacebot`` parser."""
    fake = subparsers.add_parser("fake-llm", help="run the scriptable fake LLM server on loopback")
    fake.add_argument("--port", type=int, default=0, help="port (0 picks a free one)")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--script", type=Path, default=None, help="JSON or TOML rule script")
    fake.add_argument("--ttft", type=float, default=0.0, help="seconds before the first streamed event")
    fake.add_argument("--token-latency", type=float, default=0.0, help="seconds between streamed chunks")
    fake.set_defaults(func=fake_llm_handler)

    routing = subparsers.add_parser("routing", help="inspect model routing")
    rsub = routing.add_subparsers(dest="routing_command", required=True)
    explain = rsub.add_parser("explain", help="show which model a prompt would use and why")
    explain.add_argument("prompt", help="the user message to route")
    explain.add_argument("--process", required=True, help="process type: channel, branch, worker, ...")
    explain.add_argument("--task", default=None, help="task type (coding, summarize, research, ...)")
    explain.add_argument("--profile", default=None, help="profile override (eco, balanced, premium)")
    explain.add_argument(
        "--config",
        default=argparse.SUPPRESS,  # a default here would overwrite the global --config
        help="config file, same as the global --config (default $SPACEBOT_HOME/config.toml)",
    )
    explain.add_argument("--json", action="store_true", help="print the decision as JSON")
    explain.set_defaults(func=routing_explain_handler)


def routing_explain_handler(args: argparse.Namespace) -> int:
    """Print the routing decision for ``args.prompt``, from the configuration every command loads."""
    # Imported here: spacebot.cli.main imports this module to register the subcommands.
    from spacebot.cli.main import _load

    _path, config = _load(args)
    if config is None:
        return 2
    try:
        decision = Router(config.llm, args.profile).decide(
            Request([UserMessage(args.prompt)]), process=args.process, task=args.task
        )
    except LLMConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(msgspec.to_builtins(decision)))
        return 0
    print(f"model:   {decision.chain[0]}")
    print(f"profile: {decision.profile}   tier: {decision.tier}")
    for step in decision.steps:
        print(f"  {step.level:<9} {step.tier:<9} {step.reason}")
    if decision.features:
        feats = ", ".join(f"{k}={v}" for k, v in decision.features.items())
        print(f"  score {decision.score}: {feats}")
    print("chain:   " + " -> ".join(decision.chain))
    return 0


def fake_llm_handler(args: argparse.Namespace) -> int:
    """Run the fake server until SIGINT/SIGTERM."""
    from spacebot.llm.fake import FakeLLM, load_script

    try:
        script = load_script(args.script) if args.script else None
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def serve() -> None:
        fake = FakeLLM(
            script=script, host=args.host, port=args.port, ttft=args.ttft, token_latency=args.token_latency
        )
        port = await fake.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(
            f"fake-llm listening on http://{args.host}:{port} (OpenAI base_url: {fake.openai_url})",
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            await fake.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0
