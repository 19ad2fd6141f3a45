"""``gateway:<adapter>``: one messaging platform on one side, the bus on the other."""

from __future__ import annotations

from spacebot.runtime.child import ChildContext

ADAPTERS = {
    "webchat": "spacebot.messaging.webchat:run",
    "metrics": "spacebot.procs.metrics:serve",
    "api": "spacebot.procs.api:serve",
}
"""Adapter name → ``module:function`` taking the child context (``metrics`` faces Prometheus and
``api`` the operator, not a messaging platform, but both have the same shape: a listener on one
side, the bus on the other)."""


async def serve(ctx: ChildContext, adapter: str) -> None:
    """Entry point: run the named adapter until stopped."""
    from spacebot.runtime.child import resolve

    target = ADAPTERS.get(adapter)
    if target is None:
        raise ValueError(f"unknown gateway adapter {adapter!r} (known: {', '.join(ADAPTERS)})")
    await resolve(target)(ctx)


serve.manual_ready = True  # type: ignore[attr-defined]  # ready once the adapter is listening
