"""How the web chat is set up: the token for non-loopback binds, and `spacebot run --fake-llm`."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from spacebot import config as config_mod
from spacebot.errors import ConfigError
from spacebot.messaging.webchat_client import ChatClient
from spacebot.testing import ChatSystem


def test_non_loopback_bind_needs_a_token() -> None:
    with pytest.raises(ConfigError, match=r"webchat.host.*requires webchat.token"):
        config_mod.from_dict({"webchat": {"host": "0.0.0.0"}}, {})
    assert config_mod.from_dict({"webchat": {"host": "0.0.0.0", "token": "t"}}, {}).webchat.token == "t"
    with pytest.raises(ConfigError, match=r"webchat\.agent"):
        config_mod.from_dict({"webchat": {"agent": "nobody"}}, {})


async def test_token_is_required_when_set(short_tmp: Path) -> None:
    async with ChatSystem(short_tmp, model=False, webchat={"token": "s3cret"}) as system:
        good = await system.client("Ana", token="s3cret")
        assert good.welcome["type"] == "welcome"
        bad = ChatClient(system.url, name="Eve", token="wrong", reconnect=False)
        with pytest.raises(ConnectionError, match="unauthorized"):
            await bad.connect()
        await bad.close()
        anonymous = ChatClient(system.url, name="Eve", reconnect=False)
        with pytest.raises(ConnectionError, match="unauthorized"):
            await anonymous.connect()
        closed = await anonymous.wait_for(lambda f: f["type"] == "closed")
        assert closed["code"] == 4401
        await anonymous.close()


async def test_cross_origin_sockets_are_refused_without_a_token(short_tmp: Path) -> None:
    async with ChatSystem(short_tmp, model=False) as system, aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await session.ws_connect(system.url + "/ws", headers={"Origin": "http://evil.example"})
        assert err.value.status == 403
        same = await session.ws_connect(system.url + "/ws", headers={"Origin": system.url})
        await same.close()
        health = await (await session.get(system.url + "/healthz")).json()
        assert health["ok"] is True and health["agent"] == "main"


async def test_run_with_the_bundled_fake_model(short_tmp: Path) -> None:
    async with ChatSystem(short_tmp, model=False, run_args=("--fake-llm",)) as system:
        ana = await system.client("Ana")
        assert ana.welcome["model"]["fake"] is True and ana.welcome["model"]["configured"] is True
        conv = await ana.create()
        await ana.open(conv)
        await ana.send(conv, "hello there")
        reply = await ana.wait_for(
            lambda f: f["type"] == "message" and f["message"]["role"] == "assistant", timeout=30
        )
        assert "(fake model)" in reply["message"]["text"] and "hello there" in reply["message"]["text"]
        assert any(f["type"] == "delta" for f in ana.frames)
        await ana.send(conv, "thanks!")
        reaction = await ana.wait_for(lambda f: f["type"] == "reaction", timeout=30)
        assert reaction["emoji"] == "👍"
