"""``web_search`` through ``TaskTools.call`` against the loopback fakes of Brave and SearXNG."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from spacebot import config as config_mod
from spacebot.config import WebSearchSettings
from spacebot.ipc.messages import Kind
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import Conversation, FakeToolCall, Rule
from spacebot.llm.types import ToolCall
from spacebot.secrets import SecretStore
from spacebot.supervisor.secrets_service import secret_uses
from spacebot.testing import ChatSystem
from spacebot.tools.fakes.search import FakeSearch, Hit
from spacebot.tools.sandbox import Limits
from spacebot.tools.task_tools import TaskTools
from spacebot.tools.web_search import WebSearch, connect, normalise_url

HITS = [
    Hit("Asyncio docs", "https://docs.python.org/3/library/asyncio.html", "Write concurrent code."),
    Hit("Asyncio docs again", "HTTPS://Docs.Python.org/3/library/asyncio.html/#top", "Same page."),
    Hit("Real Python", "https://realpython.com/async-io-python/", "A walkthrough &amp; examples."),
    Hit("PEP 3156", "https://peps.python.org/pep-3156/", "Asynchronous IO support rebooted."),
]


def _tools(tmp_path: Path, search: WebSearch | None) -> TaskTools:
    # No ToolSecrets: the tool's own text must not hold the token, with no scrubbing to hide it.
    return TaskTools(tmp_path, Limits(), lambda *_: None, web_search=search)


async def _call(tools: TaskTools, **args: Any) -> tuple[str, bool]:
    return await tools.call(ToolCall("c1", "web_search", args))


def _brave(fake: FakeSearch, token: str | None = None, **over: Any) -> WebSearch:
    settings = WebSearchSettings(provider="brave", api_key=token or fake.token, base_url=fake.url, **over)
    return WebSearch(settings, settings.api_key)


def _searxng(fake: FakeSearch) -> WebSearch:
    return WebSearch(WebSearchSettings(provider="searxng", base_url=fake.url))


async def test_brave_request_shape_and_deduplicated_numbered_results(tmp_path: Path) -> None:
    token = "brave-" + secrets.token_hex(8)
    async with FakeSearch(HITS, token=token) as fake:
        text, err = await _call(
            _tools(tmp_path, _brave(fake)), query="python asyncio", count=3, country="de",
            language="EN", freshness="week",
        )  # fmt: skip
    assert not err, text
    sent = fake.requests[-1]
    assert sent.path == "/res/v1/web/search"
    assert sent.query == {
        "q": "python asyncio",
        "count": "3",
        "country": "DE",
        "search_lang": "en",
        "freshness": "pw",
    }
    assert sent.headers["x-subscription-token"] == token
    assert sent.headers["accept"] == "application/json"
    # Brave returned 3 hits, one a duplicate of the first: 2 distinct, markup stripped.
    assert text == (
        "1. Asyncio docs — https://docs.python.org/3/library/asyncio.html\n"
        "   Write concurrent code. python asyncio\n"
        "2. Real Python — https://realpython.com/async-io-python/\n"
        "   A walkthrough & examples. python asyncio"
    )
    assert token not in text


async def test_searxng_request_shape_and_results_trimmed_to_count(tmp_path: Path) -> None:
    async with FakeSearch(HITS) as fake:
        tools = _tools(tmp_path, _searxng(fake))
        text, err = await _call(tools, query="pep", count=2, language="fr", country="ca", freshness="month")
        default, _ = await _call(tools, query="pep")
    assert not err, text
    assert fake.requests[0].path == "/search"
    assert fake.requests[0].query == {
        "q": "pep",
        "format": "json",
        "language": "fr-CA",
        "time_range": "month",
    }
    assert "x-subscription-token" not in fake.requests[0].headers
    lines = [line for line in text.splitlines() if line[0].isdigit()]
    assert lines == [
        "1. Asyncio docs — https://docs.python.org/3/library/asyncio.html",
        "2. Real Python — https://realpython.com/async-io-python/",
    ]
    # Default count 5; the 4 hits hold 3 distinct pages.
    assert [line.split(".")[0] for line in default.splitlines() if line[0].isdigit()] == ["1", "2", "3"]
    assert "PEP 3156 — https://peps.python.org/pep-3156/" in default


def test_normalised_urls() -> None:
    assert normalise_url("HTTPS://Example.ORG/a/b/#frag") == "https://example.org/a/b"
    assert normalise_url("https://example.org/a?x=1#y") == "https://example.org/a?x=1"
    assert normalise_url("https://example.org/A") != normalise_url("https://example.org/a")  # paths keep case


@pytest.mark.parametrize(("count", "why"), [(0, "must be >= 1, got 0"), (21, "must be <= 20, got 21")])
async def test_count_out_of_bounds_is_refused_before_any_request(
    tmp_path: Path, count: int, why: str
) -> None:
    async with FakeSearch(HITS) as fake:
        text, err = await _call(_tools(tmp_path, _brave(fake)), query="x", count=count)
    assert err and text == f"web_search: argument 'count' {why}"
    assert fake.requests == []


async def test_bad_freshness_and_empty_query_are_refused(tmp_path: Path) -> None:
    async with FakeSearch(HITS) as fake:
        tools = _tools(tmp_path, _brave(fake))
        fresh, err1 = await _call(tools, query="x", freshness="hour")
        empty, err2 = await _call(tools, query="")
    assert err1 and "argument 'freshness' must be one of 'day', 'week', 'month', 'year'" in fresh
    assert err2 and "argument 'query' must be 1 to 400 characters" in empty
    assert fake.requests == []


async def test_brave_errors_name_the_provider_never_the_key(tmp_path: Path) -> None:
    good, wrong = "good-" + secrets.token_hex(8), "wrong-" + secrets.token_hex(8)
    async with FakeSearch(HITS, token=good) as fake:
        rejected, err = await _call(_tools(tmp_path, _brave(fake, wrong)), query="x")
        assert err and rejected.startswith("web_search: Brave rejected the API key (HTTP 401")
        tools = _tools(tmp_path, _brave(fake, good))
        fake.fail(429, retry_after="30")
        limited, err429 = await _call(tools, query="x")
        fake.fail(429)
        limited_bare, _ = await _call(tools, query="x")
        fake.fail(500)
        broken, err500 = await _call(tools, query="x")
        fake.recover()
        fine, ok_err = await _call(tools, query="x")
    assert err429 and "Brave Search's request quota or rate limit is exhausted (HTTP 429" in limited
    assert limited.endswith("retry after 30 s")
    assert limited_bare.endswith("try again later") and "retry after" not in limited_bare
    assert err500 and "Brave Search had an internal error (HTTP 500" in broken
    assert not ok_err and fine.startswith("1. Asyncio docs")
    for text in (rejected, limited, limited_bare, broken, fine):
        assert good not in text and wrong not in text


async def test_searxng_without_json_format_says_how_to_enable_it(tmp_path: Path) -> None:
    async with FakeSearch(HITS, json_enabled=False) as fake:
        text, err = await _call(_tools(tmp_path, _searxng(fake)), query="x")
    assert err and "SearXNG refused the request (HTTP 403" in text
    assert "JSON format is disabled" in text and "settings.yml" in text


async def test_an_unanswered_search_times_out_with_a_clear_error(tmp_path: Path) -> None:
    async with FakeSearch(HITS) as fake:
        fake.hang()
        text, err = await _call(_tools(tmp_path, _brave(fake, timeout=0.2)), query="x")
    assert err and text.startswith(
        f"web_search: Brave Search at 127.0.0.1:{fake.port} did not answer within 0.2 s"
    )


async def test_an_unreachable_provider_is_named(tmp_path: Path) -> None:
    async with FakeSearch(HITS) as fake:
        search = _brave(fake)
    # The fake has stopped: nothing listens on its port any more.
    text, err = await _call(_tools(tmp_path, search), query="x")
    assert err and text.startswith(f"web_search: could not reach Brave Search at 127.0.0.1:{fake.port}")


def test_not_offered_without_a_provider(tmp_path: Path) -> None:
    assert "web_search" not in _tools(tmp_path, None).specs
    offered = _tools(tmp_path, WebSearch(WebSearchSettings(provider="searxng", base_url="http://x")))
    assert "web_search" in offered.specs


async def test_not_listed_and_refused_when_the_provider_is_empty(tmp_path: Path) -> None:
    ctx = SimpleNamespace(config=config_mod.from_dict({"home": str(tmp_path)}, {}))
    assert await connect(ctx) is None  # type: ignore[arg-type]
    text, err = await _call(_tools(tmp_path, None), query="x")
    assert err and text.startswith("unknown tool 'web_search' (tools: shell,")


async def test_env_key_is_resolved_and_a_missing_one_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "env-" + secrets.token_hex(8)
    async with FakeSearch(HITS, token=token) as fake:
        section = {"web_search": {"provider": "brave", "api_key": "env:WS_TEST_KEY", "base_url": fake.url}}
        ctx = SimpleNamespace(config=config_mod.from_dict({"home": str(tmp_path), "tools": section}, {}))
        monkeypatch.delenv("WS_TEST_KEY", raising=False)
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        missing = await connect(ctx)  # type: ignore[arg-type]
        assert missing is not None and missing.known == {}
        text, err = await _call(_tools(tmp_path, missing), query="x")
        assert err and "Brave Search is not usable: environment variable 'WS_TEST_KEY' is not set" in text
        monkeypatch.setenv("WS_TEST_KEY", token)
        search = await connect(ctx)  # type: ignore[arg-type]
        assert search is not None and search.known == {"tools.web_search.api_key": token}
        found, err = await _call(_tools(tmp_path, search), query="x")
    assert not err and found.startswith("1. Asyncio docs")
    assert fake.requests[-1].headers["x-subscription-token"] == token
    assert fake.requests and len(fake.requests) == 1  # the unusable tool never sent a request


def test_a_secret_key_is_a_system_secret_for_workers_only(tmp_path: Path) -> None:
    tools = {"web_search": {"provider": "brave", "api_key": "secret:BRAVE"}}
    cfg = config_mod.from_dict({"home": str(tmp_path), "tools": tools}, {})
    (use,) = secret_uses(cfg)["BRAVE"]
    assert (use.where, use.category, use.kinds) == (
        "tools.web_search.api_key",
        "system",
        frozenset({Kind.WORKER}),
    )
    off = config_mod.from_dict(
        {"home": str(tmp_path), "tools": {"web_search": {"api_key": "secret:BRAVE"}}}, {}
    )
    assert "BRAVE" not in secret_uses(off)  # no provider: nothing reads the key


# -- the whole service: a worker searches with a token from the secrets store -----------------------


class EchoLLM(FakeLLM):
    """The fake model, whose worker answers with the text of the last tool result."""

    async def _answer(self, request: Any, protocol: str, conv: Conversation, rule: Rule) -> Any:
        if rule.name == "echo" and conv.tool_results:
            rule = msgspec.structs.replace(rule, text="tool said: " + conv.tool_results[-1][1])
        return await super()._answer(request, protocol, conv, rule)


async def test_a_worker_searches_with_a_store_token_no_model_sees(short_tmp: Path) -> None:
    token = "brave-" + secrets.token_hex(12)
    master = bytes(range(32)).hex()
    worker = "You are a worker"
    async with FakeSearch(HITS, token=token) as search, EchoLLM() as fake:
        fake.add(
            user=r"\(new\) Ana: search",
            tool_calls=[
                FakeToolCall("spawn_worker", {"task": "search the web"}),
                FakeToolCall("reply", {"content": "On it."}),
            ],
        )
        fake.add(name="echo", system=worker, tool_result="web_search")
        fake.add(system=worker, tool_calls=[FakeToolCall("web_search", {"query": "asyncio", "count": 3})])
        fake.add(user=r"finished \(success\)", tool_calls=[FakeToolCall("reply", {"content": "{last_user}"})])
        tier = "fake/main"
        llm = {
            "providers": {"fake": {"kind": "openai_compatible", "base_url": fake.openai_url, "api_key": "k"}},
            "profiles": {"balanced": {"light": tier, "standard": tier, "strong": tier}},
        }
        tools = {"web_search": {"provider": "brave", "api_key": "secret:BRAVE_KEY", "base_url": search.url}}
        system = ChatSystem(short_tmp, fake, model=False, sections_extra={"llm": llm, "tools": tools})
        system.sup.env["SPACEBOT_MASTER_KEY"] = master
        store = SecretStore.open(system.sup.home, {"SPACEBOT_MASTER_KEY": master})
        store.set("BRAVE_KEY", token, "system")
        async with system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "search please")

            def quoted(f: dict[str, Any]) -> bool:
                return f["type"] == "message" and "tool said:" in f["message"].get("text", "")

            frame = await ana.wait_for(quoted, timeout=60.0)
        worker_requests = [r for r in fake.requests if worker in r.conversation.system]
    assert (
        "tool said: 1. Asyncio docs — https://docs.python.org/3/library/asyncio.html"
        in frame["message"]["text"]
    )
    # What the worker's model read: the whole list (the channel sees the worker's result in brief).
    assert worker_requests[-1].conversation.tool_results[-1] == (
        "web_search",
        "1. Asyncio docs — https://docs.python.org/3/library/asyncio.html\n"
        "   Write concurrent code. asyncio\n"
        "2. Real Python — https://realpython.com/async-io-python/\n"
        "   A walkthrough & examples. asyncio",
    )
    # The worker's model was offered the tool; the provider got the token, no model request did.
    offered = {t["function"]["name"] for t in worker_requests[0].body["tools"]}
    assert {"web_search", "shell", "file_read"} <= offered
    assert [r.headers["x-subscription-token"] for r in search.requests] == [token]
    assert token not in json.dumps([r.body for r in fake.requests])
