"""``LLMConfig``: providers, models, prices, profiles, routing levels, retries and timeouts.

Embedded as ``Config.llm`` and converted from TOML dicts with ``msgspec.convert``; cross-field
checks run in ``__post_init__`` (all of them, raised together as :class:`FieldProblems`) so a bad
reference fails at load time with the key named.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import msgspec

from spacebot.llm.errors import LLMConfigError

TIERS = ("light", "standard", "strong")
PROCESS_TYPES = ("channel", "branch", "worker", "compactor", "cortex", "ingest")

SecretResolver = Callable[[str], str | None]

KEY_ENV_VARS = ("SPACEBOT_LLM_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY")
"""Variables the zero-config setup reads; each may also come as a lower-case systemd credential."""

Key = tuple[str, ...]
"""A config key as its path of TOML names, e.g. ``("llm", "fallbacks", "openai/gpt-4.1")``."""

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dotted_key(key: Key) -> str:
    """``key`` written as TOML writes it: names joined by dots, quoted unless bare (``llm.models."a/b"``)."""
    return ".".join(part if _BARE_KEY.fullmatch(part) else json.dumps(part) for part in key)


class FieldProblems(ValueError):
    """Every cross-field problem a config struct's ``__post_init__`` found, each with its key.

    msgspec turns it into a ``ValidationError`` whose ``__cause__`` it stays, so the loader can report
    each problem at its own key and line instead of one message for the whole table.
    """

    def __init__(self, problems: list[tuple[Key, str]]) -> None:
        self.problems = problems
        """(key relative to the struct, message) pairs."""
        super().__init__("; ".join(f"{dotted_key(key)}: {message}" for key, message in problems))


def _valid_credential_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def credential_path(name: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """Where systemd's ``LoadCredential=`` put credential ``name``; None outside such a service.

    Raises ``LLMConfigError`` for a name that could escape the directory.
    """
    if not _valid_credential_name(name):
        raise LLMConfigError(f"invalid credential name {name!r} (a file name inside $CREDENTIALS_DIRECTORY)")
    env = os.environ if environ is None else environ
    directory = env.get("CREDENTIALS_DIRECTORY", "")
    return Path(directory) / name if directory else None


def read_credential(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The credential's value with trailing whitespace stripped, or None when there is none."""
    path = credential_path(name, environ)
    if path is None:
        return None
    try:
        value = path.read_text(encoding="utf-8").rstrip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise LLMConfigError(f"credential {name!r}: cannot read {str(path)!r}: {exc}") from None
    return value or None


def key_from_env(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Variable ``name`` from the environment, else the credential ``name.lower()``."""
    env = os.environ if environ is None else environ
    if env.get(name):
        return env[name]
    return read_credential(name.lower(), env) if _valid_credential_name(name.lower()) else None


def credentials_configure_llm(environ: Mapping[str, str] | None = None) -> bool:
    """True when a provider key of the zero-config setup is present as a systemd credential."""
    return any(read_credential(name.lower(), environ) for name in KEY_ENV_VARS[1:])


def _missing_credential(name: str, environ: Mapping[str, str] | None = None) -> str:
    path = credential_path(name, environ)
    if path is None:
        return f"no credential {name!r} ($CREDENTIALS_DIRECTORY is not set: add LoadCredential={name}:<file>)"
    return f"no credential file {str(path)!r} (missing or empty)"


class ProviderConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One provider endpoint."""

    kind: Literal["anthropic", "openai", "openai_compatible"]
    """Wire protocol / SDK to use."""
    base_url: str | None = None
    """Endpoint; None uses the SDK default (required for ``openai_compatible``)."""
    api_key: str = ""
    """Literal key, ``env:NAME``, ``cred:NAME`` or ``secret:NAME``; empty means none (local servers).

    ``env:NAME`` falls back to the systemd credential named ``name`` in lower case;
    ``cred:NAME`` reads ``$CREDENTIALS_DIRECTORY/NAME`` only."""


class ModelConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Facts about one model; prices are US dollars per million tokens (None: built-in default)."""

    context_window: int = 128_000
    """Maximum prompt + output tokens."""
    input_price: float | None = None
    """Price per million uncached input tokens."""
    output_price: float | None = None
    """Price per million output tokens."""
    cached_price: float | None = None
    """Price per million cached input tokens."""


class ScorerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Thresholds of the prompt-complexity scorer (see ``scorer.py``)."""

    enabled: bool = True
    """When False the scorer never changes the tier."""
    simple_below: float = 0.25
    """A score under this steps a process's default tier down one (never a tier a task asks for)."""
    max_simple_chars: int = 400
    """Prompts longer than this are never treated as simple."""


class RetryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per-model retries and cooldowns."""

    attempts_per_model: int = 2
    """Tries on one model (1 = no retry) before moving to the next."""
    base_delay: float = 0.5
    """First back-off delay in seconds; doubles each retry, with full jitter."""
    max_delay: float = 8.0
    """Cap of one back-off delay (also caps how long a Retry-After is waited in place)."""
    cooldown: float = 30.0
    """Cooldown of a rate-limited model when the provider gave no Retry-After."""
    max_cooldown: float = 600.0
    """Upper bound of any cooldown."""


class Timeouts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per-call deadlines in seconds."""

    connect: float = 10.0
    """TCP/TLS connect."""
    first_token: float = 60.0
    """From sending the request to the first stream event."""
    total: float = 600.0
    """Whole call."""


def _default_process_tiers() -> dict[str, str]:
    return {
        "channel": "standard",
        "branch": "standard",
        "worker": "standard",
        "compactor": "light",
        "cortex": "light",
        "ingest": "light",
    }


def _default_task_tiers() -> dict[str, str]:
    return {"coding": "strong", "research": "strong", "summarize": "light", "extract": "light"}


class LLMConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole LLM layer configuration."""

    providers: dict[str, ProviderConfig] = {}
    """Provider name → endpoint."""
    models: dict[str, ModelConfig] = {}
    """Model id ``provider/model`` → facts and prices (unlisted models get defaults)."""
    profiles: dict[str, dict[str, str]] = {}
    """Profile name (eco, balanced, premium) → tier → model id."""
    profile: str = "balanced"
    """Active profile of this agent."""
    process_tiers: dict[str, str] = msgspec.field(default_factory=_default_process_tiers)
    """Level (a): process type → tier."""
    task_tiers: dict[str, str] = msgspec.field(default_factory=_default_task_tiers)
    """Level (b): task type → tier, overriding the process default."""
    scorer: ScorerConfig = ScorerConfig()
    """Level (c): prompt-complexity scorer."""
    fallbacks: dict[str, list[str]] = {}
    """Level (d): model id → models to try after it, in order."""
    retry: RetryPolicy = RetryPolicy()
    """Retries and cooldowns."""
    timeouts: Timeouts = Timeouts()
    """Per-call deadlines."""

    def __post_init__(self) -> None:
        found: list[tuple[Key, str]] = []
        for pname, prov in self.providers.items():
            if prov.kind == "openai_compatible" and not prov.base_url:
                found.append((("providers", pname, "base_url"), "kind 'openai_compatible' needs base_url"))
        for name, tiers in self.profiles.items():
            for tier, model in tiers.items():
                if tier not in TIERS:
                    found.append(
                        (("profiles", name, tier), f"unknown tier {tier!r} (expected one of {TIERS})")
                    )
                self._check_model(model, ("profiles", name, tier), found)
        if self.profiles and self.profile not in self.profiles:
            found.append((("profile",), f"unknown profile {self.profile!r} (have {sorted(self.profiles)})"))
        for section, table in (("process_tiers", self.process_tiers), ("task_tiers", self.task_tiers)):
            for name, tier in table.items():
                if tier not in TIERS:
                    found.append(((section, name), f"unknown tier {tier!r} (expected one of {TIERS})"))
        for model, chain in self.fallbacks.items():
            self._check_model(model, ("fallbacks", model), found)
            for other in chain:
                self._check_model(other, ("fallbacks", model), found)
        for model in self.models:
            self._check_model(model, ("models", model), found)
        if self.retry.attempts_per_model < 1:
            found.append((("retry", "attempts_per_model"), "must be >= 1"))
        if found:
            raise FieldProblems(found)

    def _check_model(self, model_id: str, key: Key, found: list[tuple[Key, str]]) -> None:
        provider, sep, name = model_id.partition("/")
        if not sep or not provider or not name:
            found.append((key, f"invalid model id {model_id!r} (expected 'provider/model')"))
        elif self.providers and provider not in self.providers:
            found.append(
                (
                    key,
                    f"model {model_id!r} names unknown provider {provider!r} (have {sorted(self.providers)})",
                )
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> LLMConfig:
        """Convert a plain dict (the ``[llm]`` TOML table); raise ``LLMConfigError`` naming the key."""
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            if isinstance(exc.__cause__, FieldProblems):
                found = "; ".join(f"{dotted_key(('llm', *k))}: {m}" for k, m in exc.__cause__.problems)
                raise LLMConfigError(f"invalid llm config: {found}") from exc
            # msgspec writes dict keys as ``[...]``; re-check keyed sections to name the entry.
            for section, kind in (("providers", ProviderConfig), ("models", ModelConfig)):
                entries = data.get(section)
                for key, value in entries.items() if isinstance(entries, dict) else ():
                    try:
                        msgspec.convert(value, kind)
                    except msgspec.ValidationError as inner:
                        where = str(inner).replace("`$", f"`llm.{section}.{key}")
                        raise LLMConfigError(f"invalid llm config: {where}") from exc
            raise LLMConfigError(f"invalid llm config: {str(exc).replace('`$', '`llm')}") from exc

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LLMConfig:
        """A zero-config setup from the environment.

        Uses ``SPACEBOT_LLM_BASE_URL`` + ``SPACEBOT_LLM_MODEL`` (+ ``SPACEBOT_LLM_API_KEY``) for an
        OpenAI-compatible server, else ``ANTHROPIC_API_KEY``, else ``OPENAI_API_KEY``. Each key may
        instead be a systemd credential of the same name in lower case (``anthropic_api_key``...).
        """
        env = os.environ if environ is None else environ

        def has(name: str) -> bool:
            return bool(key_from_env(name, env))

        providers: dict[str, ProviderConfig] = {}
        tiers: dict[str, str] = {}
        if env.get("SPACEBOT_LLM_BASE_URL"):
            model = env.get("SPACEBOT_LLM_MODEL", "")
            if not model:
                raise LLMConfigError("SPACEBOT_LLM_BASE_URL is set but SPACEBOT_LLM_MODEL is not")
            key = "env:SPACEBOT_LLM_API_KEY" if has("SPACEBOT_LLM_API_KEY") else ""
            providers["local"] = ProviderConfig("openai_compatible", env["SPACEBOT_LLM_BASE_URL"], key)
            tiers = {t: f"local/{model}" for t in TIERS}
        elif has("ANTHROPIC_API_KEY"):
            providers["anthropic"] = ProviderConfig("anthropic", None, "env:ANTHROPIC_API_KEY")
            tiers = {
                "light": "anthropic/claude-haiku-4-5",
                "standard": "anthropic/claude-sonnet-4-5",
                "strong": "anthropic/claude-opus-4-1",
            }
        elif has("OPENAI_API_KEY"):
            providers["openai"] = ProviderConfig("openai", None, "env:OPENAI_API_KEY")
            tiers = {"light": "openai/gpt-4o-mini", "standard": "openai/gpt-4o", "strong": "openai/gpt-4.1"}
        else:
            raise LLMConfigError(
                "no LLM configured: set [llm] in config.toml, or ANTHROPIC_API_KEY, or OPENAI_API_KEY "
                "(or their lower-case systemd credentials), or SPACEBOT_LLM_BASE_URL and SPACEBOT_LLM_MODEL"
            )
        profiles = {
            "eco": {"light": tiers["light"], "standard": tiers["light"], "strong": tiers["standard"]},
            "balanced": dict(tiers),
            "premium": {"light": tiers["standard"], "standard": tiers["strong"], "strong": tiers["strong"]},
        }
        # A rate-limited or failing tier falls back to the next lighter one.
        fallbacks: dict[str, list[str]] = {}
        for upper, lower in (("strong", "standard"), ("standard", "light")):
            if tiers[upper] != tiers[lower]:
                fallbacks[tiers[upper]] = [tiers[lower]]
        return cls(providers=providers, profiles=profiles, fallbacks=fallbacks)

    def resolve_key(self, provider: str, resolver: SecretResolver | None = None) -> str:
        """The provider's API key, ``env:``/``cred:``/``secret:`` resolved; raise naming what is missing.
        Whatever it returns is never written in a log line of this process (shown as ``***``)."""
        from spacebot.logs import register_secret

        key = self._resolve_key(provider, resolver)
        if key:
            register_secret(key)
        return key

    def _resolve_key(self, provider: str, resolver: SecretResolver | None) -> str:
        if provider not in self.providers:
            raise LLMConfigError(f"unknown provider {provider!r} (have {sorted(self.providers)})")
        raw = self.providers[provider].api_key
        if raw.startswith("env:"):
            name = raw[4:]
            value = key_from_env(name)
            if not value:
                raise LLMConfigError(
                    f"provider {provider!r}: environment variable {name!r} is not set and there is "
                    + _missing_credential(name.lower())
                )
            return value
        if raw.startswith("cred:"):
            name = raw[5:]
            value = read_credential(name)
            if not value:
                raise LLMConfigError(f"provider {provider!r}: " + _missing_credential(name))
            return value
        if raw.startswith("secret:"):
            name = raw[7:]
            value = resolver(name) if resolver is not None else None
            if not value:
                raise LLMConfigError(f"provider {provider!r}: secret {name!r} could not be resolved")
            return value
        return raw


SecretStatus = Callable[[str], tuple[bool, str]]
"""Whether the secrets store holds secret ``NAME`` (usable as a key), and a sentence saying so."""


def reference_status(
    raw: str, environ: Mapping[str, str] | None = None, secret_status: SecretStatus | None = None
) -> tuple[bool, str]:
    """Whether an ``api_key`` value resolves in this environment, and from where; never the key itself.

    Returns ``(True, how)`` or ``(False, what is missing)``, with the same rules as
    :meth:`LLMConfig.resolve_key`. ``secret:NAME`` is answered by ``secret_status`` (``spacebot
    config check`` passes one over the store, which ``spacebot run``'s supervisor serves to the
    processes); without it the reference is reported as not checked.
    """
    env = os.environ if environ is None else environ
    scheme, sep, name = raw.partition(":")
    try:
        if sep and scheme == "env":
            if env.get(name):
                return True, f"environment variable {name}"
            path = credential_path(name.lower(), env) if _valid_credential_name(name.lower()) else None
            if read_credential(name.lower(), env) and path is not None:
                return True, f"credential file {str(path)!r}"
            return False, f"environment variable {name!r} is not set and there is " + _missing_credential(
                name.lower(), env
            )
        if sep and scheme == "cred":
            if read_credential(name, env):
                return True, f"credential file {str(credential_path(name, env))!r}"
            return False, _missing_credential(name, env)
    except LLMConfigError as exc:
        return False, str(exc)
    if sep and scheme == "secret":
        if secret_status is None:
            return False, f"secret {name!r} not checked (no secrets store given)"
        return secret_status(name)
    return (True, "literal key in the config file") if raw else (True, "none needed (a local server)")
