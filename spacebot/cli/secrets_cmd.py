"""``spacebot secrets``: set, list, remove and migrate the secrets behind ``secret:NAME``.

A value is never taken from the command line (it would be in the shell history and in every
process listing): ``set`` asks for it without echo on a terminal, else reads standard input.
"""

from __future__ import annotations

import argparse
import copy
import getpass
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

from spacebot.secrets.store import (
    CATEGORIES,
    SecretsError,
    SecretStore,
    check_name,
    create_key_file,
    write_private,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_REFERENCE_SCHEMES = ("env:", "cred:", "secret:")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``secrets`` and its subcommands to the top-level ``spacebot`` parser."""
    parser = subparsers.add_parser(
        "secrets", help="the encrypted secrets store ($SPACEBOT_HOME/secrets.enc) behind secret:NAME"
    )
    sub = parser.add_subparsers(dest="secrets_command", required=True)
    p = sub.add_parser(
        "set", help="store a secret; the value is asked for without echo, or read from standard input"
    )
    p.add_argument("name", help="the name config strings use as secret:NAME")
    p.add_argument(
        "--category",
        choices=CATEGORIES,
        default="system",
        help="system: used by Spacebot itself (default); tool: may be handed to tool programs",
    )
    p.set_defaults(func=cmd_set)
    p = sub.add_parser("list", help="show the names and categories of the stored secrets (never values)")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("rm", help="remove a secret (exit 1 if there is none of that name)")
    p.add_argument("name")
    p.set_defaults(func=cmd_rm)
    p = sub.add_parser(
        "migrate",
        help="move literal provider keys and the web chat token from config.toml into the store "
        "(the old file is kept as config.toml.bak)",
    )
    p.set_defaults(func=cmd_migrate)


def _home(args: argparse.Namespace) -> tuple[Path, Path] | None:
    """The config file and ``$SPACEBOT_HOME``, as every other command finds them."""
    # Imported here: spacebot.cli.main imports this module to register the subcommands.
    from spacebot.cli.main import _load

    path, config = _load(args)
    if config is None:
        return None
    return path, Path(config.home)


def _open(home: Path, *, writing: bool) -> SecretStore:
    """The store; a first write with no master key anywhere creates the key file (as ``spacebot init``)."""
    store = SecretStore.open(home, os.environ)
    if writing and store.source is None:
        key_file = create_key_file(home)
        print(
            f"spacebot: created the master key file {key_file} (mode 0600); without it "
            f"{store.path} cannot be opened (see docs/security.md to move it to a systemd credential)",
            file=sys.stderr,
        )
        store = SecretStore.open(home, os.environ)
    return store


def _read_value(name: str) -> str:
    """The secret's value: typed twice without echo on a terminal, else all of standard input."""
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of {name}: ")
        if getpass.getpass(f"value of {name} (again): ") != value:
            raise SecretsError("the two values typed differ; nothing was stored")
    else:
        value = sys.stdin.read().rstrip("\r\n")  # `echo KEY |` adds a newline no key contains
    if not value:
        raise SecretsError(f"secret {name!r}: the value is empty; nothing was stored")
    return value


def cmd_set(args: argparse.Namespace) -> int:
    """Store one secret, its value from the terminal or standard input."""
    found = _home(args)
    if found is None:
        return EXIT_USAGE
    _path, home = found
    try:
        check_name(args.name)
        value = _read_value(args.name)
        store = _open(home, writing=True)
        replaced = store.get(args.name) is not None
        store.set(args.name, value, args.category)
    except SecretsError as exc:
        print(f"spacebot: {exc}", file=sys.stderr)
        return EXIT_FAILED
    verb = "replaced" if replaced else "stored"
    print(f"spacebot: {verb} secret {args.name!r} ({args.category}) in {store.path}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    """Print the names and categories of the stored secrets, one per line."""
    found = _home(args)
    if found is None:
        return EXIT_USAGE
    try:
        store = _open(found[1], writing=False)
    except SecretsError as exc:
        print(f"spacebot: {exc}", file=sys.stderr)
        return EXIT_FAILED
    names = store.names()
    if not names:
        print(f"spacebot: no secrets in {store.path}", file=sys.stderr)
    width = max((len(name) for name, _category in names), default=0)
    for name, category in names:
        print(f"{name:<{width}}  {category}")
    return EXIT_OK


def cmd_rm(args: argparse.Namespace) -> int:
    """Remove one secret; exit 1 when there is no secret of that name."""
    found = _home(args)
    if found is None:
        return EXIT_USAGE
    try:
        store = _open(found[1], writing=False)
        removed = store.remove(args.name)
    except SecretsError as exc:
        print(f"spacebot: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not removed:
        print(f"spacebot: no secret {args.name!r} in {store.path}", file=sys.stderr)
        return EXIT_FAILED
    print(f"spacebot: removed secret {args.name!r} from {store.path}")
    return EXIT_OK


# -- migrate ---------------------------------------------------------------------------------------

Key = tuple[str, ...]


class _Literal:
    """One literal secret found in the config: where it is and the name it will be stored under."""

    def __init__(self, key: Key, value: str, name: str) -> None:
        self.key = key
        self.value = value
        self.name = name


def cmd_migrate(args: argparse.Namespace) -> int:
    """Move literal keys out of the config file into the store; rewrite them as ``secret:NAME``."""
    found = _home(args)
    if found is None:
        return EXIT_USAGE
    path, home = found
    if not path.exists():
        print(f"spacebot: no config file at {path}; nothing to migrate")
        return EXIT_OK
    target = path.resolve()  # rewrite the file itself, not a link to it
    try:
        original = target.read_bytes()
        text = original.decode("utf-8")
        raw = tomllib.loads(text)
        literals = _literals(raw)
        if not literals:
            print(f"spacebot: no literal keys in {path}; nothing to migrate")
            return EXIT_OK
        store = _open(home, writing=True)
        _assign_names(literals, store)
        rewritten = _rewrite(text, literals, path)
        expected = copy.deepcopy(raw)
        for item in literals:
            _put(expected, item.key, f"secret:{item.name}")
        if tomllib.loads(rewritten) != expected:
            raise SecretsError(f"{path}: the rewritten file would not mean the same; left unchanged")
        for item in literals:
            if store.get(item.name) != item.value:
                store.set(item.name, item.value, "system")
        backup = target.with_name(target.name + ".bak")
        write_private(backup, original)
        write_private(target, rewritten.encode("utf-8"), mode=target.stat().st_mode & 0o777)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, SecretsError) as exc:
        print(f"spacebot: migrate: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for item in literals:
        print(f"spacebot: {_dotted(item.key)} -> secret:{item.name} (stored in {store.path})")
    print(
        f"spacebot: the previous file is {backup} (mode 0600); it still holds the keys in plain text: "
        "delete it once Spacebot starts with the new one"
    )
    return EXIT_OK


def _literals(raw: dict[str, Any]) -> list[_Literal]:
    """Literal provider keys and web chat token in the parsed config (not env:, cred: or secret:)."""
    found: list[tuple[Key, object, str]] = []  # (key, value as parsed, provider or section)
    llm = raw.get("llm")
    providers = llm.get("providers") if isinstance(llm, dict) else None
    if isinstance(providers, dict):
        for provider, table in providers.items():
            if isinstance(table, dict):
                found.append((("llm", "providers", provider, "api_key"), table.get("api_key"), provider))
    webchat = raw.get("webchat")
    if isinstance(webchat, dict):
        found.append((("webchat", "token"), webchat.get("token"), "WEBCHAT"))
    literals: list[_Literal] = []
    for key, value, owner in found:
        if isinstance(value, str) and value and not value.startswith(_REFERENCE_SCHEMES):
            suffix = "_API_KEY" if key[0] == "llm" else "_TOKEN"
            literals.append(_Literal(key, value, _base_name(owner, suffix)))
    return literals


def _base_name(owner: str, suffix: str) -> str:
    """A valid secret name from a provider name: ``openai`` -> ``OPENAI_API_KEY``."""
    stem = re.sub(r"[^A-Za-z0-9_]", "_", owner.upper())
    if not re.match(r"[A-Za-z_]", stem):
        stem = "LLM_" + stem
    return stem[: 64 - len(suffix)] + suffix


def _assign_names(literals: list[_Literal], store: SecretStore) -> None:
    """Give each literal a free name: its own, reused when it already holds the same value."""
    taken = {name: store.get(name) for name, _category in store.names()}
    for item in literals:
        base, number = item.name, 1
        while taken.get(item.name, item.value) != item.value:
            number += 1
            tail = f"_{number}"
            item.name = base[: 64 - len(tail)] + tail
        taken[item.name] = item.value


_STRING = r""""(?:[^"\\\n]|\\.)*"|'[^'\n]*'"""


def _rewrite(text: str, literals: list[_Literal], path: Path) -> str:
    """``text`` with each literal's string replaced by ``"secret:NAME"``; every other byte kept."""
    from spacebot.config import _key_lines

    key_lines = _key_lines(text)
    lines = text.splitlines(keepends=True)
    edits: dict[int, list[tuple[int, int, str]]] = {}
    for item in literals:
        # The key's own line, or for an inline table the line of the table that holds it.
        number = next(
            (key_lines[item.key[:end]] for end in range(len(item.key), 0, -1) if item.key[:end] in key_lines),
            None,
        )
        if number is None:
            raise SecretsError(f"{path}: cannot find the line of {_dotted(item.key)}; left unchanged")
        line = lines[number - 1]
        name = re.escape(item.key[-1])
        assignment = re.compile(rf"""(?<![A-Za-z0-9_-])(?:{name}|"{name}"|'{name}')\s*=\s*({_STRING})""")
        taken = {start for start, _end, _new in edits.get(number, [])}
        span = next(
            (
                m.span(1)
                for m in assignment.finditer(line)
                if m.start(1) not in taken and _decode(m.group(1)) == item.value
            ),
            None,
        )
        if span is None:
            raise SecretsError(
                f"{path}:{number}: cannot rewrite {_dotted(item.key)} (a multi-line string?); "
                "move it to the store by hand with `spacebot secrets set`; left unchanged"
            )
        edits.setdefault(number, []).append((*span, f'"secret:{item.name}"'))
    for number, changes in edits.items():
        line = lines[number - 1]
        for start, end, new in sorted(changes, reverse=True):
            line = line[:start] + new + line[end:]
        lines[number - 1] = line
    return "".join(lines)


def _decode(literal: str) -> str | None:
    """The value of one TOML string literal."""
    try:
        value = tomllib.loads(f"v = {literal}")["v"]
    except tomllib.TOMLDecodeError:
        return None
    return value if isinstance(value, str) else None


def _put(table: dict[str, Any], key: Key, value: str) -> None:
    for part in key[:-1]:
        table = table[part]
    table[key[-1]] = value


def _dotted(key: Key) -> str:
    from spacebot.llm.config import dotted_key

    return dotted_key(key)
