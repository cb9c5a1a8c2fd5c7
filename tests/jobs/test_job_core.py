"""The generic job core on an in-memory store with a toy kind: no database, no model (the fast tier)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.errors import AlreadyExists, FailedPrecondition, NotFound
from engine.jobs.core import Job, JobEvent, JobFailure, JobKind, JobProgress, JobState, StateChanged
from engine.jobs.manager import JobContext, JobManager, JobSlots
from engine.stores.memory import InMemoryJobStore


@dataclass(frozen=True)
class CountSpec:
    steps: int


@dataclass(frozen=True)
class CountOutput:
    counted: int = 0


@dataclass(frozen=True)
class Counted:
    n: int


COUNT = JobKind("count", "countJobs", CountSpec, CountOutput, event_types=(Counted,))


class CountRunner:
    """Counts to ``spec.steps``, one event a step, each step waiting for the test to release it."""

    kind = COUNT

    def __init__(self) -> None:
        self.release = asyncio.Semaphore(0)
        self.started = asyncio.Event()

    async def run(self, ctx: JobContext[CountSpec, CountOutput]) -> str:
        ctx.started(JobState.RUNNING, "counting", total_steps=ctx.job.spec.steps)
        self.started.set()
        for n in range(1, ctx.job.spec.steps + 1):
            await self.release.acquire()
            if ctx.cancel.cancelled:
                from engine.errors import Cancelled

                raise Cancelled("JOB_CANCELLED", f"cancelled at step {n}")
            ctx.record(Counted(n))
        return f"counted to {ctx.job.spec.steps}"

    def fold(self, job: Job[CountSpec, CountOutput], payload: object) -> Job[CountSpec, CountOutput]:
        if isinstance(payload, Counted):
            return replace(job, output=CountOutput(payload.n), progress=JobProgress(payload.n, job.spec.steps))
        return job


class FlakyStore(InMemoryJobStore[CountSpec, CountOutput]):
    """The in-memory store, with writes that fail while ``down`` (a database restarting)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.refused = 0

    def _check(self) -> None:
        if self.down:
            self.refused += 1
            raise ConnectionError("the database is restarting")

    async def append_events(self, job_id: str, events) -> None:
        self._check()
        await super().append_events(job_id, events)

    async def update_job(self, job) -> None:
        self._check()
        await super().update_job(job)


@pytest.fixture
def store() -> FlakyStore:
    return FlakyStore()


@pytest.fixture
async def manager(store: FlakyStore, tmp_path: Path):
    slots = JobSlots(1)
    mgr = JobManager(runner=CountRunner(), store=store, work_dir=tmp_path, slots=slots)
    yield mgr
    for _ in range(100):
        mgr.runner.release.release()
    await mgr.shutdown()
    slots.shutdown()


async def _until_ended(mgr: JobManager, job_id: str) -> list[Job | JobEvent]:
    return [item async for item in mgr.watch(job_id)]


async def test_a_job_runs_through_its_states_and_its_events_fold_into_it(manager, store):
    job = await manager.submit(manager.new_job(CountSpec(3), CountOutput()))
    for _ in range(3):
        manager.runner.release.release()
    items = await _until_ended(manager, job.id)
    events = [i for i in items if isinstance(i, JobEvent)]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    states = [e.payload.state for e in events if isinstance(e.payload, StateChanged)]
    assert states == [JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]
    assert [e.payload.n for e in events if isinstance(e.payload, Counted)] == [1, 2, 3]
    stored = await manager.get(job.id)
    assert stored.state is JobState.SUCCEEDED and stored.output == CountOutput(3)
    assert stored.progress == JobProgress(3, 3, 0.0) and stored.name == f"countJobs/{job.id}"
    assert stored.last_sequence == events[-1].sequence
    assert await store.list_events(job.id, after_sequence=0) == events


async def test_events_written_while_the_store_is_down_are_stored_after_it_returns(manager, store):
    """A write that fails keeps its events pending: the stored log has no gap, and a client resuming by sequence
    number after the outage sees every event."""
    job = await manager.submit(manager.new_job(CountSpec(4), CountOutput()))
    await manager.runner.started.wait()
    store.down = True
    manager.runner.release.release()
    manager.runner.release.release()
    watcher = manager.watch(job.id)
    seen = []
    async for item in watcher:  # live events keep flowing to watchers during the outage
        seen.append(item)
        if isinstance(item, JobEvent) and isinstance(item.payload, Counted) and item.payload.n == 2:
            break
    await watcher.aclose()
    assert store.refused > 0, "the outage was not hit"
    store.down = False
    manager.runner.release.release()
    manager.runner.release.release()
    events = [i for i in await _until_ended(manager, job.id) if isinstance(i, JobEvent)]
    stored = await store.list_events(job.id, after_sequence=0)
    assert [e.sequence for e in stored] == list(range(1, events[-1].sequence + 1)), "a gap in the stored log"
    assert stored == events
    assert (await store.get_job(job.id)).state is JobState.SUCCEEDED
    resumed = [i for i in await _until_ended(manager, job.id) if isinstance(i, JobEvent)]
    assert resumed == stored  # an ended job's watch replays the stored log
    after = [i async for i in manager.watch(job.id, after_sequence=3)]
    assert [e.sequence for e in after if isinstance(e, JobEvent)] == [e.sequence for e in stored[3:]]


async def test_request_ids_make_creation_idempotent(manager):
    first = await manager.submit(manager.new_job(CountSpec(1), CountOutput(), request_id="r-1"))
    again = await manager.submit(manager.new_job(CountSpec(1), CountOutput(), request_id="r-1"))
    assert again.id == first.id
    with pytest.raises(AlreadyExists) as caught:
        await manager.submit(manager.new_job(CountSpec(2), CountOutput(), request_id="r-1"))
    assert caught.value.reason == "REQUEST_ID_REUSED"


async def test_cancel_ends_a_running_job_and_is_refused_once_it_ended(manager):
    job = await manager.submit(manager.new_job(CountSpec(5), CountOutput()))
    await manager.runner.started.wait()
    cancelling = await manager.cancel(job.id)
    assert cancelling.state is JobState.CANCELLING
    manager.runner.release.release()
    await _until_ended(manager, job.id)
    ended = await manager.get(job.id)
    assert ended.state is JobState.CANCELLED and ended.failure is not None
    assert ended.failure.reason == "JOB_CANCELLED"
    with pytest.raises(FailedPrecondition) as caught:
        await manager.cancel(job.id)
    assert caught.value.metadata == {"state": "CANCELLED"}
    with pytest.raises(NotFound):
        await manager.get("nosuchjob")


async def test_recovery_requeues_queued_jobs_and_fails_the_ones_that_were_running(store, tmp_path):
    now = datetime.now(UTC)
    queued = Job("q1", "count", CountSpec(1), CountOutput(), JobState.QUEUED, now)
    running = Job("r1", "count", CountSpec(1), CountOutput(), JobState.RUNNING, now)
    for job in (queued, running):
        await store.insert_job(job)
    slots = JobSlots(1)
    mgr = JobManager(runner=CountRunner(), store=store, work_dir=tmp_path, slots=slots)
    try:
        await mgr.recover()
        mgr.runner.release.release()
        await _until_ended(mgr, "q1")
        assert (await mgr.get("q1")).state is JobState.SUCCEEDED
        failed = await mgr.get("r1")
        assert failed.state is JobState.FAILED
        assert failed.failure == JobFailure("ABORTED", "SERVER_RESTARTED", "the server restarted while the job ran")
    finally:
        await mgr.shutdown()
        slots.shutdown()


async def test_kinds_share_one_slot_so_one_job_runs_at_a_time(store, tmp_path):
    slots = JobSlots(1)
    first = JobManager(runner=CountRunner(), store=store, work_dir=tmp_path / "a", slots=slots)
    second = JobManager(runner=CountRunner(), store=InMemoryJobStore(), work_dir=tmp_path / "b", slots=slots)
    try:
        a = await first.submit(first.new_job(CountSpec(1), CountOutput()))
        b = await second.submit(second.new_job(CountSpec(1), CountOutput()))
        await first.runner.started.wait()
        assert (await second.get(b.id)).state is JobState.QUEUED, "a second job ran beside the first"
        first.runner.release.release()
        await _until_ended(first, a.id)
        await second.runner.started.wait()
        second.runner.release.release()
        await _until_ended(second, b.id)
        assert (await second.get(b.id)).state is JobState.SUCCEEDED
    finally:
        await first.shutdown()
        await second.shutdown()
        slots.shutdown()


async def test_pages_are_newest_first_with_an_opaque_token(manager):
    jobs = [await manager.submit(manager.new_job(CountSpec(1), CountOutput())) for _ in range(3)]
    page, token = await manager.list(states=[], page_size=2, page_token="")
    rest, end = await manager.list(states=[], page_size=2, page_token=token)
    assert [j.id for j in page + rest] == [j.id for j in reversed(jobs)] and token and end == ""
