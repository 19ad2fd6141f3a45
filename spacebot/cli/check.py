"""``spacebot config check``: what a valid configuration will do, and what it still lacks.

Loading (``spacebot.cli.main._load``, shared by every command) already reports every invalid key
with its file and line. This module prints the rest: where the configuration came from, which
model each process type uses, and whether each ``env:``/``cred:``/``secret:`` reference resolves
in this environment. ``secret:`` references and ``[delegates] secrets`` are looked up in the
secrets store, opened read-only with the master key this environment gives (as ``spacebot run``
would open it). A secret's value is never printed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from spacebot.config import CREDENTIAL_FIELDS, PLATFORMS, Config
from spacebot.llm.config import PROCESS_TYPES, TIERS, SecretStatus, reference_status
from spacebot.llm.errors import LLMConfigError
from spacebot.llm.routing import Router

EXIT_OK, EXIT_WARNINGS = 0, 1
_SCHEMES = ("env", "cred", "secret")
"""``api_key`` prefixes that name where the key is; anything else is the key itself, never printed."""


def report(config: Config, *, strict: bool = False, environ: Mapping[str, str] | None = None) -> int:
    """Print the check of a loaded ``config``; returns the exit code (warnings fail only when ``strict``)."""
    from spacebot.paths import runtime_dir

    env = os.environ if environ is None else environ
    warnings: list[str] = []
    print(f"config ok: {config.source or '(no file: defaults and environment)'}")
    print(f"  home:        {config.home}")
    print(f"  runtime_dir: {runtime_dir(config)}")
    print(f"  log_level:   {config.runtime.log_level}")
    print()
    _print_models(config, warnings)
    print()
    _print_references(config, env, warnings)
    _print_messaging(config, warnings)
    for warning in warnings:
        print(f"warning: {warning}")
    return EXIT_WARNINGS if strict and warnings else EXIT_OK


def _print_models(config: Config, warnings: list[str]) -> None:
    llm = config.llm
    try:
        router = Router(llm)
    except LLMConfigError as exc:
        print("models: none")
        warnings.append(f"{exc} (until then conversations answer with a setup hint)")
        return
    print(f"models (profile {router.profile!r}):")
    rows = [("process", "tier", "model, then fallbacks")]
    for process in (*PROCESS_TYPES, *sorted(set(llm.process_tiers) - set(PROCESS_TYPES))):
        tier = llm.process_tiers.get(process)
        if tier is not None:
            rows.append((process, tier, " -> ".join(router.chain_for(router.model_for_tier(tier)))))
    _table(rows)
    if llm.task_tiers:
        print("  tasks keep their tier: " + ", ".join(f"{t}={tier}" for t, tier in llm.task_tiers.items()))
    if llm.scorer.enabled:
        print(
            f"  without a task, a simple prompt (score < {llm.scorer.simple_below}, at most "
            f"{llm.scorer.max_simple_chars} chars) steps the tier down one"
        )
    table = llm.profiles[router.profile]
    for tier in TIERS:
        if tier not in table:
            warnings.append(
                f"profile {router.profile!r} maps no {tier!r} model: {tier!r} uses "
                f"{router.model_for_tier(tier)!r} (add llm.profiles.{router.profile}.{tier})"
            )


def _secret_lookup(home: Path, env: Mapping[str, str]) -> Callable[[str], SecretStatus]:
    """How secret references resolve, per category wanted: against the store, opened (never
    written) with the key this environment gives, on the first lookup; a store that does not open
    makes each reference say why."""
    from spacebot.secrets import SecretsError, SecretStore

    @functools.cache
    def opened() -> tuple[Path, dict[str, str]] | str:
        try:
            store = SecretStore.open(home, env)
        except SecretsError as exc:
            return f"the secrets store does not open: {exc}"
        return store.path, dict(store.names())

    def status(wanted: str, name: str) -> tuple[bool, str]:
        found = opened()
        if isinstance(found, str):
            return False, found
        path, categories = found
        return _secret_status(path, categories.get(name), name, wanted)

    return lambda wanted: functools.partial(status, wanted)


def _secret_status(path: Path, category: str | None, name: str, wanted: str) -> tuple[bool, str]:
    if category is None:
        return False, f"no secret {name!r} in {path} (spacebot secrets set {name})"
    if category != wanted:
        return False, (
            f"secret {name!r} in {path} is a {category} secret; this takes a {wanted} "
            f"secret (spacebot secrets set {name} --category {wanted})"
        )
    return True, f"{category} secret in {path}"


def _print_references(config: Config, env: Mapping[str, str], warnings: list[str]) -> None:
    rows, missing = reference_rows(config, env)
    warnings.extend(missing)
    if not rows:
        print("references: none")
        return
    print("references (checked in this environment; values are never shown):")
    _table([("key", "reference", "status"), *rows])


def reference_rows(config: Config, env: Mapping[str, str]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Each key reference as ``(key, reference, "resolves: how" | "MISSING: what")``, and a warning
    for each that does not resolve in ``env``."""
    rows: list[tuple[str, str, str]] = []
    warnings: list[str] = []
    lookup = _secret_lookup(Path(config.home), env)
    system = lookup("system")
    for name, provider in sorted(config.llm.providers.items()):
        key = f"llm.providers.{name}.api_key"
        resolves, how = reference_status(provider.api_key, env, system)
        scheme = provider.api_key.partition(":")[0]
        shown = provider.api_key if scheme in _SCHEMES else "(literal)" if provider.api_key else "(none)"
        rows.append((key, shown, f"resolves: {how}" if resolves else f"MISSING: {how}"))
        if not resolves:
            warnings.append(f"{key} ({shown}) does not resolve here")
    token = config.webchat.token
    if token.startswith("env:"):
        # The web chat reads only the variable (spacebot/messaging/webchat.py), no credential file.
        name = token[4:]
        if env.get(name):
            rows.append(("webchat.token", token, f"resolves: environment variable {name}"))
        else:
            rows.append(("webchat.token", token, f"MISSING: environment variable {name!r} is not set"))
            warnings.append(f"webchat.token ({token}) does not resolve here")
    elif token.startswith("secret:"):
        resolves, how = system(token[len("secret:") :])
        rows.append(("webchat.token", token, f"resolves: {how}" if resolves else f"MISSING: {how}"))
        if not resolves:
            warnings.append(f"webchat.token ({token}) does not resolve here")
    elif token:
        rows.append(("webchat.token", "(literal)", "set in the config file"))
    for platform in PLATFORMS:
        for n, inst in enumerate(getattr(config.messaging, platform)):
            for field in CREDENTIAL_FIELDS:
                value: str = getattr(inst, field)
                if not value or not inst.enabled:
                    continue
                key = f"messaging.{platform}[{n}].{field}"
                scheme = value.partition(":")[0]
                shown = value if scheme in _SCHEMES else "(literal)"
                resolves, how = reference_status(value, env, system)
                rows.append((key, shown, f"resolves: {how}" if resolves else f"MISSING: {how}"))
                if not resolves:
                    warnings.append(f"{key} ({shown}) does not resolve here")
    tool = lookup("tool")
    for name in config.delegates.secrets:
        resolves, how = tool(name)
        rows.append(("delegates.secrets", name, f"resolves: {how}" if resolves else f"MISSING: {how}"))
        if not resolves:
            warnings.append(f"delegates.secrets {name} does not resolve here")
    return rows, warnings


def _print_messaging(config: Config, warnings: list[str]) -> None:
    """Chat platform instances and bindings, and what they will not do (docs/platforms.md)."""
    from spacebot.messaging.bindings import warnings as binding_warnings

    ms = config.messaging
    instances = [(platform, inst) for platform in PLATFORMS for inst in getattr(ms, platform)]
    if not instances and not config.bindings:
        return
    print()
    print("messaging:")
    for platform, inst in instances:
        state = "enabled" if inst.enabled else "disabled"
        print(f"  {platform}/{inst.name}: {state}, require_mention = {str(inst.require_mention).lower()}")
    for n, b in enumerate(config.bindings):
        where = [b.platform + (f"/{b.instance}" if b.instance else "")]
        where += [f"guild {b.guild}"] if b.guild else []
        where += [f"channels {', '.join(b.channels)}"] if b.channels else []
        where += ["direct messages"] if b.dms else []
        print(f"  bindings[{n}] -> {b.agent}: {'; '.join(where)}")
    print(f"  default_agent: {ms.default_agent or '(none: unmatched messages are dropped)'}")
    warnings.extend(binding_warnings(config))


def _table(rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for first, second, third in rows:
        print(f"  {first:<{widths[0]}}  {second:<{widths[1]}}  {third}")
