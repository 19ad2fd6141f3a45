"""A model server that is down, slow or refusing: what the person hears and what the operator reads.

The person gets one plain sentence (no URL, model id or exception name); the operator's log gets
one line naming the model, the base URL and a hint, without a traceback.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from spacebot.llm import LLM, AllModelsFailed, AuthError, Request, Timeouts, UserMessage
from spacebot.llm.config import LLMConfig
from spacebot.llm.errors import (
    BUSY,
    NOT_SET_UP,
    SLOW,
    UNREACHABLE,
    ConnectError,
    LLMError,
    ModelNotFound,
    RateLimited,
    ServerError,
    Timeout,
    model_failure,
)
from spacebot.llm.fake import FakeLLM
from spacebot.testing import ChatSystem, eventually

from .conftest import make_config

REQ = Request([UserMessage("please explain why the deploy failed and compare both designs")])
INTERNALS = ("http", "127.0.0.1", "Error", "local/", "model=", "hint")


def dead_port() -> int:
    """A loopback port that nothing listens on: bound to learn a free number, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_model(base_url: str) -> LLMConfig:
    return LLMConfig.from_dict(
        {
            "providers": {"local": {"kind": "openai_compatible", "base_url": base_url, "api_key": "k"}},
            "profiles": {
                "balanced": {"light": "local/fake", "standard": "local/fake", "strong": "local/fake"}
            },
            "retry": {"attempts_per_model": 2, "base_delay": 0.0, "max_delay": 0.01},
        }
    )


def assert_plain(sentence: str) -> None:
    assert sentence.endswith(".") and ". " not in sentence and "\n" not in sentence  # one sentence
    assert not any(word in sentence for word in INTERNALS), sentence


async def test_connection_refused_gives_a_plain_sentence_and_one_hinted_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{dead_port()}/v1"
    llm = LLM(one_model(url))
    caplog.set_level(logging.DEBUG, logger="spacebot")
    with pytest.raises(AllModelsFailed) as info:
        await llm.complete(REQ, process="channel")
    await llm.aclose()
    err = info.value
    ((model, cause),) = err.errors
    assert model == "local/fake" and isinstance(cause, ConnectError)
    assert cause.base_url == url and cause.model == "local/fake"
    assert "connection refused" in str(cause)  # the socket's reason, not the SDK's "Connection error."
    assert err.person_message == UNREACHABLE
    assert_plain(err.person_message)
    assert err.expected
    line = err.operator_line()
    assert f"model=local/fake url={url} " in line
    assert f"hint: is the model server at {url} running?" in line
    # What the layer itself logged: the final failure once (as a detail, the caller reports it),
    # with the URL and the hint; nothing carries a traceback.
    lines = [r for r in caplog.records if "llm fallback" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.INFO]
    assert url in lines[0].getMessage() and "running?" in lines[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info], "an expected failure must not log a traceback"
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    ("base_url", "hint"),
    [
        ("http://127.0.0.1:11434/v1", "is Ollama running at http://127.0.0.1:11434?"),
        ("http://localhost:1234/v1", "is LM Studio running at http://localhost:1234?"),
        ("http://127.0.0.1:8000/v1", "is the model server at http://127.0.0.1:8000/v1 running?"),
        ("https://models.example/v1", "is the model server at https://models.example/v1 running, and can"),
    ],
)
def test_connect_hint_names_well_known_local_servers(base_url: str, hint: str) -> None:
    err = ConnectError("cannot connect", model="local/m", base_url=base_url)
    assert err.operator_hint.startswith(hint)


def test_each_failure_speaks_to_both_audiences() -> None:
    url = "http://127.0.0.1:11434/v1"
    cases: list[tuple[LLMError, str, str]] = [
        (Timeout("first token timeout", model="l/m", base_url=url), SLOW, "did not answer in time"),
        (ServerError("HTTP 503", model="l/m", status=503, base_url=url), UNREACHABLE, "answered HTTP 503"),
        (RateLimited("HTTP 429", model="l/m", status=429, base_url=url), BUSY, "[llm.fallbacks]"),
        (AuthError("HTTP 401", model="l/m", status=401, base_url=url), NOT_SET_UP, "[llm.providers.l]"),
        (
            ModelNotFound("HTTP 404", model="l/llama3", status=404, base_url=url),
            NOT_SET_UP,
            "ollama pull llama3",
        ),
    ]
    for err, person, hint in cases:
        assert err.expected and err.person_message == person and hint in err.operator_hint, err
        assert_plain(err.person_message)
        assert url in err.operator_line() or "Ollama at http://127.0.0.1:11434" in err.operator_line()
    # A lasting (setup) failure is what the person hears about, before a transient one.
    chain = AllModelsFailed([("a/x", cases[1][0]), ("l/m", cases[3][0])])
    assert chain.person_message == NOT_SET_UP and chain.expected
    assert "answered HTTP 503" in chain.operator_hint and "api_key" in chain.operator_hint
    assert AllModelsFailed([]).person_message == BUSY
    # A caller's own deadline around a model call is a model timeout; anything else is not.
    assert (turn := model_failure(TimeoutError())) is not None and turn.person_message == SLOW
    assert model_failure(KeyError("x")) is None


async def test_rejected_key_names_provider_and_url(fake: FakeLLM) -> None:
    fake.fail(401, times=None)
    llm = LLM(make_config(fake, fallbacks={}))
    with pytest.raises(AllModelsFailed) as info:
        await llm.complete(
            REQ, process="channel", timeouts=Timeouts(connect=5.0, first_token=5.0, total=10.0)
        )
    await llm.aclose()
    ((_model, cause),) = info.value.errors
    assert isinstance(cause, AuthError) and cause.base_url == fake.openai_url.rstrip("/")
    assert info.value.person_message == NOT_SET_UP
    assert f"{fake.openai_url.rstrip('/')} refused the key: check [llm.providers.oa] api_key" in (
        info.value.operator_line()
    )


async def test_chat_with_a_dead_model_server(short_tmp: Path) -> None:
    url = f"http://127.0.0.1:{dead_port()}/v1"
    async with ChatSystem(short_tmp, SimpleNamespace(openai_url=url)) as system:
        ana = await system.client("Ana")
        conv = await ana.create()
        await ana.open(conv)
        await ana.send(conv, "hello, are you there?")
        err = await ana.wait_for(lambda f: f["type"] == "error" and f["code"] == "model", timeout=30)
        assert err["message"] == UNREACHABLE
        # The same sentence is kept in the conversation's history, as a system message.
        stored = await ana.wait_for(lambda f: f["type"] == "message" and f["message"]["role"] == "system")
        assert stored["message"]["text"] == UNREACHABLE

        def failure_lines() -> list[str]:
            return [ln for ln in system.sup.log_tail(400).splitlines() if "turn failed" in ln]

        await eventually(lambda: failure_lines(), what=lambda: system.sup.log_tail(60))
        (line,) = failure_lines()
        assert f"url={url}" in line and f"is the model server at {url} running?" in line
        assert "connection refused" in line
        assert "Traceback" not in system.sup.log_tail(400)
