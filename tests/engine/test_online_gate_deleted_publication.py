"""The gate judges a session's publications in order. One deleted before the gate judged it (DeleteAdapter, or the
registry's retention: only the latest publication of a running session is protected) gets a failed verdict
("deleted"), and the gate goes on with the later ones: their verdicts come, the live alias moves, and once the
session has ended its alias is settled."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from engine.jobs.core import JobState, Noticed
from engine.lora.state import EvalSummary
from engine.online.serving import OnlineServing
from engine.online.spec import (
    DELETED_VERDICT,
    AliasState,
    Controls,
    GateJudged,
    GateVerdict,
    OnlineOutput,
    Publication,
)
from engine.registry.records import version_not_found
from tests.engine.test_online_publication import _Controls

NOW = datetime.now(UTC)
PUBLICATIONS = (Publication("v1.0.1", 1, 1, 4, NOW), Publication("v1.0.2", 2, 5, 8, NOW))


class _Gate:
    """Every version passes; ``deleted`` ones are gone from the registry (NOT_FOUND, as LoraControl fetches them)."""

    base_model = "tiny"

    def __init__(self, *deleted: str) -> None:
        self.deleted = set(deleted)
        self.judged: list[str] = []

    async def evaluate(self, version: str, baseline_version: str | None) -> EvalSummary:
        self.judged.append(version)
        if version in self.deleted:
            raise version_not_found("tiny", version)
        return SimpleNamespace(passed=True, failed_checks=())  # type: ignore[return-value]


class _Ended(_Controls):
    """Controls whose alias an ended session's serving side settles (OnlineStore.end_alias)."""

    async def end_alias(self, session_id: str, *, untouched_for: float = 0.0) -> Controls | None:
        if self.c.alias_state is not AliasState.FOLLOWING:
            return None
        self.c = replace(self.c, alias_state=AliasState.KEPT if self.c.alias_version else AliasState.ENDED)
        return self.c


class _Sessions:
    def __init__(self, job: Any) -> None:
        self.job_ = job
        self.notes: list[object] = []

    async def job(self, session_id: str) -> Any:
        return self.job_

    async def note(self, session_id: str, *payloads: object, output: Any = None) -> None:
        self.notes.extend(payloads)
        self.output = output


def _serving(store: _Controls, gate: _Gate, tmp_path: Path, sessions: Any = None) -> OnlineServing:
    return OnlineServing(sessions=sessions, store=store, artifacts=None, client=None, router=None,  # type: ignore[arg-type]
                         gate=gate, adapters=None, cache_dir=tmp_path)  # type: ignore[arg-type]


def _session(state: JobState = JobState.RUNNING) -> Any:
    return SimpleNamespace(id="s1", state=state, spec=SimpleNamespace(base_model="tiny", start_version="v1.0"),
                           output=OnlineOutput(publications=PUBLICATIONS))


async def test_a_deleted_unjudged_publication_fails_the_gate_and_the_next_one_is_judged(tmp_path: Path) -> None:
    store, gate = _Controls(), _Gate("v1.0.1")
    serving = _serving(store, gate, tmp_path)
    await serving._follow(_session(), set())  # a tick: the gate judges them, off the tick
    await serving.judging_ended()  # no error, both judged
    assert store.c.gate("v1.0.1") == GateVerdict(passed=False, failed_checks=("deleted",)), (
        f"the deleted v1.0.1's verdict is {store.c.gate('v1.0.1')}: the gate would try it again at every tick")
    assert store.c.gate("v1.0.2") == GateVerdict(passed=True), "v1.0.2 is never judged"
    assert store.c.alias_version == "v1.0.2", f"the alias serves {store.c.alias_serves}, not v1.0.2 that passed"
    assert gate.judged == ["v1.0.1", "v1.0.2"]


async def test_an_ended_sessions_alias_is_settled_past_a_deleted_publication(tmp_path: Path) -> None:
    store, gate = _Ended(), _Gate("v1.0.1")
    sessions = _Sessions(_session(JobState.CANCELLED))
    serving = _serving(store, gate, tmp_path, sessions)
    assert (await serving._settle(store.c)).alias_state is AliasState.FOLLOWING  # the gate judges, off the tick
    await serving.judging_ended()
    settled = await serving._settle(store.c)  # the next tick
    assert settled.alias_state is AliasState.KEPT and settled.alias_version == "v1.0.2", settled
    assert [n.code for n in sessions.notes if isinstance(n, Noticed)] == ["LIVE_ALIAS_KEPT"], sessions.notes
    # the verdicts its worker never saw (it had ended) are told first, and recorded as told
    assert sessions.notes[:2] == [GateJudged("v1.0.1", DELETED_VERDICT), GateJudged("v1.0.2", GateVerdict(True))]
    assert sessions.output.verdicts_told == ("v1.0.1", "v1.0.2")


class _SlowGate(_Gate):
    """A gate whose evaluations take as long as the test says (a real one takes tens of seconds on a CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()

    async def evaluate(self, version: str, baseline_version: str | None) -> EvalSummary:
        await self.go.wait()
        return await super().evaluate(version, baseline_version)


async def test_a_long_evaluation_holds_up_no_tick(tmp_path: Path) -> None:
    """The gate was awaited in the tick: while it evaluated one session's publication (30 s seen through the
    gateway), no other session's new live adapter was loaded nor any alias routed. It judges in a task of its own,
    which the next ticks look at: a tick returns at once, one judgment a session at a time."""
    store, gate = _Controls(), _SlowGate()
    serving = _serving(store, gate, tmp_path)
    await asyncio.wait_for(serving._follow(_session(), set()), 5)  # returns with the evaluation under way
    await asyncio.wait_for(serving._follow(_session(), set()), 5)  # the next tick: no second judgment of it
    assert gate.judged == [] and store.c.gate("v1.0.1") is None
    gate.go.set()
    await serving.judging_ended()
    assert gate.judged == ["v1.0.1", "v1.0.2"], gate.judged
    assert store.c.alias_version == "v1.0.2" and store.c.gate("v1.0.2") == GateVerdict(passed=True)
