"""Log formats (text and JSON), secret scrubbing, quiet third-party loggers, ``--version``."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spacebot import logs
from spacebot.config import from_dict
from spacebot.testing import SupervisorProcess, fast_config

TK = "spacebot.procs.testkit"
SECRET = "sk-test-0123456789abcdef"
JSON_KEYS = {"ts", "level", "process", "logger", "msg"}


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    """Put back the root handlers and the levels :func:`logs.setup` changes."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in logs.QUIET_LIBRARIES}
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError(f"upstream refused key {SECRET}")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("spacebot.test", logging.ERROR, __file__, 1, msg, args, exc_info)


# -- formatters ------------------------------------------------------------------------------------


def test_json_line_has_the_fields_and_the_traceback() -> None:
    line = logs.formatter("worker:ab12", "json").format(_record("done n=%d", 3, exc=True))
    assert "\n" not in line  # one object per line, even with a traceback
    entry = json.loads(line)
    assert JSON_KEYS | {"exc"} == set(entry)
    assert (entry["level"], entry["process"], entry["logger"], entry["msg"]) == (
        "ERROR",
        "worker:ab12",
        "spacebot.test",
        "done n=3",
    )
    assert entry["ts"].endswith("Z") and len(entry["ts"]) == len("2024-01-01T00:00:00.000Z")
    assert entry["exc"].startswith("Traceback") and "RuntimeError: upstream refused key" in entry["exc"]


def test_json_line_without_an_exception_has_no_exc() -> None:
    entry = json.loads(logs.formatter("supervisor", "json").format(_record("plain")))
    assert set(entry) == JSON_KEYS


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_registered_secret_is_never_written(fmt: logs.LogFormat) -> None:
    logs.register_secret(SECRET)
    # Quotes and a backslash next to it: JSON escaping must not let it through.
    line = logs.formatter("channel:x", fmt).format(_record('key="%s\\" used', SECRET, exc=True))
    assert SECRET not in line
    assert "***" in line
    if fmt == "json":
        entry = json.loads(line)
        assert SECRET not in entry["msg"] and SECRET not in entry["exc"]
        assert entry["msg"] == 'key="***\\" used'


def test_an_unknown_format_is_named() -> None:
    with pytest.raises(ValueError, match="'xml'"):
        logs.formatter("supervisor", "xml")  # type: ignore[arg-type]


# -- levels ----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("_restore_logging")
def test_http_request_lines_are_hidden_at_info_and_shown_at_debug() -> None:
    logs.setup("supervisor", "info", "json")
    for name in logs.QUIET_LIBRARIES:
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger(name).isEnabledFor(logging.WARNING), name
    assert logging.getLogger("spacebot.anything").isEnabledFor(logging.INFO)
    logs.set_level("debug")  # a reload to debug shows them again
    assert logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert logging.getLogger("httpcore").isEnabledFor(logging.DEBUG)


def test_the_provider_sdks_http_client_logs_are_quiet() -> None:
    """The SDKs log each request through their HTTP client's package (whatever it is named)."""
    import anthropic
    import openai

    for sdk in (openai, anthropic):
        packages = {c.__module__.split(".")[0] for c in sdk.DefaultAsyncHttpxClient.__mro__} - {"builtins"}
        assert packages <= set(logs.QUIET_LIBRARIES), (sdk.__name__, packages)


# -- configuration ---------------------------------------------------------------------------------


def test_log_format_from_the_file_and_the_environment() -> None:
    assert from_dict({}, {}).runtime.log_format == "text"
    assert from_dict({"runtime": {"log_format": "json"}}, {}).runtime.log_format == "json"
    assert from_dict({}, {"SPACEBOT_LOG_FORMAT": "JSON"}).runtime.log_format == "json"
    raw = {"runtime": {"log_format": "json"}}
    assert from_dict(raw, {"SPACEBOT_LOG_FORMAT": "text"}).runtime.log_format == "text"


# -- real processes --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["spacebot", "spacebotctl"])
def test_version(command: str) -> None:
    from importlib.metadata import version

    script = Path(sys.executable).parent / command
    run = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"spacebot {version('spacebot')}\n"


def _banner(line: str) -> bool:
    """The start banner ``spacebot run`` prints on stdout (the capture mixes it with stderr)."""
    return line.startswith(("spacebot supervisor pid ", "  try: ", "  tool sandbox: ", "  model: "))


async def test_every_process_logs_json_lines(short_tmp: Path) -> None:
    text = fast_config(sections={"runtime": {"log_level": "info", "log_format": "json"}})
    sup = SupervisorProcess(short_tmp, config_text=text)
    await sup.start()
    try:
        await sup.spawn(f"{TK}:idle", id="worker:json-log")
    finally:
        code = await sup.stop()
    assert code == 0, sup.log_tail()
    lines = [line for line in sup.log_file.read_text().splitlines() if line.strip()]
    assert any(line.startswith("spacebot supervisor pid ") for line in lines)  # stdout is in the file
    entries = []
    for line in lines:
        if _banner(line):
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line!r}")
        assert JSON_KEYS <= set(entry) <= JSON_KEYS | {"exc"}, line
        entries.append(entry)
    processes = {entry["process"] for entry in entries}
    assert {"supervisor", "zygote", "worker:json-log"} <= processes, processes
