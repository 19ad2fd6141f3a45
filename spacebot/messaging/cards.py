"""Rich replies: the ``card`` argument of the reply tool, checked once and drawn for each platform.

A :class:`~spacebot.ipc.messages.Card` is a title, a text, ``name: value`` fields, a link and a
colour. Discord shows it as an embed, Slack as blocks (header, sections, fields); every other
platform and the web chat show its plain-text form, which is what the transcript stores after the
reply's own text (so the model reads back what it sent, and a reply posted after a restart still
carries it). The limits are Discord's, the tighter of the two: a card within them is shown whole on
Discord; Slack's shorter header is cut, its longer texts are split over several blocks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from spacebot.ipc.messages import Card, CardField
from spacebot.tools.errors import ToolArgumentError

TITLE_MAX = 256
TEXT_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
TOTAL_MAX = 6000
"""Characters of title, text and fields together (Discord's limit for one message's embeds)."""
URL_MAX = 2048
SLACK_HEADER_MAX = 150
SLACK_SECTION_MAX = 3000
SLACK_FIELDS_PER_SECTION = 10
SLACK_FIELD_MAX = 2000

_KEYS = ("title", "text", "fields", "url", "color")
_COLOR = re.compile(r"#?([0-9A-Fa-f]{6})")


def parse(value: object, *, tool: str = "reply") -> Card:
    """The model's ``card`` argument as a :class:`Card`; raises :class:`ToolArgumentError` naming
    the part that is wrong and what it must be."""
    where = f"{tool}: argument 'card'"
    if not isinstance(value, dict):
        raise ToolArgumentError(f"{where} must be an object {{title, text, fields, url, color}}")
    unknown = [k for k in value if k not in _KEYS]
    if unknown:
        raise ToolArgumentError(f"{where}: unknown key {unknown[0]!r} (keys: {', '.join(_KEYS)})")
    title = _string(value, "title", TITLE_MAX, where)
    text = _string(value, "text", TEXT_MAX, where)
    url = _string(value, "url", URL_MAX, where)
    if url and not re.match(r"https?://\S+$", url):
        raise ToolArgumentError(f"{where}: 'url' must be an http:// or https:// address, got {url[:80]!r}")
    raw_fields = value.get("fields")
    if raw_fields is None:
        raw_fields = []
    if not isinstance(raw_fields, list):
        raise ToolArgumentError(f"{where}: 'fields' must be an array of {{name, value}} objects")
    if len(raw_fields) > FIELDS_MAX:
        raise ToolArgumentError(f"{where}: at most {FIELDS_MAX} fields, got {len(raw_fields)}")
    fields = []
    for i, item in enumerate(raw_fields):
        at = f"{where}: fields[{i}]"
        if not isinstance(item, dict) or set(item) - {"name", "value"}:
            raise ToolArgumentError(f"{at} must be an object {{name, value}} of two strings")
        name = _string(item, "name", FIELD_NAME_MAX, at, required=True)
        field_value = _string(item, "value", FIELD_VALUE_MAX, at, required=True)
        fields.append(CardField(name, field_value))
    if not (title.strip() or text.strip() or fields):
        raise ToolArgumentError(f"{where} needs a title, a text or at least one field")
    total = len(title) + len(text) + sum(len(f.name) + len(f.value) for f in fields)
    if total > TOTAL_MAX:
        raise ToolArgumentError(f"{where}: {total} characters in all, at most {TOTAL_MAX}")
    return Card(title=title, text=text, fields=fields, url=url, color=_color(value.get("color"), where))


def _string(obj: dict[str, Any], key: str, most: int, where: str, *, required: bool = False) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise ToolArgumentError(f"{where}: '{key}' is required (a string)")
        return ""
    if not isinstance(value, str):
        raise ToolArgumentError(f"{where}: '{key}' must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise ToolArgumentError(f"{where}: '{key}' must not be empty")
    if len(value) > most:
        raise ToolArgumentError(f"{where}: '{key}' must be at most {most} characters, got {len(value)}")
    return value


def _color(value: object, where: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFFFF:
        return value
    if isinstance(value, str) and (m := _COLOR.fullmatch(value.strip())):
        return int(m.group(1), 16)
    raise ToolArgumentError(f"{where}: 'color' must be '#RRGGBB' (e.g. '#5865F2'), got {value!r}")


# -- plain text ------------------------------------------------------------------------------------


def plain(card: Card) -> str:
    """The card as Markdown text (platforms without cards, the web chat, the transcript)."""
    lines: list[str] = []
    if card.title:
        lines.append(f"**{card.title}**")
    if card.url:
        lines.append(card.url)
    if card.text:
        lines.append(card.text)
    lines += [f"**{f.name}:** {f.value}" for f in card.fields]
    return "\n".join(lines)


def with_card(content: str, card: Card | None) -> str:
    """What the transcript stores for a reply: its text, then the card's plain-text form."""
    if card is None:
        return content
    return f"{content}\n\n{plain(card)}" if content.strip() else plain(card)


def without_card(text: str, card: Card) -> str | None:
    """The reply's own text of a stored ``text`` (:func:`with_card`), or ``None`` when ``text`` does
    not end with the card (cut by the reply length limit: then it is shown as stored)."""
    shown = plain(card)
    if text == shown:
        return ""
    suffix = f"\n\n{shown}"
    return text[: -len(suffix)] if text.endswith(suffix) else None


# -- platforms -------------------------------------------------------------------------------------


def discord_embed(card: Card) -> dict[str, Any]:
    """The card as a Discord embed object (``discord.Embed.from_dict``)."""
    embed: dict[str, Any] = {"type": "rich"}
    if card.title:
        embed["title"] = card.title
    if card.text:
        embed["description"] = card.text
    if card.url:
        embed["url"] = card.url
    if card.color is not None:
        embed["color"] = card.color
    if card.fields:
        embed["fields"] = [{"name": f.name, "value": f.value, "inline": False} for f in card.fields]
    return embed


def slack_blocks(card: Card, escape: Callable[[str], str]) -> list[dict[str, Any]]:
    """The card as Slack blocks: a header, the text (and link) as sections, the fields as section
    fields, ten to a section. ``escape`` makes text safe as ``mrkdwn`` (the adapter's own)."""
    blocks: list[dict[str, Any]] = []
    if card.title:
        title = (
            card.title if len(card.title) <= SLACK_HEADER_MAX else card.title[: SLACK_HEADER_MAX - 1] + "…"
        )
        blocks.append({"type": "header", "text": {"type": "plain_text", "text": title, "emoji": True}})
    body = escape(card.text)
    if card.url:
        link = f"<{card.url.replace('|', '%7C').replace('>', '%3E')}>"
        body = f"{body}\n{link}" if body else link
    for start in range(0, len(body), SLACK_SECTION_MAX):
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": body[start : start + SLACK_SECTION_MAX]}}
        )
    for start in range(0, len(card.fields), SLACK_FIELDS_PER_SECTION):
        chunk = card.fields[start : start + SLACK_FIELDS_PER_SECTION]
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{escape(f.name)}*\n{escape(f.value)}"[:SLACK_FIELD_MAX]}
                    for f in chunk
                ],
            }
        )
    return blocks
