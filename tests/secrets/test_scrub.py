"""Redaction of secret values, in whole texts and in streams cut anywhere."""

from __future__ import annotations

import base64
import itertools
import re
from urllib.parse import quote, quote_plus

from hypothesis import given, settings
from hypothesis import strategies as st

from spacebot.secrets.scrub import Scrubber

VALUE = "sk-Abc12/xyz+Q=é"
SECRETS = {"OPENAI": VALUE, "SHORT": "12345", "GH": "ghp_token_0123"}


def test_the_value_itself() -> None:
    scrubber = Scrubber(SECRETS)
    text = f"key={VALUE}; again {VALUE}\nand ghp_token_0123."
    assert scrubber.scrub(text) == "key=[REDACTED:OPENAI]; again [REDACTED:OPENAI]\nand [REDACTED:GH]."
    # Values under six characters are left alone (they would hide ordinary words and numbers).
    assert scrubber.scrub("pin 12345") == "pin 12345"
    assert Scrubber({}).scrub(VALUE) == VALUE


def test_base64_forms() -> None:
    scrubber = Scrubber(SECRETS)
    raw = VALUE.encode()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        padded = encode(raw).decode()
        assert padded.endswith("=")  # the value's length leaves padding to strip
        for form in (padded, padded.rstrip("=")):
            assert scrubber.scrub(f"<{form}>") == "<[REDACTED:OPENAI]>", form
    # Inside a longer base64 text, e.g. `Authorization: Basic base64(user:value)`.
    for user in ("u", "us", "usr"):
        header = base64.b64encode(f"{user}:{VALUE}".encode()).decode()
        scrubbed = scrubber.scrub(f"Authorization: Basic {header}")
        assert "[REDACTED:OPENAI]" in scrubbed and header not in scrubbed
        # What is left around the redaction cannot spell the value.
        rest = scrubbed.removeprefix("Authorization: Basic ").replace("[REDACTED:OPENAI]", "")
        assert len(rest) <= 6, scrubbed


def test_url_and_hex_forms() -> None:
    scrubber = Scrubber(SECRETS)
    for form in (
        quote(VALUE, safe=""),
        quote(VALUE),
        quote_plus(VALUE),
        re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(VALUE, safe="")),
        VALUE.encode().hex(),
        VALUE.encode().hex().upper(),
    ):
        assert form != VALUE
        assert scrubber.scrub(f"GET /?k={form}&x=1") == "GET /?k=[REDACTED:OPENAI]&x=1", form


def test_longest_value_wins_when_one_contains_another() -> None:
    scrubber = Scrubber({"INNER": "secret1", "OUTER": "prefix-secret1-suffix"})
    assert scrubber.scrub("a prefix-secret1-suffix b secret1") == "a [REDACTED:OUTER] b [REDACTED:INNER]"


def test_a_long_value_such_as_a_private_key() -> None:
    pem = "-----BEGIN KEY-----\n" + "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" * 150 + "\n-----END KEY-----"
    scrubber = Scrubber({"DEPLOY_KEY": pem, "OTHER": pem[:40]})
    assert scrubber.scrub(f"a{pem}b{pem.encode().hex()}c") == "a[REDACTED:DEPLOY_KEY]b[REDACTED:DEPLOY_KEY]c"
    assert scrubber.scrub(pem[:60]) == "[REDACTED:OTHER]" + pem[40:60]


def _run(scrubber: Scrubber, chunks: list[str]) -> str:
    stream = scrubber.stream()
    return "".join(stream.feed(chunk) for chunk in chunks) + stream.flush()


TEXT = f"before {VALUE} middle {base64.b64encode(VALUE.encode()).decode()} after ghp_token_0123"


def test_stream_finds_a_value_split_at_every_position_across_two_chunks() -> None:
    scrubber = Scrubber(SECRETS)
    whole = scrubber.scrub(TEXT)
    assert VALUE not in whole and whole.count("[REDACTED:") == 3
    for cut in range(len(TEXT) + 1):
        assert _run(scrubber, [TEXT[:cut], TEXT[cut:]]) == whole, cut


def test_stream_finds_a_value_split_at_every_position_across_three_chunks() -> None:
    scrubber = Scrubber(SECRETS)
    whole = scrubber.scrub(TEXT)
    for first, second in itertools.combinations_with_replacement(range(len(TEXT) + 1), 2):
        chunks = [TEXT[:first], TEXT[first:second], TEXT[second:]]
        assert _run(scrubber, chunks) == whole, (first, second)


def test_stream_holds_back_only_a_tail() -> None:
    scrubber = Scrubber(SECRETS)
    stream = scrubber.stream()
    out = stream.feed("x" * 1000)
    assert out == "x" * (1000 - scrubber.longest + 1)
    assert stream.feed(VALUE[:5]) == "x" * 5  # the rest could still begin a value
    assert stream.feed(VALUE[5:] + "y" * 200).startswith("x" * (scrubber.longest - 6) + "[REDACTED:OPENAI]")
    assert stream.flush().endswith("y")
    assert stream.flush() == ""


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from(
            [VALUE, VALUE[:7], VALUE[7:], "ghp_token_0123", "ghp_", "=", "%2F", " ", "abc", "\n"]
        ),
        max_size=12,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_stream_equals_whole_text_scrub(pieces: list[str], cuts: list[int]) -> None:
    scrubber = Scrubber(SECRETS)
    text = "".join(pieces)
    bounds = sorted({0, len(text), *(min(cut, len(text)) for cut in cuts)})
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    assert _run(scrubber, chunks) == scrubber.scrub(text)
    assert VALUE not in scrubber.scrub(text)
