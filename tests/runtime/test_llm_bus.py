"""The LLM layer across real processes: a cooldown published by one is honoured by another."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from spacebot.ipc.bus import BusClient
from spacebot.ipc.messages import CooldownNotice, Echo, Ping, UsageReport
from spacebot.llm.fake import FakeLLM
from spacebot.testing import SupervisorProcess, fast_config

TK = "spacebot.procs.testkit"
WAIT = 60.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""


def _llm_table(fake: FakeLLM) -> str:
    return f"""
[llm]
profile = "balanced"
[llm.providers.oa]
kind = "openai_compatible"
base_url = {json.dumps(fake.openai_url)}
api_key = "k"
[llm.profiles.balanced]
light = "oa/main"
standard = "oa/main"
strong = "oa/main"
[llm.fallbacks]
"oa/main" = ["oa/backup"]
[llm.retry]
attempts_per_model = 2
base_delay = 0.0
max_delay = 0.5
cooldown = 600.0
"""


async def test_cooldown_is_shared_over_the_bus(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(text="hello from the fake")
        # A cooldown far longer than the test: it cannot run out between a's 429 and b's check.
        fake.fail(429, retry_after="600", times=100, model="^main$")
        # The probe builds its SDK client on its first call, which can hold its loop for most of
        # a second on a loaded machine: this test is about cooldowns, not liveness budgets.
        config = fast_config(worker={"heartbeat_miss_limit": 50}) + _llm_table(fake)
        sup = SupervisorProcess(short_tmp, config_text=config)
        await sup.start()
        client = BusClient("tester", sup.endpoints.bus)
        client.start()
        try:
            await client.request("supervisor", Ping())
            events = await client.subscribe("llm.")
            await sup.spawn(f"{TK}:llm_probe", id="worker:a")
            await sup.spawn(f"{TK}:llm_probe", id="worker:b")
            # A process joins the cooldown exchange in the background after it says it is ready:
            # a notice published before b listens would be lost to b. Wait until b has heard one
            # (for a model nobody uses) before a's 429 is published.
            probe = CooldownNotice("oa/probe", time.time() + 600, "probe")
            async with asyncio.timeout(WAIT):
                while True:
                    client.publish("llm.cooldown", probe)
                    if await client.request("worker:b", Echo(1, b"oa/probe")) > 0:
                        break
                    await asyncio.sleep(0.05)
            model, fallbacks = await client.request("worker:a", Echo(0, b"hi"), timeout=WAIT)
            assert model == "oa/backup" and "oa/main" in fallbacks
            assert (
                sum(1 for r in fake.requests if r.model == "main") == 1
            )  # Retry-After 30 > max_delay: no retry
            notice = await events.wait_for(
                lambda e: isinstance(e.body, CooldownNotice) and e.src != "tester", timeout=WAIT
            )
            assert notice.src == "worker:a"
            assert isinstance(notice.body, CooldownNotice) and notice.body.model == "oa/main"
            usage = await events.wait_for(lambda e: isinstance(e.body, UsageReport), timeout=WAIT)
            assert usage.topic == "llm.usage.worker:a"
            assert isinstance(usage.body, UsageReport) and usage.body.model == "oa/backup"
            # worker:b heard the notice on the bus: it skips oa/main without asking the server.
            async with asyncio.timeout(WAIT):
                # b applies the notice on its own loop; ask until it has.
                while await client.request("worker:b", Echo(1, b"oa/main")) <= 0:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            model, _ = await client.request("worker:b", Echo(0, b"hi again"), timeout=WAIT)
            assert model == "oa/backup"
            assert sum(1 for r in fake.requests if r.model == "main") == 1
            events.close()
        finally:
            await client.close()
            await sup.stop()
