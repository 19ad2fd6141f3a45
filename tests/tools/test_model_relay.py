"""The model relay: a confined program reaches the provider with a token, and the provider gets the
real key. The real SDKs talk to the relay, the relay to the fake provider."""

from __future__ import annotations

import asyncio

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web

from spacebot.llm.fake import FakeLLM
from spacebot.testing import eventually
from spacebot.tools.model_relay import ModelRelay

pytestmark = pytest.mark.timeout(120)


async def test_openai_sdk_streams_through_the_relay_with_the_real_key_upstream() -> None:
    async with FakeLLM() as fake, ModelRelay(fake.openai_url, "sk-real", anthropic=False) as relay:
        fake.add(name="streamed", text="hello from the model")
        client = openai.AsyncOpenAI(base_url=relay.url, api_key=relay.token, max_retries=0)
        try:
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        finally:
            await client.close()
    assert text == "hello from the model"
    (seen,) = fake.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer sk-real"
    assert relay.relayed == 1


async def test_anthropic_sdk_gets_its_key_header_replaced() -> None:
    # The relay appends the path it is asked for to its upstream: here the Anthropic SDK adds
    # /v1/messages to the relay's URL (OpenCode's AI SDK has /v1 in the upstream and asks /messages).
    async with FakeLLM() as fake, ModelRelay(fake.url, "sk-ant-real", anthropic=True) as relay:
        fake.add(name="plain", text="fine")
        client = anthropic.AsyncAnthropic(base_url=relay.url, api_key=relay.token, max_retries=0)
        try:
            got = await client.messages.create(
                model="m", max_tokens=10, messages=[{"role": "user", "content": "q"}]
            )
        finally:
            await client.close()
    assert got.content[0].text == "fine"  # type: ignore[union-attr]
    (seen,) = fake.requests
    assert seen.headers["x-api-key"] == "sk-ant-real"
    assert relay.token not in str(seen.headers)


async def test_a_request_without_the_token_is_refused_and_never_forwarded() -> None:
    async with FakeLLM() as fake, ModelRelay(fake.openai_url, "sk-real", anthropic=False) as relay:
        for key in ("wrong-token", relay.token[:-1]):
            client = openai.AsyncOpenAI(base_url=relay.url, api_key=key, max_retries=0)
            question = [{"role": "user", "content": "q"}]
            try:
                with pytest.raises(openai.AuthenticationError, match="token is required"):
                    await client.chat.completions.create(model="m", messages=question)  # type: ignore[arg-type]
            finally:
                await client.close()
    assert fake.requests == [] and relay.relayed == 0


async def test_an_unreachable_provider_is_a_clear_502() -> None:
    async with FakeLLM() as fake:
        dead = fake.openai_url
    async with ModelRelay(dead, "sk-real", anthropic=False) as relay:
        client = openai.AsyncOpenAI(base_url=relay.url, api_key=relay.token, max_retries=0)
        try:
            with pytest.raises(openai.APIStatusError, match="unreachable") as info:
                await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
        finally:
            await client.close()
    assert info.value.status_code == 502


async def test_closing_ends_a_request_in_flight_at_once() -> None:
    """A worker that is cancelled while its model call hangs closes the relay without waiting for
    the provider."""
    async with FakeLLM() as fake:
        fake.fail(kind="hang", times=None)
        relay = ModelRelay(fake.openai_url, "sk-real", anthropic=False)
        await relay.start()
        client = openai.AsyncOpenAI(base_url=relay.url, api_key=relay.token, max_retries=0)
        question = [{"role": "user", "content": "q"}]
        call = asyncio.ensure_future(client.chat.completions.create(model="m", messages=question))  # type: ignore[arg-type]
        try:
            await eventually(lambda: fake.requests, what="the request reaching the provider")
            await relay.aclose()  # returns without the provider ever answering
            with pytest.raises(openai.APIError):
                await call
        finally:
            call.cancel()
            await client.close()
            await relay.aclose()


def test_only_http_base_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="not an http"):
        ModelRelay("file:///etc/passwd", None, anthropic=False)


async def test_only_model_calls_are_forwarded_and_never_out_of_the_base_path() -> None:
    """What else the key could do at the provider, or at another path of a gateway, is refused."""
    async with FakeLLM() as fake, ModelRelay(fake.openai_url, "sk-real", anthropic=False) as relay:
        auth = {"Authorization": f"Bearer {relay.token}"}
        async with aiohttp.ClientSession() as http:
            for method, path in (
                ("POST", "/files"),
                ("DELETE", "/models/m"),
                ("POST", "/fine_tuning/jobs"),
                ("POST", "/..%2f..%2fadmin%2fkeys"),
                ("POST", "/chat%2fcompletions"),
                ("GET", "/chat/completions"),
            ):
                async with http.request(method, relay.url + path, headers=auth, json={}) as resp:
                    assert resp.status == 403, (method, path)
                    assert "model calls only" in (await resp.json())["error"]["message"]
            async with http.get(relay.url + "/models", headers=auth) as resp:
                assert resp.status == 200
    assert [r.path for r in fake.requests] == []  # the model list is not a recorded model call


async def test_a_redirect_goes_back_to_the_program_and_the_key_stays_home() -> None:
    """A provider (or a gateway) answering 307 elsewhere: the relay does not follow it."""
    elsewhere: list[web.Request] = []

    async def moved(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{other_port}/steal")

    async def steal(request: web.Request) -> web.StreamResponse:
        elsewhere.append(request)
        return web.json_response({})

    apps = []
    for handler in (moved, steal):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        apps.append(runner)
    provider_port, other_port = (r.addresses[0][1] for r in apps)
    try:
        upstream = f"http://127.0.0.1:{provider_port}/v1"
        async with ModelRelay(upstream, "sk-ant", anthropic=True) as relay, aiohttp.ClientSession() as http:
            url, key = relay.url + "/messages", {"x-api-key": relay.token}
            async with http.post(url, headers=key, json={}, allow_redirects=False) as resp:
                assert resp.status == 307
    finally:
        for runner in apps:
            await runner.cleanup()
    assert elsewhere == []
