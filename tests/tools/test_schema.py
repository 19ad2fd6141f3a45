"""``schema.check``, the one argument check of every tool call: each refusal names the argument
and says what it must be; ``null`` for an optional argument means it was not given."""

from __future__ import annotations

import pytest

from spacebot.errors import SpacebotError
from spacebot.llm.toolcall import finish_tool_call
from spacebot.llm.types import ToolCall
from spacebot.tools import errors, sandbox, schema, workspace
from spacebot.tools.errors import SandboxError, ToolArgumentError, ToolError
from spacebot.tools.schema import check, spec

TOOL = spec(
    "probe",
    "Every kind of argument the tools use.",
    {
        "text": {"type": "string"},
        "count": {"type": "integer", "minimum": 1, "maximum": 10},
        "ratio": {"type": "number", "minimum": 0, "maximum": 1},
        "flag": {"type": "boolean"},
        "items": {"type": "array"},
        "env": {"type": "object"},
        "mode": {"type": "string", "enum": ["fast", "slow"]},
        "emoji": {"type": "string", "minLength": 1, "maxLength": 3, "pattern": r"\S"},
        "anything": {},
    },
    ["text", "count"],
)


def _check(args: object) -> dict[str, object]:
    return check(TOOL, ToolCall("1", "probe", args))  # type: ignore[arg-type]


def test_valid_arguments_come_back_checked() -> None:
    args = {
        "text": "t",
        "count": 10,
        "ratio": 0,
        "flag": False,
        "items": [1],
        "env": {"A": "b"},
        "mode": "slow",
        "emoji": "👍",
        "anything": [None],
    }
    assert _check(args) == args
    assert _check({"text": "t", "count": 1, "ratio": 0.5}) == {"text": "t", "count": 1, "ratio": 0.5}


def test_null_optional_arguments_are_left_out() -> None:
    given = {"text": "t", "count": 2, "ratio": None, "flag": None, "mode": None, "anything": None}
    assert _check(given) == {"text": "t", "count": 2}
    assert given["flag"] is None  # the model's arguments are not changed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"count": 1}, "probe: missing required argument 'text' (a string)"),
        ({"text": "t"}, "probe: missing required argument 'count' (an integer)"),
        ({"text": None, "count": 1}, "probe: argument 'text' must be a string, got null (it is required)"),
        (
            {"text": "t", "count": None},
            "probe: argument 'count' must be an integer, got null (it is required)",
        ),
    ],
)
def test_missing_or_null_required_arguments(args: dict[str, object], message: str) -> None:
    with pytest.raises(ToolArgumentError) as err:
        _check(args)
    assert str(err.value) == message


def test_null_for_a_required_argument_without_a_type() -> None:
    loose = spec("loose", "d", {"x": {}}, ["x"])
    with pytest.raises(ToolArgumentError) as err:
        check(loose, ToolCall("1", "loose", {"x": None}))
    assert str(err.value) == "loose: argument 'x' is required and cannot be null"
    assert check(loose, ToolCall("1", "loose", {"x": 0})) == {"x": 0}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("text", 3, "argument 'text' must be a string, got integer"),
        ("text", ["t"], "argument 'text' must be a string, got array"),
        ("count", "2", "argument 'count' must be an integer, got string"),
        ("count", True, "argument 'count' must be an integer, got boolean"),
        ("count", 2.0, "argument 'count' must be an integer, got number"),
        ("ratio", False, "argument 'ratio' must be a number, got boolean"),
        ("ratio", "0.5", "argument 'ratio' must be a number, got string"),
        ("flag", 1, "argument 'flag' must be a boolean, got integer"),
        ("flag", "true", "argument 'flag' must be a boolean, got string"),
        ("items", "a,b", "argument 'items' must be an array, got string"),
        ("items", {}, "argument 'items' must be an array, got object"),
        ("env", [], "argument 'env' must be an object, got array"),
        ("count", 0, "argument 'count' must be >= 1, got 0"),
        ("count", 11, "argument 'count' must be <= 10, got 11"),
        ("ratio", 1.5, "argument 'ratio' must be <= 1, got 1.5"),
        ("mode", "medium", "argument 'mode' must be one of 'fast', 'slow', got 'medium'"),
        ("emoji", "", "argument 'emoji' must be 1 to 3 characters, got 0"),
        ("emoji", "abcd", "argument 'emoji' must be 1 to 3 characters, got 4"),
        ("emoji", "  ", "argument 'emoji' must match '\\\\S' (got '  ')"),
    ],
)
def test_wrong_values_are_refused_naming_the_argument(name: str, value: object, message: str) -> None:
    with pytest.raises(ToolArgumentError) as err:
        _check({"text": "t", "count": 1, name: value})
    assert str(err.value) == f"probe: {message}"


def test_unknown_arguments_are_refused_listing_the_known_ones() -> None:
    with pytest.raises(ToolArgumentError) as err:
        _check({"text": "t", "count": 1, "cuont": 2})
    assert str(err.value) == (
        "probe: unknown argument 'cuont' (arguments: text, count, ratio, flag, items, env, mode, emoji, "
        "anything)"
    )
    # A misspelt required argument is reported as unknown, which names the right spelling.
    with pytest.raises(ToolArgumentError, match="unknown argument 'txt'"):
        _check({"txt": "t", "count": 1})
    with pytest.raises(ToolArgumentError) as err:
        check(spec("bare", "d", {}, []), ToolCall("1", "bare", {"x": None}))
    assert str(err.value) == "bare: unknown argument 'x' (arguments: none)"


def test_arguments_that_are_not_an_object() -> None:
    with pytest.raises(ToolArgumentError) as err:
        _check(["t", 1])
    assert str(err.value) == "probe: the arguments must be a JSON object, got array"
    for raw in ("[1]", "{", "null"):
        call = finish_tool_call("1", "probe", raw)
        with pytest.raises(ToolArgumentError) as err:
            check(TOOL, call)
        assert str(err.value) == (
            f"probe: the arguments are not a JSON object ({call.error}); call it again with one JSON "
            "object of arguments"
        )


def test_one_error_family() -> None:
    assert issubclass(ToolArgumentError, ToolError) and issubclass(SandboxError, ToolError)
    assert issubclass(ToolError, SpacebotError) and issubclass(ToolError, ValueError)
    # The modules that raise them use the one family (no class of their own by the same name).
    assert schema.ToolArgumentError is errors.ToolArgumentError
    assert workspace.ToolError is errors.ToolError
    assert sandbox.SandboxError is errors.SandboxError
