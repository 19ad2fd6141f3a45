"""``spacebot``: run the supervisor, create a starter home, check the configuration."""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import sys
from pathlib import Path

from spacebot import config as config_mod
from spacebot import logs
from spacebot.config import Config
from spacebot.errors import ConfigError, SpacebotError
from spacebot.llm.cli import register as register_llm_commands

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _config_file(args: argparse.Namespace) -> tuple[Path, str]:
    """The config file and what named it (``--config``, ``SPACEBOT_CONFIG``, or ``""``: the default)."""
    return config_mod.locate(getattr(args, "config", None), os.environ)


def _apply_globals(args: argparse.Namespace) -> None:
    if getattr(args, "home", None):
        os.environ["SPACEBOT_HOME"] = str(Path(args.home).expanduser())
    if getattr(args, "runtime_dir", None):
        os.environ["SPACEBOT_RUNTIME_DIR"] = str(Path(args.runtime_dir).expanduser())


def _load(args: argparse.Namespace) -> tuple[Path, Config | None]:
    """The config file path and its contents, or ``None`` after printing every problem.

    Every command that reads the configuration comes through here (``run``, ``config check``,
    ``routing explain``): one meaning for ``--home``, ``--config`` and the environment.
    """
    _apply_globals(args)
    path, named_by = _config_file(args)
    try:
        return path, config_mod.load(path, named_by=named_by)
    except ConfigError as exc:
        if isinstance(exc, config_mod.ConfigProblems) and len(exc.problems) > 1:
            print(f"spacebot: {len(exc.problems)} problems in the configuration:", file=sys.stderr)
        for line in str(exc).splitlines():
            print(f"spacebot: {line}", file=sys.stderr)
        return path, None


def _raise_open_files() -> None:
    """Lift the soft open-files limit to the hard one: the broker holds a socket per live process
    and the web chat one per person, so the usual soft 1,024 of a login shell (or of a unit
    without ``LimitNOFILE=``) would cap a busy service at a few hundred conversations."""
    import logging
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    target = max(soft, 1 << 20) if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logging.getLogger("spacebot.supervisor").warning(
                "could not raise the open-files limit from %d to %d: %s", soft, target, exc
            )


def cmd_run(args: argparse.Namespace) -> int:
    """Start the supervisor in the foreground (systemd's ExecStart)."""
    from spacebot.agent.identity import ensure_files
    from spacebot.supervisor.arbiter import Supervisor

    path, cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    # Data, transcripts and identity files are private whatever the shell's umask (the unit's
    # UMask=0077 says the same); every process and tool inherits it.
    os.umask(os.umask(0o077) | 0o077)
    logs.setup("supervisor", cfg.runtime.log_level, cfg.runtime.log_format)
    _raise_open_files()
    if cfg.webchat.enabled and cfg.webchat.port:
        # Checked before anything starts: otherwise the banner would announce someone else's
        # server and the gateway would restart in vain (it still says the same if the port is
        # taken later, between this check and its bind).
        from spacebot.messaging.ports import in_use

        problem = in_use(cfg.webchat.host, cfg.webchat.port)
        if problem is not None:
            where = cfg.source or "config.toml"
            print(
                f"spacebot: web chat: {problem}; set [webchat] port in {where} (0 = any free port) "
                "or [webchat] enabled = false",
                file=sys.stderr,
            )
            return EXIT_FAILED
    fake = None
    if args.fake_llm:
        from spacebot.cli.fakerun import start_fake_llm

        fake, cfg = start_fake_llm(cfg)
    try:
        for agent in cfg.agents:
            for written in ensure_files(cfg.home, agent):
                print(f"spacebot: wrote default {written} (edit it to shape the agent)", flush=True)
        supervisor = Supervisor(cfg, config_file=path)
        if fake is not None:
            supervisor.helpers.add(fake.pid)  # ours on purpose: not an orphan to clean up
        try:
            import uvloop

            return uvloop.run(supervisor.run())
        except ImportError:
            return asyncio.run(supervisor.run())
    except (SpacebotError, OSError) as exc:
        print(f"spacebot: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if fake is not None:
            fake.terminate()
            fake.wait(5)


def cmd_init(args: argparse.Namespace) -> int:
    """Write a commented config and the identity files of agent ``main``."""
    from spacebot.cli.starter import write_starter

    _apply_globals(args)
    home = config_mod.default_home(os.environ)
    try:
        lines = write_starter(home, force=args.force)
    except OSError as exc:
        # Typically a service user asked to create its home under a root-owned /var/lib.
        try:
            user = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            user = str(os.geteuid())
        print(
            f"spacebot: cannot write the starter files in {str(home)!r}: {exc.strerror or exc} "
            f"({exc.filename}); create the directory for user {user!r} first, e.g. "
            f"`sudo install -d -o {user} -m 0700 {home}`",
            file=sys.stderr,
        )
        return EXIT_FAILED
    for line in lines:
        print(line)
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate the configuration, then report what it will do (``spacebot/cli/check.py``)."""
    _path, cfg = _load(args)
    if cfg is None:
        return EXIT_FAILED
    from spacebot.cli.check import report

    return report(cfg, strict=args.strict)


def version_line() -> str:
    """``spacebot <version>``: the installed distribution's version, else the package's own."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("spacebot")
    except PackageNotFoundError:  # run from a source tree that was never installed
        import spacebot

        found = getattr(spacebot, "__version__", "unknown")
    return f"spacebot {found}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = argparse.ArgumentParser(
        prog="spacebot", description="Spacebot: a concurrent AI agent for communities."
    )
    parser.add_argument("--version", action="version", version=version_line())
    parser.add_argument("--home", help="SPACEBOT_HOME (default ~/.spacebot)")
    parser.add_argument("--config", help="config file (default $SPACEBOT_HOME/config.toml)")
    parser.add_argument("--runtime-dir", help="socket directory")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the supervisor and its processes in the foreground")
    p.add_argument(
        "--fake-llm",
        action="store_true",
        help="answer with the bundled scripted fake model (offline smoke test; labelled in the web chat)",
    )
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("init", help="write a commented config.toml and identity files")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser(
        "check", help="validate the configuration; show each process's model and each key reference"
    )
    c.add_argument("--strict", action="store_true", help="exit 1 on warnings too (a key that cannot resolve)")
    c.set_defaults(func=cmd_config_check)
    register_llm_commands(sub)
    from spacebot.cli.secrets_cmd import register as register_secrets_commands

    register_secrets_commands(sub)
    from spacebot.cli.doctor import register as register_doctor_command

    register_doctor_command(sub)
    from spacebot.cli.cron_cmd import register as register_cron_commands

    register_cron_commands(sub)
    from spacebot.cli.mcp_cmd import register as register_mcp_commands

    register_mcp_commands(sub)
    from spacebot.cli.bindings_cmd import register as register_bindings_commands

    register_bindings_commands(sub)
    from spacebot.messaging.fakes.commands import register as register_fake_commands

    register_fake_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help(sys.stderr)  # the whole help, not only "arguments are required"
        return EXIT_USAGE
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    result: int = args.func(args)
    return result


def main_entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
