"""Secrets on the bus: the supervisor holds the store, each process asks for the names it uses.

The supervisor opens ``$SPACEBOT_HOME/secrets.enc`` (:mod:`spacebot.secrets`) once, before any
process starts; a store it cannot open stops the start with the store's message (nothing runs
half unlocked). It then takes ``SPACEBOT_MASTER_KEY`` out of its own environment, so neither the
zygote nor anything forked from it inherits the key. Values never travel in the environment or in
a spawn request: a process asks with :class:`~spacebot.ipc.messages.SecretsGet` and
:class:`SecretsService` answers according to where the configuration uses each name
(:func:`secret_uses`):

* a **system** secret named by ``llm.providers.<name>.api_key = "secret:NAME"`` goes to the
  processes that call models: channels, branches, workers (compaction runs as one), cortex, and
  memory (ingestion calls the model);
* a system secret named by ``webchat.token = "secret:NAME"`` goes to gateways;
* a system secret named by ``tools.web_search.api_key = "secret:NAME"`` goes to workers, which
  send it to the search provider and never to a program (``spacebot/tools/web_search.py``);
* a **tool** secret listed in ``[delegates] secrets`` goes to workers, which put it in the
  environment of their shell/exec programs (``spacebot/tools/task_tools.py``).

Anything else is refused with an error naming each name and why: a name the store does not hold,
a process of a kind that does not use it, a secret of the wrong category for the place that names
it, a peer that is not one of the supervisor's processes. A grant is logged at debug level with the
names only, never a value; every value a process holds is registered with
:func:`spacebot.logs.register_secret`, so no log line of that process shows it. The child's side of
the exchange, :func:`fetch`, is at the end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from spacebot import logs
from spacebot.config import CREDENTIAL_FIELDS
from spacebot.ipc.messages import SUPERVISOR_ID, Err, ErrorCode, Kind, Ok, SecretsGet
from spacebot.ipc.replies import BusError, Reply

if TYPE_CHECKING:
    from spacebot.config import Config
    from spacebot.llm.config import LLMConfig
    from spacebot.runtime.child import ChildContext
    from spacebot.secrets import SecretStore

log = logging.getLogger("spacebot.secrets")

MODEL_CALLERS = frozenset({Kind.CHANNEL, Kind.BRANCH, Kind.WORKER, Kind.CORTEX, Kind.MEMORY})
"""Kinds that build a model client (``spacebot.runtime.llm_link.connect_llm``)."""

MASTER_KEY_VARIABLE = "SPACEBOT_MASTER_KEY"
"""The environment variable a master key may come in (``spacebot.secrets.store``)."""

SECRET_PREFIX = "secret:"


@dataclass(frozen=True)
class Use:
    """One place of the configuration that names a secret."""

    where: str
    """The config key, e.g. ``llm.providers.openai.api_key``."""
    category: Literal["system", "tool"]
    """The category the secret must have there."""
    kinds: frozenset[Kind]
    """The process kinds that read that key."""


def secret_uses(config: Config) -> dict[str, list[Use]]:
    """Each secret name the configuration uses, with every place it is used."""
    uses: dict[str, list[Use]] = {}
    for provider, settings in sorted(config.llm.providers.items()):
        if settings.api_key.startswith(SECRET_PREFIX):
            name = settings.api_key[len(SECRET_PREFIX) :]
            uses.setdefault(name, []).append(
                Use(f"llm.providers.{provider}.api_key", "system", MODEL_CALLERS)
            )
    if config.webchat.token.startswith(SECRET_PREFIX):
        name = config.webchat.token[len(SECRET_PREFIX) :]
        uses.setdefault(name, []).append(Use("webchat.token", "system", frozenset({Kind.GATEWAY})))
    if config.api.token.startswith(SECRET_PREFIX):
        name = config.api.token[len(SECRET_PREFIX) :]
        uses.setdefault(name, []).append(Use("api.token", "system", frozenset({Kind.GATEWAY})))
    for platform, inst in config.messaging.instances():
        for field in CREDENTIAL_FIELDS:
            value = getattr(inst, field)
            if value.startswith(SECRET_PREFIX):
                where = f"messaging.{platform}[{inst.name}].{field}"
                uses.setdefault(value[len(SECRET_PREFIX) :], []).append(
                    Use(where, "system", frozenset({Kind.GATEWAY}))
                )
    for server in config.tools.mcp:
        for var, raw in sorted(server.env.items()):
            if server.enabled and raw.startswith(SECRET_PREFIX):
                uses.setdefault(raw[len(SECRET_PREFIX) :], []).append(
                    Use(f"tools.mcp[{server.name}].env.{var}", "tool", frozenset({Kind.WORKER}))
                )
    search_key = config.tools.web_search.api_key
    if config.tools.web_search.provider and search_key.startswith(SECRET_PREFIX):
        name = search_key[len(SECRET_PREFIX) :]
        uses.setdefault(name, []).append(Use("tools.web_search.api_key", "system", frozenset({Kind.WORKER})))
    for name in config.delegates.secrets:
        uses.setdefault(name, []).append(Use("delegates.secrets", "tool", frozenset({Kind.WORKER})))
    return uses


def model_secret_names(llm: LLMConfig) -> list[str]:
    """The secrets the providers' ``api_key`` entries name (``secret:NAME``), in provider order."""
    keys = (p.api_key for _, p in sorted(llm.providers.items()))
    return list(dict.fromkeys(k[len(SECRET_PREFIX) :] for k in keys if k.startswith(SECRET_PREFIX)))


def withdraw_master_key(environ: MutableMapping[str, str]) -> bool:
    """Remove the master key variable from ``environ`` (``os.environ``: from what processes started
    from now on inherit); True when it was there."""
    return environ.pop(MASTER_KEY_VARIABLE, None) is not None


class SecretsService:
    """The supervisor's opened store and the policy over who may read which secret."""

    def __init__(self, store: SecretStore, home: Path, environ: Mapping[str, str]) -> None:
        self.store = store
        self.home = home
        self._environ = dict(environ)
        """Where the master key was found, kept to re-open the store on a reload (the variable
        itself is withdrawn from the process environment once the store is open)."""

    @classmethod
    async def open(cls, home: Path, environ: Mapping[str, str]) -> SecretsService:
        """Open and decrypt the whole store in a thread (a passphrase runs Argon2id).

        Raises :class:`~spacebot.secrets.SecretsError` naming the file and key source tried. No
        store file and no key is an empty store.
        """
        from spacebot.secrets import SecretStore

        store = await asyncio.to_thread(SecretStore.open, home, environ)
        _never_logged(store.values().values())
        return cls(store, home, environ)

    async def reopen(self) -> None:
        """Read the store again (a reload: ``spacebot secrets set`` may have changed it); on
        :class:`~spacebot.secrets.SecretsError` the contents read before stay in use."""
        from spacebot.secrets import SecretStore

        store = await asyncio.to_thread(SecretStore.open, self.home, self._environ)
        _never_logged(store.values().values())
        self.store = store

    def describe(self) -> str:
        """One log field: how many secrets, from which file, opened with which key (no values)."""
        names = self.store.names()
        if not names and self.store.source is None:
            return f"none ({self.store.path} absent, no master key)"
        source = self.store.source.describe() if self.store.source is not None else "no master key"
        return f"{len(names)} in {self.store.path} ({source})"

    def answer(self, config: Config, kind: Kind | None, src: str, names: list[str]) -> Reply:
        """The reply to ``SecretsGet(names)`` from process ``src`` of ``kind`` (None: not ours)."""
        categories = dict(self.store.names())
        uses = secret_uses(config)
        granted: dict[str, str] = {}
        problems: list[str] = []
        unknown = 0
        for name in dict.fromkeys(names):
            category = categories.get(name)
            value = self.store.get(name)
            if category is None or value is None:
                unknown += 1
                problems.append(
                    f"no secret {name!r} in {self.store.path} (add it: spacebot secrets set {name})"
                )
                continue
            why = _refusal(name, category, kind, src, uses.get(name, []))
            if why:
                problems.append(why)
            else:
                granted[name] = value
        if problems:
            log.warning("secrets refused to=%s kind=%s: %s", src, kind or "-", "; ".join(problems))
            code = ErrorCode.NOT_FOUND if unknown == len(problems) else ErrorCode.BAD_REQUEST
            return Err(code, "; ".join(problems))
        log.debug("secrets granted to=%s kind=%s names=%s", src, kind, ",".join(granted) or "-")
        return Ok(granted)


def _refusal(name: str, category: str, kind: Kind | None, src: str, uses: list[Use]) -> str:
    """Why ``src`` may not have secret ``name``; empty when it may."""
    if kind is None:
        return f"secret {name!r}: {src!r} is not a process of this supervisor"
    if any(kind in use.kinds and use.category == category for use in uses):
        return ""
    if not uses:
        where = "[delegates] secrets" if category == "tool" else 'an api_key or a token = "secret:NAME"'
        return f"{category} secret {name!r} is not used by the configuration ({where})"
    reasons = []
    for use in uses:
        if kind not in use.kinds:
            readers = ", ".join(sorted(k.value for k in use.kinds))
            reasons.append(f"{use.where} is read by {readers} processes, not {kind.value}")
        else:
            reasons.append(
                f"{use.where} takes a {use.category} secret and {name!r} is a {category} secret"
                + (
                    f" (spacebot secrets set {name} --category {use.category})"
                    if category != use.category
                    else ""
                )
            )
    return f"secret {name!r} refused to {kind.value} process {src!r}: " + "; ".join(reasons)


def _never_logged(values: Iterable[str]) -> None:
    for value in values:
        logs.register_secret(value)  # a log line that would show it shows *** instead


# -- the child's side ------------------------------------------------------------------------


async def fetch(
    ctx: ChildContext, names: Iterable[str], *, timeout: float = 10.0
) -> tuple[dict[str, str], dict[str, str]]:
    """Ask the supervisor for each of ``names``: the values granted, and name → why not.

    One request per name, all at once, so one refused name does not keep the others back.
    """
    wanted = list(dict.fromkeys(names))

    async def one(name: str) -> tuple[str, str | None, str]:
        try:
            got = await ctx.request(
                SUPERVISOR_ID, SecretsGet([name]), returns=dict[str, str], timeout=timeout
            )
        except BusError as exc:
            return name, None, exc.message
        value = got.get(name)
        return name, value, "" if value else "the supervisor's reply did not hold it"

    values: dict[str, str] = {}
    problems: dict[str, str] = {}
    for name, value, problem in await asyncio.gather(*(one(n) for n in wanted)):
        if value:
            values[name] = value
            logs.register_secret(value)
        else:
            problems[name] = problem
    if problems:
        log.warning("secrets not received: %s", "; ".join(problems.values()))
    return values, problems
