"""``spacebot bindings explain``: what the permission rule decides for a message, and why.

The decision is :func:`spacebot.messaging.bindings.decide`'s, on the configuration every command
loads (``--home``, ``--config``, the environment), so what it prints is what a running gateway does.
Exit status: 0 accepted, 1 dropped, 2 the configuration or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import sys

from spacebot.config import PLATFORMS

EXIT_ACCEPTED, EXIT_DROPPED, EXIT_BAD = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bindings explain`` to the top-level ``spacebot`` parser."""
    bindings = subparsers.add_parser("bindings", help="inspect which agent answers where on chat platforms")
    bsub = bindings.add_subparsers(dest="bindings_command", required=True)
    p = bsub.add_parser(
        "explain",
        help="show whether a message would be accepted, by which agent, and why",
        description="Exit 0 when the message would be accepted, 1 when dropped, 2 for a bad configuration.",
    )
    p.add_argument("platform", choices=PLATFORMS, help="the platform the message arrives on")
    p.add_argument("--instance", default="main", help="[[messaging.<platform>]] instance name (default main)")
    p.add_argument("--guild", default="", help="Discord guild id / Slack team id")
    p.add_argument("--channel", default="", help="channel (or thread) id")
    p.add_argument("--thread-of", default="", metavar="PARENT", help="the channel is a thread of PARENT")
    p.add_argument("--user", default="", help="the author's platform user id")
    p.add_argument("--dm", action="store_true", help="a direct message to the bot")
    p.add_argument("--mention", action="store_true", help="the message mentions the bot or replies to it")
    p.add_argument("--bot", action="store_true", help="the author is a bot")
    p.add_argument(
        "--config",
        default=argparse.SUPPRESS,  # a default here would overwrite the global --config
        help="config file, same as the global --config (default $SPACEBOT_HOME/config.toml)",
    )
    p.set_defaults(func=explain_handler)


def explain_handler(args: argparse.Namespace) -> int:
    """Print the decision for the message the arguments describe, then the reasoning."""
    # Imported here: spacebot.cli.main imports this module to register the subcommand.
    from spacebot.cli.main import _load
    from spacebot.messaging.bindings import Scope, decide, explain, instance_of

    _path, config = _load(args)
    if config is None:
        return EXIT_BAD
    instance = instance_of(config, args.platform, args.instance)
    if instance is None:
        print(
            f"spacebot: no [[messaging.{args.platform}]] instance named {args.instance!r} in "
            f"{config.source or 'the configuration'}",
            file=sys.stderr,
        )
        return EXIT_BAD
    if args.dm and (args.guild or args.thread_of):
        print(
            "spacebot: --dm takes no --guild or --thread-of (direct messages have neither)", file=sys.stderr
        )
        return EXIT_BAD
    scope = Scope(
        platform=args.platform,
        instance=args.instance,
        guild=args.guild,
        channel=args.channel,
        parent_channel=args.thread_of,
        is_dm=args.dm,
        author_id=args.user,
        author_is_bot=args.bot,
        mentions_bot=args.mention,
    )
    bindings, default_agent = config.bindings, config.messaging.default_agent
    decision = decide(scope, instance, bindings, default_agent)
    print(decision.reason)
    if not instance.enabled:
        print(f"note: instance {args.instance!r} is disabled (enabled = false): it receives nothing")
    for line in explain(scope, instance, bindings, default_agent):
        print(line)
    return EXIT_ACCEPTED if decision.accepted else EXIT_DROPPED
