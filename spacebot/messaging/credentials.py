"""Settings that hold credentials: ``env:NAME``, ``secret:NAME`` or the value as written."""

from __future__ import annotations

import os

from spacebot import logs
from spacebot.errors import ConfigError
from spacebot.runtime.child import ChildContext


async def resolve(ctx: ChildContext, value: str, key: str) -> str:
    """A credential setting (``key``, named in errors): ``env:NAME`` from the environment,
    ``secret:NAME`` asked of the supervisor (the secrets store), anything else as written. The
    value is never written in a log line of this process (shown as ``***``)."""
    token = await _resolve(ctx, value, key)
    if token:
        logs.register_secret(token)
    return token


async def _resolve(ctx: ChildContext, value: str, key: str) -> str:
    if value.startswith("env:"):
        token = os.environ.get(value[4:], "")
        if not token:
            raise ConfigError(f"{key} names environment variable {value[4:]!r}, which is not set")
        return token
    if value.startswith("secret:"):
        from spacebot.supervisor.secrets_service import fetch

        name = value[len("secret:") :]
        values, refused = await fetch(ctx, [name])
        if name not in values:
            raise ConfigError(f"{key} names secret {name!r}: {refused.get(name, 'not received')}")
        return values[name]
    return value
