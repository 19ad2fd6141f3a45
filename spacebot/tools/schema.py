"""Checking a model's tool arguments against the tool's JSON schema, with errors it can act on.

:func:`check` is the one argument check of every tool call (conversation, branch and worker
tools alike). It knows the subset of JSON schema our tools use: an object with typed properties,
``required``, ``enum``, ``minimum``/``maximum`` for numbers and ``minLength``/``maxLength``/
``pattern`` for strings.

* Unknown arguments are refused, so a misspelt argument never silently falls back to a default.
* JSON ``null`` for an optional argument means the argument is absent: models send
  ``"limit": null`` routinely for "no limit", and the tools' defaults are what they mean. The
  argument is left out of the checked arguments, so ``args.get(name, default)`` gives the default.
* ``null`` for a required argument is an error naming the argument, like a missing one.
* A boolean is not a number (JSON keeps them apart, Python does not), and an integer argument
  refuses ``1.5`` (and ``2.0``: the schema says integer).

Every refusal is a :class:`~spacebot.tools.errors.ToolArgumentError` whose message starts with the
tool's name, names the argument and says what it must be.
"""

from __future__ import annotations

import re
from typing import Any

from spacebot.llm.types import ToolCall, ToolSpec
from spacebot.tools.errors import ToolArgumentError

# ToolArgumentError stays importable from here for the callers outside spacebot.tools that still do.
__all__ = ["ToolArgumentError", "check", "spec"]

_TYPES: dict[str, tuple[str, tuple[type, ...]]] = {
    "string": ("a string", (str,)),
    "integer": ("an integer", (int,)),
    "number": ("a number", (int, float)),
    "boolean": ("a boolean", (bool,)),
    "object": ("an object", (dict,)),
    "array": ("an array", (list,)),
}
_JSON_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def _json_type(value: object) -> str:
    """The JSON name of ``value``'s type, as the model knows it."""
    if value is None:
        return "null"
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _fits(value: object, types: tuple[type, ...]) -> bool:
    # bool is an int subclass in Python, but true is not a number in JSON.
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def check(spec: ToolSpec, call: ToolCall) -> dict[str, Any]:
    """The call's arguments, validated, without the optional ones that are ``null``.

    Raises :class:`ToolArgumentError` naming the argument that is missing, unknown, of the wrong
    type or out of range.
    """
    tool = spec.name
    if call.error:
        raise ToolArgumentError(
            f"{tool}: the arguments are not a JSON object ({call.error}); call it again with one "
            "JSON object of arguments"
        )
    args: object = call.arguments
    if not isinstance(args, dict):
        raise ToolArgumentError(f"{tool}: the arguments must be a JSON object, got {_json_type(args)}")
    props: dict[str, Any] = spec.parameters.get("properties", {})
    required: list[str] = spec.parameters.get("required", [])
    for name in args:
        if name not in props:
            known = ", ".join(props) or "none"
            raise ToolArgumentError(f"{tool}: unknown argument {name!r} (arguments: {known})")
    checked: dict[str, Any] = {}
    for name, schema in props.items():
        expected = schema.get("type")
        what, types = _TYPES.get(expected, ("", ())) if isinstance(expected, str) else ("", ())
        value = args.get(name)
        if value is None:
            if name not in required:
                continue
            if name not in args:
                hint = f" ({what})" if what else ""
                raise ToolArgumentError(f"{tool}: missing required argument {name!r}{hint}")
            why = f"must be {what}, got null (it is required)" if what else "is required and cannot be null"
            raise ToolArgumentError(f"{tool}: argument {name!r} {why}")
        if types and not _fits(value, types):
            raise ToolArgumentError(f"{tool}: argument {name!r} must be {what}, got {_json_type(value)}")
        if "enum" in schema and value not in schema["enum"]:
            choices = ", ".join(map(repr, schema["enum"]))
            raise ToolArgumentError(f"{tool}: argument {name!r} must be one of {choices}, got {value!r}")
        if isinstance(value, str):
            if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
                lo, hi = schema.get("minLength", 0), schema.get("maxLength", "any number of")
                raise ToolArgumentError(
                    f"{tool}: argument {name!r} must be {lo} to {hi} characters, got {len(value)}"
                )
            if "pattern" in schema and not re.search(schema["pattern"], value):
                raise ToolArgumentError(
                    f"{tool}: argument {name!r} must match {schema['pattern']!r} (got {value!r})"
                )
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                raise ToolArgumentError(
                    f"{tool}: argument {name!r} must be >= {schema['minimum']}, got {value}"
                )
            if "maximum" in schema and value > schema["maximum"]:
                raise ToolArgumentError(
                    f"{tool}: argument {name!r} must be <= {schema['maximum']}, got {value}"
                )
        checked[name] = value
    return checked


def spec(name: str, description: str, properties: dict[str, Any], required: list[str]) -> ToolSpec:
    """A ``ToolSpec`` for an object schema."""
    return ToolSpec(name, description, {"type": "object", "properties": properties, "required": required})
