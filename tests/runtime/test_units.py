"""Config loading, restart policy and the state table, without processes (the unit: test_systemd_unit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spacebot import config as config_mod
from spacebot.cli import main as spacebot_main
from spacebot.config import ProcessPolicy
from spacebot.errors import ConfigError
from spacebot.ipc.messages import Kind, ProcState, SpawnSpec
from spacebot.supervisor.policy import decide
from spacebot.supervisor.table import TRANSITIONS, IllegalTransition, ProcessRecord, ProcessTable

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = config_mod.load(tmp_path / "missing.toml", {"SPACEBOT_HOME": str(tmp_path)})
    assert cfg.source == ""
    assert cfg.home == str(tmp_path)
    assert set(cfg.processes) == set(Kind)
    assert cfg.policy(Kind.WORKER).restart == "never"
    assert cfg.policy(Kind.MEMORY).restart == "always"


def test_environment_overrides(tmp_path: Path) -> None:
    env = {"SPACEBOT_HOME": str(tmp_path), "SPACEBOT_LOG_LEVEL": "DEBUG", "SPACEBOT_RUNTIME_DIR": "/tmp/x"}
    cfg = config_mod.load(tmp_path / "none.toml", env)
    assert cfg.runtime.log_level == "debug" and cfg.runtime.runtime_dir == "/tmp/x"


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("[runtime]\nlog_level = 'loud'\n", "runtime.log_level", 2),
        ("[runtime]\n\nhwm = 'many'\n", "runtime.hwm", 3),
        ("[supervisor]\nmonitor_interval = 1\nbogus = 2\n", "supervisor.bogus", 3),
        (
            "[processes.worker]\ngrace = 1.0\nheartbeat_interval = 0\n",
            "processes.worker.heartbeat_interval",
            3,
        ),
        ("[processes.wizard]\ngrace = 1\n", "processes.wizard", 1),
        ("[processes.channel]\nrestart = 'sometimes'\n", "processes.channel.restart", 2),
    ],
)
def test_errors_name_key_file_and_line(tmp_path: Path, text: str, key: str, line: int) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config_mod.load(path, {"SPACEBOT_HOME": str(tmp_path)})
    message = str(err.value)
    assert repr(key) in message
    assert f"{path}:{line}" in message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[runtime\n")
    with pytest.raises(ConfigError, match=str(path)):
        config_mod.load(path, {})


def test_init_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert spacebot_main.main(["--home", str(home), "init"]) == 0
    for name in ("config.toml", "agents/main/SOUL.md", "agents/main/IDENTITY.md", "agents/main/ROLE.md"):
        assert (home / name).is_file()
    assert (home / "agents/main/workspace").is_dir()
    assert spacebot_main.main(["--home", str(home), "init"]) == 0
    assert "kept" in capsys.readouterr().out
    assert spacebot_main.main(["--home", str(home), "config", "check"]) == 0
    assert str(home / "config.toml") in capsys.readouterr().out
    (home / "config.toml").write_text("[runtime]\nhwm = 0\n")
    assert spacebot_main.main(["--home", str(home), "config", "check"]) == 1
    assert "runtime.hwm" in capsys.readouterr().err


def test_restart_policy_and_flapping_guard() -> None:
    pol = ProcessPolicy(
        restart="on-failure", flap_max_restarts=2, flap_window=10, backoff_initial=1, backoff_max_steps=2
    )
    assert decide(pol, 0, [], 0, 100.0)[0].action == "stay"
    times: list[float] = []
    d, step = decide(pol, 1, times, 0, 100.0)
    assert (d.action, d.delay, step) == ("restart", 0.0, 0)
    times += [100.0, 101.0]
    d, step = decide(pol, 1, times, 0, 102.0)
    assert (d.action, d.delay, step) == ("restart", 1.0, 1)
    d, step = decide(pol, 1, times, step, 103.0)
    assert (d.action, d.delay, step) == ("restart", 2.0, 2)
    d, step = decide(pol, 1, times, step, 104.0)
    assert d.action == "fail" and "flapping" in d.reason
    # Outside the window, the count and the back-off start over.
    d, step = decide(pol, 1, times, 2, 200.0)
    assert (d.action, step) == ("restart", 0) and times == []
    never = ProcessPolicy(restart="never")
    assert decide(never, -9, [], 0, 0.0)[0].action == "stay"
    always = ProcessPolicy(restart="always")
    assert decide(always, 0, [], 0, 0.0)[0].action == "restart"


def test_transition_table_is_enforced() -> None:
    published: list[tuple[str, object]] = []
    table = ProcessTable(lambda topic, body: published.append((topic, body)))
    rec = ProcessRecord(SpawnSpec(kind=Kind.WORKER, target="a:b", id="worker:t"), "supervisor")
    table.add(rec)
    assert table.transition(rec, ProcState.READY)
    assert not table.transition(rec, ProcState.READY)  # no-op, no event
    with pytest.raises(IllegalTransition):
        table.transition(rec, ProcState.STARTING)
    assert [t for t, _ in published] == ["proc.worker.worker:t.state"]
    # Every state can reach a terminal one, and every state has an entry.
    assert set(TRANSITIONS) == set(ProcState)
    for state, targets in TRANSITIONS.items():
        assert state not in targets


def test_the_zygote_preloads_only_the_sdks_of_configured_providers() -> None:
    from spacebot.supervisor.zygote_link import preload_modules

    anthropic, openai = "spacebot.llm.providers.anthropic", "spacebot.llm.providers.openai"

    def preload(providers: dict[str, dict[str, str]]) -> list[str]:
        if not providers:
            return preload_modules(config_mod.from_dict({}, {}))
        first = f"{next(iter(providers))}/m"
        tiers = dict.fromkeys(("light", "standard", "strong"), first)
        llm = {"providers": providers, "profiles": {"balanced": tiers}}
        return preload_modules(config_mod.from_dict({"llm": llm}, {}))

    local = {"local": {"kind": "openai_compatible", "base_url": "http://127.0.0.1:1/v1"}}
    assert openai in preload(local) and anthropic not in preload(local)
    claude = {"a": {"kind": "anthropic", "api_key": "k"}}
    assert anthropic in preload(claude) and openai not in preload(claude)
    assert {anthropic, openai} <= set(preload({**local, **claude}))
    none = preload({})
    assert anthropic not in none and openai not in none
    assert "msgspec" in none  # everything else stays
