"""``spacebot fake-twitch`` in its own process: the adapter talks to it, the test drives it over
its ``/_fake/...`` HTTP API."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp

from spacebot.config import PlatformInstance
from spacebot.messaging.twitch_adapter import Renewal, TwitchAdapter
from tests.messaging.harness import Recorder
from tests.messaging.test_twitch_adapter import WAIT


async def test_the_cli_fake_serves_irc_tokens_and_a_test_api_until_sigterm(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "spacebot.cli.main",
        "fake-twitch",
        "--token",
        "cli-token",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(WAIT):
            line = (await proc.stdout.readline()).decode()
        gateway_url = line.split("gateway_url ")[1].split()[0]
        api = line.split("api_base ")[1].split()[0]
        inst = PlatformInstance(
            bot_name="spacebot",
            channels=["dev"],
            trigger_prefix="!ask",
            gateway_url=gateway_url,
            api_base=api,
        )
        # A stale token: the adapter renews it at the fake's token endpoint before it can log in.
        renewal = Renewal("fake-refresh-token", "fake-client-id", "fake-client-secret")
        adapter = TwitchAdapter(inst, "stale", renewal=renewal, token_file=tmp_path / "t.json")
        sink = Recorder()
        task = asyncio.get_running_loop().create_task(adapter.run(sink, lambda: None))
        async with aiohttp.ClientSession() as http:

            async def act(action: str, body: dict[str, object]) -> dict[str, object]:
                async with http.post(f"{api}/_fake/{action}", json=body) as resp:
                    assert resp.status == 200, await resp.text()
                    result: dict[str, object] = await resp.json()
                    return result

            counts = await act("wait", {"counter": "joins", "at_least": 1, "timeout": WAIT})
            assert (counts["refreshes"], counts["login_failures"], counts["logins"]) == (1, 1, 1)
            posted = await act("post", {"channel": "dev", "user": "ana", "text": "!ask hello"})
            await sink.wait_for(lambda: sink.messages)
            assert sink.messages[0].message_id == posted["id"] and sink.messages[0].text == "hello"
            await adapter.post("twitch:dev", "hi ana")
            await act("ping", {})
            await act("wait", {"counter": "pongs", "at_least": 1, "timeout": WAIT})
            async with http.get(f"{api}/_fake/state") as resp:
                state = await resp.json()
            assert [(s["text"], s["tags"]) for s in state["sent"]] == [
                ("hi ana", {"reply-parent-msg-id": posted["id"]})
            ]
            async with http.post(f"{api}/_fake/bogus", json={}) as resp:
                assert resp.status == 400 and "bogus" in (await resp.json())["error"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await adapter.close()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
