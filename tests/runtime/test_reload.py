"""``spacebotctl reload`` says, per changed key, whether the change is in effect."""

from __future__ import annotations

import json

import msgspec

from spacebot import config as config_mod
from spacebot.config import Config
from spacebot.ipc.messages import ConfigReloaded, ProcState, ReloadEffect, StateChanged
from spacebot.supervisor import reload
from spacebot.testing import SupervisorProcess, ctl_in_thread, fast_config

TK = "spacebot.procs.testkit"
WAIT = 60.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""

APPLIED, NEW, RESTART = ReloadEffect.APPLIED, ReloadEffect.NEW_PROCESSES, ReloadEffect.NEEDS_RESTART


def _config(raw: dict[str, object]) -> Config:
    return config_mod.from_dict(raw, {"SPACEBOT_HOME": "/nonexistent/spacebot-home"})


def _effects(old: dict[str, object], new: dict[str, object]) -> dict[str, ReloadEffect]:
    return {c.key: c.effect for c in reload.diff(_config(old), _config(new))}


# -- the diff, as a pure function ------------------------------------------------------------------


def test_nothing_changed_is_an_empty_list() -> None:
    raw = {"runtime": {"log_level": "debug"}, "webchat": {"port": 9000}}
    assert reload.diff(_config(raw), _config(raw)) == []
    # Where the config came from is not a setting.
    assert reload.diff(_config(raw), msgspec.structs.replace(_config(raw), source="/etc/x.toml")) == []
    assert [c.key for c in reload.diff(_config(raw), _config({}))] == ["runtime.log_level", "webchat.port"]


def test_each_changed_key_gets_the_effect_of_where_it_is_read() -> None:
    new = {
        "runtime": {"log_level": "debug", "hwm": 500},
        "supervisor": {"monitor_interval": 1.0, "resume_interval": 5.0},
        "processes": {"worker": {"grace": 2.0, "heartbeat_interval": 1.0}},
        "agents": ["main", "second"],
        "memory": {"hnsw_ef": 50},
        "channel": {"idle_timeout": 60.0},
        "webchat": {"port": 9000, "enabled": False},
        "delegates": {"shell_timeout": 30.0},
    }
    assert _effects({}, new) == {
        "runtime.log_level": APPLIED,
        "runtime.hwm": RESTART,
        "supervisor.monitor_interval": APPLIED,
        "supervisor.resume_interval": RESTART,
        "processes.worker.grace": APPLIED,
        "processes.worker.heartbeat_interval": NEW,
        "agents": RESTART,
        "memory.hnsw_ef": RESTART,
        "channel.idle_timeout": NEW,
        "webchat.port": RESTART,
        "webchat.enabled": RESTART,
        "delegates.shell_timeout": NEW,
    }


def test_changes_are_sorted_and_say_what_to_restart() -> None:
    changes = reload.diff(_config({}), _config({"webchat": {"port": 9000}, "memory": {"hnsw_ef": 50}}))
    assert [c.key for c in changes] == ["memory.hnsw_ef", "webchat.port"]
    assert "memory:<agent>" in changes[0].note and "gateway:webchat" in changes[1].note
    assert reload.describe(changes) == "memory.hnsw_ef (needs restart), webchat.port (needs restart)"
    assert reload.describe([]) == "none"


def test_a_table_added_is_one_key_and_no_value_is_reported() -> None:
    secret = "sk-this-must-not-travel"
    provider = {"kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1", "api_key": secret}
    llm = {
        "providers": {"fake": provider},
        "profiles": {"balanced": {"light": "fake/m", "standard": "fake/m", "strong": "fake/m"}},
    }
    changes = reload.diff(_config({}), _config({"llm": llm}))
    keys = [c.key for c in changes]
    assert "llm.providers.fake" in keys and all(c.effect is NEW for c in changes)
    assert secret not in msgspec.json.encode(changes).decode()


def test_every_section_has_a_verdict_of_its_own() -> None:
    """A new section must be placed deliberately, not fall through to the catch-all."""
    for field in msgspec.structs.fields(Config):
        if field.name == "source":
            continue
        key = field.name if field.name in ("home", "agents") else f"{field.name}.anything"
        assert reload.effect(key) != reload.effect("no_such_section.key"), field.name
    assert reload.effect("no_such_section.key")[0] is RESTART  # unknown: never claimed to apply


# -- against a real supervisor ---------------------------------------------------------------------


_ctl = ctl_in_thread


async def test_reload_reports_log_level_applied_and_webchat_port_needing_a_restart(
    supervisor: SupervisorProcess,
) -> None:
    assert supervisor.ctl is not None
    rt = str(supervisor.endpoints.dir)
    code, out, _ = await _ctl("--runtime-dir", rt, "reload")
    assert (code, out) == (0, "no changes\n")
    events = await supervisor.ctl.events("sys.reload")
    text = fast_config(sections={"webchat": {"enabled": False, "port": 9123}})
    assert 'log_level = "info"' in text
    supervisor.config_file.write_text(text.replace('log_level = "info"', 'log_level = "debug"'))
    code, out, err = await _ctl("--runtime-dir", rt, "reload")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert lines[0].startswith("runtime.log_level: applied")
    assert lines[1].startswith("webchat.port: needs restart (") and "gateway:webchat" in lines[1]
    event = await events.next(timeout=WAIT)
    assert isinstance(event.body, ConfigReloaded) and event.body.ok
    assert [(c.key, c.effect) for c in event.body.changes] == [
        ("runtime.log_level", APPLIED),
        ("webchat.port", RESTART),
    ]
    events.close()
    # "applied" is true: the supervisor now writes debug lines (a routine ready → idle move is one).
    states = await supervisor.ctl.events("proc.worker.worker:after.")
    await supervisor.spawn(f"{TK}:idle", id="worker:after")
    await states.wait_for(
        lambda e: isinstance(e.body, StateChanged) and e.body.new is ProcState.IDLE, timeout=WAIT
    )
    states.close()
    debug = [line for line in supervisor.log_tail(400).splitlines() if " DEBUG " in line]
    assert any(" supervisor " in line and "state id=worker:after" in line for line in debug), debug
    # The same report as JSON; reading the same file again changes nothing.
    code, out, _ = await _ctl("--runtime-dir", rt, "reload", "--json")
    assert code == 0 and json.loads(out) == {
        "type": "reload_report",
        "source": str(supervisor.config_file),
        "changes": [],
    }


async def test_process_budgets_apply_to_running_processes(supervisor: SupervisorProcess) -> None:
    """``processes.*`` is read by the supervisor on every check: a lower wall-clock limit stops a
    process that was started before the reload."""
    assert supervisor.ctl is not None
    rt = str(supervisor.endpoints.dir)
    await supervisor.spawn(f"{TK}:idle", id="worker:budget")
    hung = await supervisor.ctl.events("proc.worker.worker:budget.hung")
    supervisor.config_file.write_text(fast_config(worker={"wall_clock_limit": 0.5}))
    code, out, _ = await _ctl("--runtime-dir", rt, "reload")
    assert code == 0 and out.startswith("processes.worker.wall_clock_limit: applied")
    event = await hung.next(timeout=WAIT)
    assert event.topic == "proc.worker.worker:budget.hung"
    hung.close()
