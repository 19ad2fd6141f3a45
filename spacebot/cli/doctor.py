"""``spacebot doctor``: can this install work? One line per check, and the fix for each that fails.

Each check is a small function returning :class:`Check` results. A failure (``✘``) makes the exit
code 1; a warning (``!``) does not: a home readable by others, a kernel without Landlock while
``[delegates] allow_unsandboxed`` lets tools run unconfined, less than 1 GiB of free disk, no
model configured, OpenCode enabled but not installed (or not confinable), a recall reranker fitted
with other fusion settings than the configured ones, a systemd unit that is not installed or not
running. A check that does not
apply here (no ``systemctl``, web chat disabled) is skipped (``-``).

The checks reuse what the other commands compute: the one config loader, ``spacebot config
check``'s reference table, the LLM layer's own ``complete()`` and operator lines, the web chat's
port probe, and ``spacebotctl status``'s control socket. Platform tokens are asked of each
platform's cheapest authenticated call, at the instance's ``api_base`` when one is set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import msgspec

from spacebot.config import Config, PlatformInstance

Status = Literal["ok", "warn", "fail", "skip"]
MARKS: dict[Status, str] = {"ok": "✔", "warn": "!", "fail": "✘", "skip": "-"}
PYTHON = (3, 11)
"""The oldest Python that runs Spacebot (``requires-python``)."""
PACKAGES = ("spacebot", "pyzmq", "msgspec", "duckdb", "aiohttp", "openai", "anthropic", "cryptography")
"""The distributions whose versions are shown; a missing one fails."""
GIB, MIB = 1024**3, 1024**2
DISK_WARN, DISK_FAIL = 1 * GIB, 100 * MIB
"""Free space on the home's filesystem below which the disk check warns, and fails."""
GATEWAY = "gateway:webchat"
EXIT_OK, EXIT_FAILED = 0, 1


class Check(msgspec.Struct, frozen=True):
    """The outcome of one check."""

    name: str
    """What was checked."""
    status: Status
    """``ok``, ``warn`` (does not fail the run), ``fail`` or ``skip`` (does not apply here)."""
    detail: str
    """What was found."""
    fix: str = ""
    """One line: what to do about a warning or a failure."""


# -- checks that need no configuration -----------------------------------------------------------


def check_python() -> Iterator[Check]:
    """Python >= 3.11 and the versions of the key distributions."""
    found = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info >= PYTHON:
        yield Check("python", "ok", f"{found} ({sys.executable})")
    else:
        need = ".".join(map(str, PYTHON))
        yield Check("python", "fail", f"{found} ({sys.executable})", f"install Python {need} or newer")
    have, missing = [], []
    for name in PACKAGES:
        try:
            have.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            missing.append(name)
    if missing:
        fix = f"pip install {' '.join(missing)} (or reinstall spacebot with its dependencies)"
        yield Check("packages", "fail", "missing: " + ", ".join(missing), fix)
    else:
        yield Check("packages", "ok", ", ".join(have))


def check_config(args: argparse.Namespace) -> tuple[Check, Config | None]:
    """The configuration parses, as every command loads it (``--home``, ``--config``, environment)."""
    from spacebot import config as config_mod
    from spacebot.cli.main import _apply_globals
    from spacebot.errors import ConfigError

    _apply_globals(args)
    path, named_by = config_mod.locate(getattr(args, "config", None), os.environ)
    try:
        cfg = config_mod.load(path, named_by=named_by)
    except ConfigError as exc:
        detail = "; ".join(str(exc).splitlines())
        return Check(
            "config", "fail", detail, f"fix {path} (spacebot config check lists every problem)"
        ), None
    return Check("config", "ok", cfg.source or f"no file at {path}: defaults and environment"), cfg


# -- checks of a loaded configuration ------------------------------------------------------------


def check_references(cfg: Config) -> Iterator[Check]:
    """Every ``env:``/``cred:``/``secret:`` reference resolves (``spacebot config check``'s table)."""
    from spacebot.cli.check import reference_rows

    rows, _warnings = reference_rows(cfg, os.environ)
    for key, reference, status in rows:
        resolves, _, how = status.partition(": ")
        name = f"{key} = {reference}" if key != "delegates.secrets" else f"{key} {reference}"
        if resolves == "resolves":
            yield Check(name, "ok", how)
        else:
            yield Check(name, "fail", how, _reference_fix(reference))


def _reference_fix(reference: str) -> str:
    scheme, sep, name = reference.partition(":")
    if sep and scheme == "env":
        return f"set {name} in Spacebot's environment, or give the systemd credential {name.lower()!r}"
    if sep and scheme == "cred":
        return f"add LoadCredential={name}:<file> to the unit (or SetCredentialEncrypted=)"
    if sep and scheme == "secret":
        return f"spacebot secrets set {name} (with the master key this environment gives)"
    return f"spacebot secrets set {reference} --category tool"


def check_models(cfg: Config, timeout: float) -> list[Check]:
    """Each model of the active profile (and its fallbacks) answers a one-token request."""
    from spacebot.agent.defaults import NO_MODEL_HINT
    from spacebot.llm.errors import LLMConfigError
    from spacebot.llm.routing import Router

    try:
        router = Router(cfg.llm)
    except LLMConfigError as exc:
        return [Check("models", "warn", str(exc), NO_MODEL_HINT)]
    models: dict[str, None] = {}
    for tier in cfg.llm.profiles[router.profile]:
        models.update(dict.fromkeys(router.chain_for(router.model_for_tier(tier))))
    return asyncio.run(_ask_models(cfg, list(models), timeout))


async def _ask_models(cfg: Config, models: list[str], timeout: float) -> list[Check]:
    from spacebot.llm.client import LLM
    from spacebot.llm.config import Timeouts
    from spacebot.llm.errors import AllModelsFailed, LLMConfigError, model_failure
    from spacebot.llm.types import Request, UserMessage

    # One attempt per model and no fallbacks: each line speaks of one model, and the whole check
    # takes at most ``timeout`` since the models are asked at once.
    llm_cfg = msgspec.structs.replace(
        cfg.llm,
        fallbacks={},
        retry=msgspec.structs.replace(cfg.llm.retry, attempts_per_model=1),
        timeouts=Timeouts(connect=timeout, first_token=timeout, total=timeout),
    )
    llm = LLM(llm_cfg, secret_resolver=_secret_resolver(Path(cfg.home)))

    def url(model: str) -> str:
        provider = model.partition("/")[0]
        try:
            return llm.provider(provider).base_url or "-"
        except LLMConfigError:
            return cfg.llm.providers[provider].base_url or "-"

    async def ask(model: str) -> Check:
        request = Request([UserMessage("Reply with one word: ok")], max_tokens=1, model=model)
        try:
            async with asyncio.timeout(timeout):
                await llm.complete(request, process="doctor")
        except Exception as exc:  # every failure is reported on the model's line
            if isinstance(exc, AllModelsFailed) and len(exc.errors) == 1:
                exc = exc.errors[0][1]
            failure = model_failure(exc)
            line = failure.operator_line() if failure is not None else f"{type(exc).__name__}: {exc}"
            tried = url(model)
            detail = line if tried in line else f"tried {tried}: {line}"
            return Check(f"model {model}", "fail", detail, _model_fix(failure))
        return Check(f"model {model}", "ok", f"answered at {url(model)}")

    try:
        return list(await asyncio.gather(*(ask(m) for m in models)))
    finally:
        await llm.aclose()


def _model_fix(failure: Exception | None) -> str:
    hint = getattr(failure, "operator_hint", "")
    return hint or "check the model's [llm.providers] entry in config.toml and that its server runs"


def _secret_resolver(home: Path) -> Callable[[str], str]:
    """``secret:NAME`` api keys from the store, opened read-only as ``spacebot run`` would open it."""
    from spacebot.llm.errors import LLMConfigError
    from spacebot.secrets import SecretsError, SecretStore

    def resolve(name: str) -> str:
        try:
            value = SecretStore.open(home, os.environ).get(name)
        except SecretsError as exc:
            raise LLMConfigError(f"secret {name!r}: the secrets store does not open: {exc}") from None
        if value is None:
            raise LLMConfigError(f"secret {name!r} is not in the secrets store of {home}")
        return value

    return resolve


DISCORD_API = "https://discord.com/api/v10"
SLACK_API = "https://slack.com/api/"
TWITCH_ID = "https://id.twitch.tv"
"""The platforms' own bases (an instance's ``api_base`` replaces them, as it does for its gateway)."""


def check_platforms(cfg: Config, timeout: float) -> list[Check]:
    """Each enabled platform instance's token is accepted, where the platform has a cheap check:
    Discord ``GET /users/@me``, Slack ``auth.test`` (bot token) and ``apps.connections.open``
    (app-level token), Twitch ``/oauth2/validate``."""
    instances = [(p, i) for p, i in cfg.messaging.instances() if p != "webhook"]
    if not instances:
        return []
    return asyncio.run(_check_platforms(cfg, instances, timeout))


async def _check_platforms(cfg: Config, instances: list[tuple[str, Any]], timeout: float) -> list[Check]:
    import aiohttp

    resolve = _credential_resolver(Path(cfg.home))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        checks = [_platform_token(http, p, i, resolve) for p, i in instances]
        checks += [_slack_app_token(http, i, resolve) for p, i in instances if p == "slack"]
        return list(await asyncio.gather(*checks))


async def _answer(request: Any, url: str, name: str) -> tuple[int, dict[str, Any]] | Check:
    """A token check's HTTP answer: its status and JSON object (empty when it has none), or the
    failed :class:`Check` when ``url`` did not answer."""
    import aiohttp

    try:
        async with request as response:
            status = response.status
            body = await response.json(content_type=None) if status < 500 else {}
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        detail = f"{url} did not answer: {type(exc).__name__}: {exc}"
        return Check(name, "fail", detail, "check the network (or api_base) and try again")
    return status, body if isinstance(body, dict) else {}


async def _slack_app_token(http: Any, inst: PlatformInstance, resolve: Callable[[str], str | None]) -> Check:
    """The app-level token opens Socket Mode: ``apps.connections.open`` is the call the gateway
    makes first (it hands out a one-use WebSocket URL, which is left unused here)."""

    name = f"slack {inst.name} app token"
    key = f"messaging.slack {inst.name!r}"
    token = resolve(inst.app_token)
    if not token:
        return Check(name, "skip", "app_token does not resolve (see its reference check above)")
    url = (inst.api_base or SLACK_API).rstrip("/") + "/apps.connections.open"
    fix = (
        f"create an app-level token with the connections:write scope (Basic Information → App-Level "
        f"Tokens; it starts xapp-), turn Socket Mode on, and set {key} app_token"
    )
    answer = await _answer(http.post(url, headers={"Authorization": f"Bearer {token}"}), url, name)
    if isinstance(answer, Check):
        return answer
    status, body = answer
    if status != 200:
        return Check(name, "fail", f"{url} answered {status}", "check api_base and Slack's status page")
    if not body.get("ok"):
        return Check(name, "fail", f"rejected by {url}: {body.get('error', 'unknown')}", fix)
    return Check(name, "ok", f"Socket Mode opens with it ({url})")


async def _platform_token(
    http: Any, platform: str, inst: PlatformInstance, resolve: Callable[[str], str | None]
) -> Check:

    name = f"{platform} {inst.name} token"
    key = f"messaging.{platform} {inst.name!r}"
    if platform == "telegram":
        return Check(
            name, "skip", "Telegram speaks MTProto: the bot token is checked when the gateway logs in"
        )
    field = "bot_token" if platform == "slack" else "token"
    token = resolve(getattr(inst, field))
    if not token:
        return Check(name, "skip", f"{field} does not resolve (see its reference check above)")
    if platform == "discord":
        url = (inst.api_base or DISCORD_API).rstrip("/") + "/users/@me"
        request = http.get(url, headers={"Authorization": f"Bot {token}"})
        fix = f"reset the bot's token in the Discord developer portal (Bot → Reset Token) and set {key} token"
    elif platform == "slack":
        url = (inst.api_base or SLACK_API).rstrip("/") + "/auth.test"
        request = http.post(url, headers={"Authorization": f"Bearer {token}"})
        fix = f"reinstall the Slack app and set {key} bot_token to its Bot User OAuth Token (xoxb-)"
    else:
        url = (inst.api_base or TWITCH_ID).rstrip("/") + "/oauth2/validate"
        request = http.get(url, headers={"Authorization": f"OAuth {token.removeprefix('oauth:')}"})
        fix = f"generate a new chat token for the bot account and set {key} token"
    answer = await _answer(request, url, name)
    if isinstance(answer, Check):
        return answer
    status, body = answer
    if platform == "slack" and status == 200 and not body.get("ok"):
        error = str(body.get("error", "unknown"))
        return Check(name, "fail", f"rejected by {url}: {error}", fix)
    if status in (401, 403):
        if platform == "twitch" and inst.refresh_token:
            detail = f"rejected by {url} ({status}); the gateway renews it with refresh_token at start"
            return Check(
                name, "warn", detail, f"check that {key} refresh_token, client_id, client_secret are current"
            )
        return Check(name, "fail", f"rejected by {url} ({status})", fix)
    if status != 200:
        return Check(
            name, "fail", f"{url} answered {status}", "check api_base and the platform's status page"
        )
    who = body.get("username") or body.get("user") or body.get("login") or "?"
    team = f" in {body['team']}" if platform == "slack" and body.get("team") else ""
    return Check(name, "ok", f"accepted as {who}{team} by {url}")


def _credential_resolver(home: Path) -> Callable[[str], str | None]:
    """A credential setting's value: ``env:NAME``, ``secret:NAME`` (the store, read-only) or the
    value as written; ``None`` when it does not resolve (its reference check says why)."""
    from spacebot.secrets import SecretsError, SecretStore

    def resolve(value: str) -> str | None:
        if value.startswith("env:"):
            return os.environ.get(value[4:]) or None
        if value.startswith("secret:"):
            try:
                return SecretStore.open(home, os.environ).get(value[7:])
            except SecretsError:
                return None
        return value or None

    return resolve


def check_webchat(cfg: Config) -> Check:
    """The web chat port is free, or Spacebot runs and its gateway holds it."""
    from spacebot.messaging.ports import in_use

    wc = cfg.webchat
    if not wc.enabled:
        return Check("web chat", "skip", "disabled ([webchat] enabled = false)")
    running = asyncio.run(_service_status(cfg))
    if running is not None:
        return running
    if not wc.port:
        return Check("web chat", "ok", f"{wc.host}: port 0, any free port is taken at start")
    problem = in_use(wc.host, wc.port)
    if problem is not None:
        where = cfg.source or "config.toml"
        fix = f"stop what holds port {wc.port}, or set [webchat] port in {where} (0 = any free port)"
        return Check("web chat", "fail", f"{wc.host}:{wc.port}: {problem}", fix)
    return Check("web chat", "ok", f"port {wc.port} on {wc.host} is free")


async def _service_status(cfg: Config) -> Check | None:
    """The web chat line when Spacebot answers on its control socket (``None``: it does not)."""
    from spacebot.ipc.control_client import ControlClient
    from spacebot.ipc.credentials import CredentialError
    from spacebot.ipc.messages import StatusReply, StatusRequest
    from spacebot.ipc.replies import BusError
    from spacebot.messaging.ports import listening_port
    from spacebot.paths import Endpoints, runtime_dir

    endpoints = Endpoints(runtime_dir(cfg))
    if not endpoints.ctl_path.exists():
        return None
    client = ControlClient(endpoints)
    try:
        reply = await client.call(StatusRequest(), returns=StatusReply, timeout=3.0)
    except (BusError, CredentialError, OSError):
        return None  # a socket left by a stopped run: nobody holds the port on its behalf
    finally:
        await client.close()
    service = f"Spacebot runs (supervisor pid {reply.supervisor_pid})"
    gateway = next((p for p in reply.processes if p.id == GATEWAY), None)
    if gateway is None or not gateway.pid:
        state = gateway.state.value if gateway is not None else "not started"
        fix = "spacebotctl status; the supervisor's log says why the gateway is down"
        return Check("web chat", "fail", f"{service}; {GATEWAY} is {state}", fix)
    port = listening_port(gateway.pid)
    where = f"listens on port {port}" if port else "runs (its port is not visible to this user)"
    return Check("web chat", "ok", f"{service}; {GATEWAY} (pid {gateway.pid}) {where}")


def check_directories(cfg: Config) -> Iterator[Check]:
    """The runtime dir and the home are ours and private; each agent's data dir is writable."""
    from spacebot.agent.identity import agent_dir
    from spacebot.paths import runtime_dir

    yield _private_dir("runtime dir", runtime_dir(cfg), "spacebot run creates it with mode 0700")
    home = Path(cfg.home)
    yield _private_dir("home", home, "spacebot init creates it")
    for agent in cfg.agents:
        data = agent_dir(home, agent) / "data"
        yield _writable(f"data dir of {agent}", data)


def _private_dir(name: str, path: Path, absent: str) -> Check:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return Check(name, "ok", f"{path} does not exist yet ({absent})")
    except OSError as exc:
        return Check(name, "fail", f"{path}: {exc.strerror or exc}", "run as the user Spacebot runs as")
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISDIR(st.st_mode):
        return Check(name, "fail", f"{path} is not a directory (a symlink or a file)", f"remove {path}")
    if st.st_uid != os.geteuid():
        fix = f"chown {os.geteuid()} {path}, or run as the user who owns it"
        return Check(name, "fail", f"{path} is owned by uid {st.st_uid}, not by us ({os.geteuid()})", fix)
    if mode & 0o022:
        return Check(name, "fail", f"{path} has mode {mode:04o}: others can write in it", f"chmod 700 {path}")
    if mode != 0o700:
        return Check(name, "warn", f"{path} has mode {mode:04o}: others can read it", f"chmod 700 {path}")
    return Check(name, "ok", f"{path} (0700, ours)")


def _writable(name: str, path: Path) -> Check:
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fix = f"make {existing} writable by uid {os.geteuid()}"
    if existing != path:
        if os.access(existing, os.W_OK | os.X_OK):
            return Check(name, "ok", f"{path} does not exist yet; {existing} lets us create it")
        return Check(name, "fail", f"{path} does not exist and {existing} is not writable", fix)
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return Check(name, "fail", f"cannot write in {path}: {exc.strerror or exc}", fix)
    return Check(name, "ok", f"{path} is writable")


def check_sandbox(cfg: Config) -> Check:
    """How tools run programs: Landlock confinement, or what happens without it."""
    from spacebot.tools.sandbox import isolated, summary

    line = summary(cfg.delegates)
    if isolated():
        return Check("sandbox", "ok", line)
    if cfg.delegates.allow_unsandboxed:
        return Check("sandbox", "warn", line, "run on a kernel with Landlock (Linux 5.13+) to confine tools")
    fix = "run on a kernel with Landlock (Linux 5.13+), or set [delegates] allow_unsandboxed = true"
    return Check("sandbox", "fail", line, fix)


def check_opencode(cfg: Config) -> Check:
    """The ``opencode`` worker type: switched off, not installed, or what runs and how confined."""
    from spacebot.tools import opencode
    from spacebot.tools.sandbox import isolated

    settings = cfg.tools.opencode
    if not settings.enabled:
        return Check("opencode", "skip", "switched off ([tools.opencode] enabled = false)")
    found = opencode.find_command(settings)
    if found is None:
        return Check(
            "opencode",
            "warn",
            f"{settings.command!r} is not installed: the opencode worker type is not offered",
            f"{opencode.INSTALL} (Node.js 20 or later first) to offer it",
        )
    try:
        said = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=20, check=False)
        lines = said.stdout.strip().splitlines() if said.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        lines = []
    where = f"OpenCode {lines[-1] if lines else '(version unknown)'} at {found}"
    if isolated():
        return Check("opencode", "ok", f"{where}; runs confined to the workspace, the model through a relay")
    if cfg.delegates.allow_unsandboxed:
        unconfined = f"{where}; runs unconfined (allow_unsandboxed)"
        return Check("opencode", "warn", unconfined, "run on a kernel with Landlock")
    return Check(
        "opencode",
        "warn",
        f"{where}; refused: files cannot be confined here",
        "run on a kernel with Landlock (Linux 5.13+), or set [delegates] allow_unsandboxed = true",
    )


def check_memory(cfg: Config) -> Check:
    """The memory engine's local models: the embedding model's file and recall's reranker."""
    from spacebot.memory import rerank
    from spacebot.memory.embedder import MODEL_PACKAGE, model_file
    from spacebot.memory.errors import MemoryStoreError

    mem = cfg.memory
    try:
        where = f"embeddings {model_file()}"
        if not mem.rerank:
            return Check("memory", "ok", f"{where}; recall reranker off ([memory] rerank = false)")
        model = rerank.model(mem.rerank_model)
    except MemoryStoreError as exc:
        return Check("memory", "fail", str(exc), f"pip install --force-reinstall {MODEL_PACKAGE} spacebot")
    which = mem.rerank_model or "the shipped model"
    fitted = model.meta.get("fitted_on", "unknown data")
    detail = f"{where}; recall reranker: {which} (fitted on {fitted})"
    differs = model.fusion_differs(rerank.fusion_settings(mem))
    if differs:
        return Check(
            "memory",
            "warn",
            f"{detail}, with other fusion settings than [memory] has ({', '.join(differs)})",
            "refit it (bench/locomo.py --write-reranker, then [memory] rerank_model) or set rerank = false",
        )
    return Check("memory", "ok", detail)


def check_disk(cfg: Config) -> Check:
    """Free space on the home's filesystem."""
    where = Path(cfg.home)
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    detail = f"{free / GIB:.1f} GiB free on the filesystem of {where}"
    fix = f"free space on the filesystem of {where}"
    if free < DISK_FAIL:
        return Check("disk", "fail", detail, fix)
    if free < DISK_WARN:
        return Check("disk", "warn", detail, fix)
    return Check("disk", "ok", detail)


def check_systemd() -> Check:
    """The ``spacebot`` unit: installed, enabled, active (skipped without systemctl or systemd)."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return Check("systemd", "skip", "systemctl not found")

    def ask(verb: str) -> tuple[int, str]:
        done = subprocess.run(
            [systemctl, verb, "spacebot"], capture_output=True, text=True, timeout=10, check=False
        )
        said = (done.stdout.strip() or done.stderr.strip()).splitlines()
        return done.returncode, said[0] if said else ""

    try:
        enabled_rc, enabled = ask("is-enabled")
        active_rc, active = ask("is-active")
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("systemd", "skip", f"systemctl did not answer: {exc}")
    if "No such file" in enabled or "not-found" in enabled:
        fix = "install the unit (see Running as a service in the README) to run Spacebot as a service"
        return Check("systemd", "warn", "spacebot.service is not installed", fix)
    if enabled_rc != 0 and not enabled.isalpha():
        return Check("systemd", "skip", f"systemctl: {enabled}")
    detail = f"spacebot.service is {enabled or 'unknown'} and {active or 'unknown'}"
    if enabled_rc == 0 and active_rc == 0:
        return Check("systemd", "ok", detail)
    return Check(
        "systemd", "warn", detail, "systemctl enable --now spacebot; journalctl -u spacebot says why"
    )


# -- the command ---------------------------------------------------------------------------------


def run_checks(args: argparse.Namespace) -> list[Check]:
    """Every check, in order; those that need the configuration are left out when it does not load."""
    results = list(check_python())
    config_check, cfg = check_config(args)
    results.append(config_check)
    if cfg is not None:
        results.extend(check_references(cfg))
        results.extend(check_models(cfg, args.timeout))
        results.extend(check_platforms(cfg, args.timeout))
        results.append(check_webchat(cfg))
        results.extend(check_directories(cfg))
        results.append(check_sandbox(cfg))
        results.append(check_opencode(cfg))
        results.append(check_memory(cfg))
        results.append(check_disk(cfg))
    results.append(check_systemd())
    return results


def doctor_handler(args: argparse.Namespace) -> int:
    """Run the checks and print them; exit 1 when one failed."""
    results = run_checks(args)
    failed = any(r.status == "fail" for r in results)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": msgspec.to_builtins(results)}, indent=2))
        return EXIT_FAILED if failed else EXIT_OK
    for r in results:
        print(f"{MARKS[r.status]} {r.name}: {r.detail}")
        if r.fix and r.status in ("warn", "fail"):
            print(f"    fix: {r.fix}")
    counts = {s: sum(r.status == s for r in results) for s in MARKS}
    print(
        f"\n{len(results)} checks: {counts['ok']} passed, {counts['warn']} warning(s), "
        f"{counts['fail']} failed, {counts['skip']} skipped"
    )
    return EXIT_FAILED if failed else EXIT_OK


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``doctor`` to the top-level ``spacebot`` parser."""
    p = subparsers.add_parser(
        "doctor",
        help="check that this install can work: packages, config, keys, models, ports, permissions",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--timeout",
        type=float,
        default=15.0,
        help="seconds each model may take to answer (they are asked at once; default 15)",
    )
    p.set_defaults(func=doctor_handler)
