"""A watch of an ended online session goes on while its live alias is not settled (engine.online.service
OnlineSessions.watch), to what a serving process says then. Two ways it went wrong: the alias's end, already on the
log when the watch came, was not noticed among the session's own events, so the watch waited SETTLED_UNTOLD_SECONDS
(30 s) more; and with no serving process to settle the alias (none runs for the base model, or the gate keeps
failing) it never ended. The job store and the controls are stand-ins here; the manager's watch_ended is the real
one (engine.jobs.watching)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from engine.jobs.core import JobEvent, JobState, Noticed, StateChanged
from engine.jobs.watching import watch_ended
from engine.online import service
from engine.online.service import OnlineSessions
from engine.online.spec import AliasState, Controls

NOW = datetime.now(UTC)


class _Log:
    """The session's stored log (what watch_ended reads), and its job as the manager shows it."""

    def __init__(self, *events: object) -> None:
        self.events = [JobEvent(i + 1, NOW, p) for i, p in enumerate(events)]
        self.added = asyncio.Event()

    def add(self, payload: object) -> None:
        self.events.append(JobEvent(len(self.events) + 1, NOW, payload))
        self.added.set()

    async def notified(self, job_id: str) -> int:
        return len(self.events)

    async def list_events(self, job_id: str, *, after_sequence: int) -> list[JobEvent]:
        return [e for e in self.events if e.sequence > after_sequence]

    async def wait_for_events(self, job_id: str, timeout: float, since: int | None = None) -> None:
        if since is not None and since < len(self.events):
            return
        self.added.clear()
        try:
            await asyncio.wait_for(self.added.wait(), timeout)
        except TimeoutError:
            pass


class _Manager:
    def __init__(self, log: _Log) -> None:
        self.log = log
        self.job = SimpleNamespace(id="s", state=JobState.CANCELLED)

    async def watch(self, job_id: str, *, after_sequence: int = 0):
        yield self.job
        for event in list(self.log.events):  # the log as the session's end left it
            if event.sequence > after_sequence:
                yield event

    async def get(self, job_id: str) -> Any:
        return self.job

    async def events(self, job_id: str) -> tuple[Any, list[JobEvent]]:
        return self.job, list(self.log.events)

    def watch_ended(self, job_id: str, *, after_sequence: int, done):
        return watch_ended(job_id, after_sequence, store=self.log, poll_seconds=0.05, done=done)


class _Controls:
    def __init__(self, state: AliasState) -> None:
        self.state = state

    async def controls(self, session_id: str) -> Controls:
        return Controls(session_id, enabled=True, learning_rate=1e-4, live_alias="live", alias_state=self.state)


def _sessions(log: _Log, controls: _Controls) -> OnlineSessions:
    return OnlineSessions(_Manager(log), controls, registry=None, active_version=lambda base: "",  # type: ignore[arg-type]
                          reserved_names=(), max_example_chars=1000)


async def _codes(sessions: OnlineSessions, after: int = 0) -> list[str]:
    async with asyncio.timeout(20):  # a guard against hanging, not a measure: the waits patched below are an hour
        return [getattr(item.payload, "code", type(item.payload).__name__)
                async for item in sessions.watch("s", after_sequence=after) if isinstance(item, JobEvent)]


@pytest.fixture(autouse=True)
def _long_waits(monkeypatch) -> None:
    monkeypatch.setattr(service, "SETTLED_UNTOLD_SECONDS", 3600.0)
    monkeypatch.setattr(service, "SETTLE_WAIT_SECONDS", 3600.0)


@pytest.mark.parametrize("after", [0, 2])
async def test_an_alias_end_already_on_the_log_ends_the_watch_with_it(after: int) -> None:
    log = _Log(StateChanged(JobState.RUNNING, JobState.CANCELLED), Noticed("LIVE_ALIAS_KEPT", "kept"))
    assert await _codes(_sessions(log, _Controls(AliasState.KEPT)), after) == ["StateChanged", "LIVE_ALIAS_KEPT"][
        after:]


async def test_the_watch_waits_for_the_alias_to_be_settled_and_ends_with_it() -> None:
    log = _Log(StateChanged(JobState.RUNNING, JobState.CANCELLED))
    controls = _Controls(AliasState.FOLLOWING)

    async def settle() -> None:  # a serving process, once the gate judged the last publication
        await asyncio.sleep(0.2)
        controls.state = AliasState.KEPT
        await asyncio.sleep(0.2)  # its notice comes in a write of its own, after the controls'
        log.add(Noticed("LIVE_ALIAS_KEPT", "kept"))

    settling = asyncio.ensure_future(settle())
    assert await _codes(_sessions(log, controls)) == ["StateChanged", "LIVE_ALIAS_KEPT"]
    await settling


async def test_an_alias_no_one_settles_ends_the_watch_after_the_wait(monkeypatch) -> None:
    monkeypatch.setattr(service, "SETTLE_WAIT_SECONDS", 0.3)
    log = _Log(StateChanged(JobState.RUNNING, JobState.CANCELLED))
    assert await _codes(_sessions(log, _Controls(AliasState.FOLLOWING))) == ["StateChanged"]


async def test_a_session_without_an_alias_ends_the_watch_at_its_end() -> None:
    log = _Log(StateChanged(JobState.RUNNING, JobState.CANCELLED))
    assert await _codes(_sessions(log, _Controls(AliasState.NONE))) == ["StateChanged"]
