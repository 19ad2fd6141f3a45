"""``python -m spacebot.llm.fake [--port N] [--script FILE]``: same as ``spacebot fake-llm``."""

from __future__ import annotations

import argparse
import sys

from spacebot.llm.cli import register


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` as ``fake-llm`` arguments and run the server."""
    parser = argparse.ArgumentParser(prog="spacebot")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fake-llm", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
