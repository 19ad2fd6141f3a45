"""The chaos soak, short: every kill class once against the real system, nothing lost or doubled.

Runs ``bench/chaos.py``'s driver (loaded by path: ``bench/`` is not a package) against a real
``spacebot run`` with 4 conversations (two of them with two people) of 4 questions, and one SIGKILL
of each class — channel, branch, worker, memory, gateway, zygote and the supervisor — at seeded
times while they talk; then audits every conversation through the web chat protocol. No timing is
asserted; every wait in the driver is bounded and generous.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("spacebot_bench_chaos", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


chaos = _load()


@pytest.mark.timeout(900)
async def test_every_kill_class_once_loses_and_doubles_nothing() -> None:
    plan = [(cls, "") for cls in chaos.CLASSES]
    r: dict[str, Any] = await chaos.run_seed(
        1, conversations=4, messages=4, plan=plan, pace=1.0, drain_timeout=180.0, keep=True, verbose=True
    )  # verbose: the kill timeline shows in the captured output of a failure
    evidence = {
        k: r[k]
        for k in (
            "unacked",
            "lost_tokens",
            "doubled_tokens",
            "orphan_pids",
            "left_after_stop",
            "kills",
            "skipped",
        )
    }
    evidence |= {"not_running": r["not_running_at_end"], "logs": r["logs"], "home": r["root"]}
    killed = {k["class"] for k in r["kills"]}
    assert killed == set(chaos.CLASSES), f"not every class was killed: {evidence}"
    assert r["sent"] == r["acked"] == 16, f"unacked {r['unacked']}; {evidence}"
    assert r["lost"] == 0, evidence
    assert r["doubled"] == 0, evidence
    assert r["orphans"] == 0, evidence
    assert r["answered_once"] == 16, evidence
    shutil.rmtree(r["root"], ignore_errors=True)  # kept above only so a failure leaves its logs


def test_the_audit_counts_lost_doubled_and_unacked_answers() -> None:
    """The audit itself, on hand-made histories: a soak that cannot see a loss proves nothing."""
    qs = [chaos.Question(0, "Ana0", 0, f"tok{i}", "plain") for i in range(4)]
    for q in qs[:3]:
        q.sent_at = q.acked_at = 1.0
    qs[3].sent_at = 1.0  # sent, never acked

    def user(q: Any) -> dict[str, Any]:
        return {"role": "user", "text": q.text}

    def reply(*answered: Any) -> dict[str, Any]:
        return {"role": "assistant", "text": "answer: " + "\n".join(f"[#1] {q.marker}" for q in answered)}

    history = [user(qs[0]), user(qs[1]), reply(qs[0]), user(qs[2]), reply(qs[2]), reply(qs[2]), user(qs[3])]
    r = chaos.audit(qs, [history])
    assert (r["sent"], r["acked"], r["stored"]) == (4, 3, 4)
    assert r["answered_once"] == 1  # tok0
    assert r["lost"] == 1 and r["lost_tokens"] == ["tok1(plain)"]
    assert r["doubled"] == 1 and r["doubled_tokens"] == ["tok2(answers=2,stored=1)"]
    assert r["unacked_unanswered"] == 1
