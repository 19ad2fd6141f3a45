"""A page's accessibility tree as compact text for the model, with a ref per interactive element.

Playwright's AI snapshot (``page.aria_snapshot(mode="ai")``) is YAML: one ``- role "name" [attrs]
[ref=e3]: text`` item per accessible node, iframes included (their refs start with ``f1``...).
Playwright keeps each element's ref on the element while its role and name stay the same, so a
ref survives later snapshots of the same page, and ``page.locator("aria-ref=e3")`` finds the
element again (:mod:`spacebot.tools.browser` clicks and types that way).

:func:`compact` turns the YAML into one line per node, two spaces of indent per level::

    [e3] link "Home" -> /
    heading "Log in" [level=1]
    [e9] textbox "User": bob
    [e15] button "Sign in"

Only interactive elements (links, buttons, form fields, anything with a pointer cursor) show
their ref; anonymous ``generic`` containers are left out and their children moved up a level;
inline text stays. The whole text is cut at a character cap, at a line boundary, with a note.
"""

from __future__ import annotations

import json
import re

INTERACTIVE = frozenset(
    {
        "button",
        "checkbox",
        "combobox",
        "link",
        "listbox",
        "menuitem",
        "menuitemcheckbox",
        "menuitemradio",
        "option",
        "radio",
        "scrollbar",
        "searchbox",
        "slider",
        "spinbutton",
        "switch",
        "tab",
        "textbox",
        "treeitem",
    }
)
"""Roles whose elements show their ref."""

_HIDDEN_ATTRS = frozenset({"active", "cursor=pointer"})
"""Attributes of the snapshot that say nothing the model acts on."""
_ITEM = re.compile(r"^(?P<indent> *)- (?P<body>.*)$")
_KEY = re.compile(r'^(?P<role>[A-Za-z][\w-]*)(?: (?P<name>"(?:[^"\\]|\\.)*"))?(?P<attrs>(?: \[[^\]]*\])*)$')
_ATTR = re.compile(r"\[([^\]]*)\]")


def _split(body: str) -> tuple[str, str | None]:
    """An item's key and its inline value (``None`` when there is none; ``""`` for a parent)."""
    if body.startswith("'"):  # a YAML single-quoted key: '' is a quote
        end = 1
        while True:
            end = body.find("'", end)
            if end < 0:
                return body, None
            if body[end + 1 : end + 2] == "'":
                end += 2
                continue
            break
        key, rest = body[1:end].replace("''", "'"), body[end + 1 :]
    else:
        cut = body.find(": ")
        if cut >= 0 and not body.startswith("/"):
            # The key never holds ": " unquoted (YAML would have quoted it).
            key, rest = body[:cut], body[cut:]
        elif body.endswith(":"):
            key, rest = body[:-1], ":"
        else:
            key, rest = body, ""
    if rest.startswith(": "):
        return key, _unquote(rest[2:])
    if rest == ":":
        return key, ""
    return key, None


def _unquote(value: str) -> str:
    """A YAML scalar as plain text."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return str(json.loads(value))
        except ValueError:
            return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    return value


class _Line:
    """One node kept for the output."""

    def __init__(self, depth: int, text: str) -> None:
        self.depth = depth
        self.text = text
        self.link = ""


def _nodes(raw: str) -> list[_Line]:
    out: list[_Line] = []
    stack: list[tuple[int, int, _Line | None]] = []  # (yaml indent, output depth, line)
    for row in raw.splitlines():
        match = _ITEM.match(row)
        if match is None:
            continue
        indent, body = len(match["indent"]), match["body"]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        depth = stack[-1][1] + 1 if stack else 0
        parent = stack[-1][2] if stack else None
        if body.startswith("/url: "):
            if parent is not None:
                parent.link = _unquote(body[6:])
            continue
        if body.startswith("/"):  # other properties (/placeholder ...): shown after the node
            if parent is not None:
                prop, _, value = body[1:].partition(": ")
                parent.text += f" ({prop}: {_unquote(value)})"
            continue
        if body.startswith("text: "):
            out.append(_Line(depth, _unquote(body[6:])))
            continue
        key, value = _split(body)
        found = _KEY.match(key)
        if found is None:  # not a form this module knows: shown as it came
            line = _Line(depth, body)
            out.append(line)
            stack.append((indent, depth, line))
            continue
        role, name = found["role"], found["name"]
        attrs = _ATTR.findall(found["attrs"] or "")
        ref = next((a[4:] for a in attrs if a.startswith("ref=")), "")
        shown = [a for a in attrs if not a.startswith("ref=") and a not in _HIDDEN_ATTRS]
        pointer = "cursor=pointer" in attrs
        if role == "generic" and name is None and not pointer:
            # An anonymous container: its children take its place; its own text stays.
            if value:
                out.append(_Line(depth, value))
            stack.append((indent, depth - 1, parent))
            continue
        parts = []
        if ref and (role in INTERACTIVE or pointer):
            parts.append(f"[{ref}]")
        parts.append(role)
        if name is not None:
            parts.append(name)
        parts.extend(f"[{a}]" for a in shown)
        text = " ".join(parts)
        if value:
            text += f": {value}"
        line = _Line(depth, text)
        out.append(line)
        stack.append((indent, depth, line))
    return out


def compact(raw: str, title: str, url: str, max_chars: int) -> str:
    """The snapshot ``raw`` as the model reads it: title, URL, then one line per node.

    Args:
        raw: Playwright's AI-mode aria snapshot of the page.
        title: the page's title.
        url: the page's URL.
        max_chars: the most characters returned; further lines are left out with a note.
    """
    lines = []
    for node in _nodes(raw):
        text = node.text + (f" -> {node.link}" if node.link else "")
        lines.append("  " * node.depth + " ".join(text.split("\n")))
    head = f"# {title or '(no title)'}\n{url}\n"
    body = "\n".join(lines) if lines else "(the page has no accessible content)"
    if len(head) + len(body) <= max_chars:
        return head + body
    kept: list[str] = []
    size = len(head)
    for line in lines:
        if size + len(line) + 1 > max_chars:
            break
        kept.append(line)
        size += len(line) + 1
    return (
        head
        + "\n".join(kept)
        + f"\n[snapshot cut: showed {len(kept)} of {len(lines)} lines ({max_chars} characters)]"
    )
