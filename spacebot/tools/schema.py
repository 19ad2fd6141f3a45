"""Checking a model's tool arguments against the tool's JSON schema, with errors it can act on.

Only the subset of JSON schema our tools use: an object with typed properties, ``required``,
``enum``, ``minimum``/``maximum`` for numbers and ``minLength``/``maxLength``/``pattern`` for
strings. Unknown arguments are refused so a misspelt argument never silently falls back to a default.
"""

from __future__ import annotations

import re
from typing import Any

from spacebot.llm.types import ToolCall, ToolSpec

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


class ToolArgumentError(ValueError):
    """The arguments of a tool call do not fit its schema; the message is written for the model."""


def check(spec: ToolSpec, call: ToolCall) -> dict[str, Any]:
    """The call's arguments, validated; raises :class:`ToolArgumentError` naming what is wrong."""
    if call.error:
        raise ToolArgumentError(f"{spec.name}: the arguments are not a JSON object ({call.error})")
    args = call.arguments
    props: dict[str, Any] = spec.parameters.get("properties", {})
    for name in spec.parameters.get("required", []):
        if name not in args:
            raise ToolArgumentError(f"{spec.name}: missing required argument {name!r}")
    for name, value in args.items():
        schema = props.get(name)
        if schema is None:
            known = ", ".join(sorted(props)) or "none"
            raise ToolArgumentError(f"{spec.name}: unknown argument {name!r} (arguments: {known})")
        expected = schema.get("type")
        types = _TYPES.get(expected, ()) if isinstance(expected, str) else ()
        if types and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            raise ToolArgumentError(
                f"{spec.name}: argument {name!r} must be {expected}, got {type(value).__name__}"
            )
        if "enum" in schema and value not in schema["enum"]:
            choices = ", ".join(map(repr, schema["enum"]))
            raise ToolArgumentError(f"{spec.name}: argument {name!r} must be one of {choices}")
        if isinstance(value, str):  # string limits (used by `react`'s emoji); added for issue #11
            if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
                lo, hi = schema.get("minLength", 0), schema.get("maxLength", "any number of")
                raise ToolArgumentError(f"{spec.name}: argument {name!r} must be {lo} to {hi} characters")
            if "pattern" in schema and not re.search(schema["pattern"], value):
                raise ToolArgumentError(
                    f"{spec.name}: argument {name!r} must match {schema['pattern']!r} (got {value!r})"
                )
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                raise ToolArgumentError(f"{spec.name}: argument {name!r} must be >= {schema['minimum']}")
            if "maximum" in schema and value > schema["maximum"]:
                raise ToolArgumentError(f"{spec.name}: argument {name!r} must be <= {schema['maximum']}")
    return dict(args)


def spec(name: str, description: str, properties: dict[str, Any], required: list[str]) -> ToolSpec:
    """A ``ToolSpec`` for an object schema."""
    return ToolSpec(name, description, {"type": "object", "properties": properties, "required": required})
