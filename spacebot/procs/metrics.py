"""``gateway:metrics``: the bus's events on one side, Prometheus's ``GET /metrics`` on the other.

Started by the supervisor with the other core processes when ``[metrics] enabled = true``
(through ``spacebot.procs.gateway``, adapter ``metrics``). It subscribes to every event topic
before it listens, feeds each event to a :class:`~spacebot.metrics.Aggregator`, and renders that
aggregator's own registry on each scrape. Why events and not the client library's multiprocess
mode: see :mod:`spacebot.metrics.aggregator`. What is measured, and what is not yet:
docs/metrics.md.

Its counters start at zero whenever it starts (with the service, or after a crash); Prometheus's
``rate()`` and ``increase()`` treat that as a counter reset.
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import generate_latest

from spacebot.ipc import ids
from spacebot.ipc.events import EventStream
from spacebot.ipc.messages import SUPERVISOR_ID, Notice, StatusReply, StatusRequest
from spacebot.ipc.replies import BusError
from spacebot.messaging import ports
from spacebot.metrics import Aggregator
from spacebot.runtime.child import ChildContext

log = logging.getLogger("spacebot.metrics")

METRICS_ID = ids.gateway("metrics")
"""Bus id of this process."""
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format, read by every Prometheus version (newer client libraries announce
``version=1.0.0``, which older servers refuse; our names need no escaping, so the body is the same)."""


def app(aggregator: Aggregator) -> web.Application:
    """The HTTP side: ``GET /metrics`` in the Prometheus text format, nothing else."""

    async def metrics(_request: web.Request) -> web.Response:
        # Rendered on the event loop, which alone touches the aggregator's state (a thread would
        # race its dicts). bench/metrics.py: ~6.5 ms for 1,000 conversations' worth of series,
        # once per scrape interval; events meanwhile wait in the socket's queue, none is lost.
        body = generate_latest(aggregator.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    application = web.Application()
    application.router.add_get("/metrics", metrics)
    return application


async def consume(stream: EventStream, aggregator: Aggregator) -> None:
    """Feed every event to ``aggregator`` until cancelled; a bad event is logged, not fatal."""
    failures = 0
    async for event in stream:
        try:
            aggregator.feed(event)
        except Exception:
            failures += 1
            if failures <= 10 or failures % 1000 == 0:  # one odd publisher must not flood the log
                log.exception("event not counted topic=%r failures=%d", event.topic, failures)


async def serve(ctx: ChildContext) -> None:
    """Entry point: subscribe, listen, count until stopped."""
    settings = ctx.config.metrics
    aggregator = Aggregator(ctx.config.agents)
    stream = await ctx.events()  # every topic, confirmed live before the first scrape is possible
    try:  # then the table as it stands: what changed before the subscription was not an event here
        status = await ctx.request(SUPERVISOR_ID, StatusRequest(), returns=StatusReply, timeout=10.0)
    except BusError as exc:
        log.warning("process gauge starts empty: the supervisor's status did not come (%s)", exc)
    else:
        aggregator.seed(status.processes)
    try:
        async with ports.serving(
            app(aggregator), settings.host, settings.port, what="metrics", section="metrics"
        ) as port:
            url = f"http://{settings.host}:{port}/metrics"
            log.info("metrics listening url=%s", url)
            ctx.publish(f"gateway.{METRICS_ID}.listening", Notice("listening", {"url": url, "port": port}))
            ctx.ready()
            await consume(stream, aggregator)
    finally:
        stream.close()
