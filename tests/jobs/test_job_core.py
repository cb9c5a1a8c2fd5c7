"""The generic job core on an in-memory store with a toy kind: no database, no model (the fast tier)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.errors import AlreadyExists, Cancelled, FailedPrecondition, NotFound
from engine.jobs.context import JobContext, JobSlots
from engine.jobs.core import Control, Job, JobEvent, JobKind, JobProgress, JobState, Noticed, StateChanged
from engine.jobs.manager import JobManager
from engine.stores.memory import InMemoryJobStore, InProcessQueue


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
        self.ended = asyncio.Event()

    async def run(self, ctx: JobContext[CountSpec, CountOutput]) -> str:
        try:
            ctx.started(JobState.RUNNING, "counting", total_steps=ctx.job.spec.steps)
            self.started.set()
            for n in range(1, ctx.job.spec.steps + 1):
                await self.release.acquire()
                if ctx.cancel.cancelled:
                    raise Cancelled("JOB_CANCELLED", f"cancelled at step {n}")
                ctx.record(Counted(n))
            return f"counted to {ctx.job.spec.steps}"
        finally:
            self.ended.set()

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

    async def write(self, job, events, lease) -> None:
        if self.down:
            self.refused += 1
            raise ConnectionError("the database is restarting")
        await super().write(job, events, lease)


@pytest.fixture
def store() -> FlakyStore:
    return FlakyStore()


async def make_manager(store, work_dir: Path, slots: JobSlots, queue: InProcessQueue | None = None) -> JobManager:
    """A manager of the counting kind whose in-process queue runs its jobs."""
    queue = queue or InProcessQueue()
    mgr = JobManager(runner=CountRunner(), store=store, queue=queue, work_dir=work_dir, slots=slots,
                     control_poll_seconds=0.01, watch_poll_seconds=0.05)
    queue.start_worker({COUNT.name: lambda kind, job_id: mgr.execute(job_id)}, concurrency=slots.max_concurrent_jobs,
                       name="test")
    mgr.test_queue = queue  # type: ignore[attr-defined]
    return mgr


async def stop(mgr: JobManager) -> None:
    """As the server stops: running jobs are told to stop while the queue stops handing out new ones."""
    for _ in range(100):
        mgr.runner.release.release()
    await asyncio.gather(mgr.shutdown(), mgr.test_queue.stop_worker())  # type: ignore[attr-defined]


@pytest.fixture
async def manager(store: FlakyStore, tmp_path: Path):
    slots = JobSlots(1)
    mgr = await make_manager(store, tmp_path, slots)
    yield mgr
    await stop(mgr)
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
    """A write that fails keeps its events pending and is retried: the stored log has no gap, a watcher is shown
    the events once they are stored (not before: the worker could lose the job with them), with no further event
    needed to store them, and a client resuming by sequence number after the outage sees every event."""
    job = await manager.submit(manager.new_job(CountSpec(4), CountOutput()))
    await manager.runner.started.wait()
    store.down = True
    manager.runner.release.release()
    manager.runner.release.release()
    live = manager._live[job.id]
    async with asyncio.timeout(10):
        while not (any(isinstance(e.payload, Counted) and e.payload.n == 2 for e in live.events) and store.refused):
            await asyncio.sleep(0.01)
    shown_before = len(await store.list_events(job.id, after_sequence=0))
    watcher = manager.watch(job.id)
    seen = []

    async def until_counted_2() -> None:
        async for item in watcher:
            seen.append(item)
            if isinstance(item, JobEvent) and isinstance(item.payload, Counted) and item.payload.n == 2:
                return

    waiting = asyncio.get_running_loop().create_task(until_counted_2())
    await asyncio.sleep(0.3)  # the outage goes on: what is not stored is not shown
    assert not waiting.done() and len([i for i in seen if isinstance(i, JobEvent)]) == shown_before, (
        f"a watcher was shown events the store did not hold: {seen}")
    store.down = False  # the pending write's retry stores them, and the watcher is shown them
    async with asyncio.timeout(10):
        await waiting
    await watcher.aclose()
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


async def test_a_job_that_ended_takes_a_note_on_its_log_and_a_late_write_of_its_worker_keeps_it(manager, store):
    job = await manager.submit(manager.new_job(CountSpec(1), CountOutput()))
    manager.runner.release.release()
    await _until_ended(manager, job.id)
    ended = await manager.get(job.id)
    assert store.lease_token(job.id) is not None  # its worker's lease is left on it, but guards nothing any more
    noted = await manager.note(job.id, Noticed("LEFT_BEHIND", "what became of what it left"))
    assert noted.last_sequence == ended.last_sequence + 1 and noted.state is JobState.SUCCEEDED
    await store.write(ended, [], store.held[job.id].lease)  # a late flush of the job as its worker last had it
    assert (await manager.get(job.id)).last_sequence == noted.last_sequence
    items = await _until_ended(manager, job.id)  # a watcher sees the note after the end
    assert items[-1].payload == Noticed("LEFT_BEHIND", "what became of what it left")


async def test_recovery_queues_again_what_the_store_holds_as_queued(store, tmp_path):
    queued = Job("q1", "count", CountSpec(1), CountOutput(), JobState.QUEUED, datetime.now(UTC))
    await store.insert_job(queued)
    slots = JobSlots(1)
    mgr = await make_manager(store, tmp_path, slots)
    try:
        await mgr.recover()
        mgr.runner.release.release()
        await _until_ended(mgr, "q1")
        assert (await mgr.get("q1")).state is JobState.SUCCEEDED
    finally:
        await stop(mgr)
        slots.shutdown()


async def test_a_worker_that_lost_its_job_writes_nothing_more(store, tmp_path):
    """Another worker's claim replaces the lease: the first worker's next write is refused (fenced), it stops,
    and the job's log holds only what its current holder wrote after the takeover."""
    slots = JobSlots(1)
    first = await make_manager(store, tmp_path / "a", slots)
    try:
        job = await first.submit(first.new_job(CountSpec(3), CountOutput()))
        await first.runner.started.wait()
        taken = await store.claim(job.id, "worker-b")  # the other worker, after the first one's heartbeat stopped
        assert taken is not None and taken.previous_owner == first.worker_id
        for _ in range(3):
            first.runner.release.release()
        await first.runner.ended.wait()
        await stop(first)  # waits for the worker's last writes (refused) to settle
        stored = await store.get_job(job.id)
        assert stored.state is JobState.RUNNING, "the fenced worker ended the job it no longer held"
        assert not any(isinstance(e.payload, Counted) for e in await store.list_events(job.id, after_sequence=0))
    finally:
        await stop(first)
        slots.shutdown()


async def test_pause_and_resume_continue_on_any_worker_and_cancel_works_in_every_state(manager, store):
    job = await manager.submit(manager.new_job(CountSpec(2), CountOutput()))
    await manager.runner.started.wait()
    pausing = await manager.pause(job.id)
    assert pausing.state is JobState.PAUSING
    manager.runner.release.release()
    await _until_ended(manager, job.id)
    paused = await manager.get(job.id)
    assert paused.state is JobState.PAUSED
    with pytest.raises(FailedPrecondition) as caught:
        await manager.pause(job.id)
    assert caught.value.reason == "JOB_NOT_PAUSABLE" and caught.value.metadata == {"state": "PAUSED"}
    running_job = await manager.submit(manager.new_job(CountSpec(1), CountOutput()))
    with pytest.raises(FailedPrecondition) as caught:
        await manager.resume(running_job.id)
    assert caught.value.reason == "JOB_NOT_RESUMABLE"
    resumed = await manager.resume(job.id)
    assert resumed.state is JobState.QUEUED
    cancelled = await manager.cancel(job.id)  # queued again, not yet taken: cancelled at once
    assert cancelled.state is JobState.CANCELLED
    states = [e.payload.state for e in await store.list_events(job.id, after_sequence=0)
              if isinstance(e.payload, StateChanged)]
    assert states == [JobState.QUEUED, JobState.RUNNING, JobState.PAUSING, JobState.PAUSED, JobState.QUEUED,
                      JobState.CANCELLED]


async def test_kinds_share_one_slot_so_one_job_runs_at_a_time(store, tmp_path):
    slots = JobSlots(1)
    first = await make_manager(store, tmp_path / "a", slots)
    second = await make_manager(InMemoryJobStore(), tmp_path / "b", slots)
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
        await stop(first)
        await stop(second)
        slots.shutdown()


async def test_pages_are_newest_first_with_an_opaque_token(manager):
    jobs = [await manager.submit(manager.new_job(CountSpec(1), CountOutput())) for _ in range(3)]
    page, token = await manager.list(states=[], page_size=2, page_token="")
    rest, end = await manager.list(states=[], page_size=2, page_token=token)
    assert [j.id for j in page + rest] == [j.id for j in reversed(jobs)] and token and end == ""


async def test_a_cancel_overrides_a_pause_asked_before_it(manager, store, tmp_path):
    """Here, on another replica (through the store) and after the worker last looked: the job ends CANCELLED."""
    job = await manager.submit(manager.new_job(CountSpec(9), CountOutput()))
    await manager.runner.started.wait()
    assert (await manager.pause(job.id)).state is JobState.PAUSING
    assert (await manager.cancel(job.id)).state is JobState.CANCELLING
    manager.runner.release.release()
    await _until_ended(manager, job.id)
    assert (await manager.get(job.id)).state is JobState.CANCELLED

    api = JobManager(runner=CountRunner(), store=store, queue=InProcessQueue(), work_dir=tmp_path / "api",
                     slots=JobSlots(1))  # a replica without a worker: it steers through the store
    manager.runner.started.clear()
    job = await api.submit(api.new_job(CountSpec(9), CountOutput()))
    await manager.test_queue.enqueue(COUNT.name, job.id)
    await manager.runner.started.wait()
    assert (await api.pause(job.id)).state is JobState.PAUSING
    assert (await api.cancel(job.id)).state is JobState.CANCELLING
    await _until_recorded(store, job.id, JobState.CANCELLING)  # the worker saw the request
    manager.runner.release.release()
    await _until_recorded(store, job.id, JobState.CANCELLED)


async def _until_recorded(store, job_id: str, state: JobState) -> None:
    """Until the job's stored log holds a change to ``state``."""
    while not any(isinstance(e.payload, StateChanged) and e.payload.state is state
                  for e in await store.list_events(job_id, after_sequence=0)):
        await store.wait_for_events(job_id, 0.05)


class LateCancelStore(InMemoryJobStore[CountSpec, CountOutput]):
    """A cancel that reaches the store just as the worker releases the job it paused."""

    async def release(self, job, events, lease):
        self.held[job.id].requested = Control.CANCEL
        return await super().release(job, events, lease)


async def test_a_cancel_asked_as_the_job_is_released_is_carried_out(tmp_path):
    store, slots = LateCancelStore(), JobSlots(1)
    mgr = await make_manager(store, tmp_path, slots)
    try:
        job = await mgr.submit(mgr.new_job(CountSpec(9), CountOutput()))
        await mgr.runner.started.wait()
        await mgr.pause(job.id)
        mgr.runner.release.release()
        await _until_recorded(store, job.id, JobState.CANCELLED)
        states = [e.payload.state for e in await store.list_events(job.id, after_sequence=0)
                  if isinstance(e.payload, StateChanged)]
        assert states == [JobState.QUEUED, JobState.RUNNING, JobState.PAUSING, JobState.PAUSED, JobState.CANCELLED]
    finally:
        await stop(mgr)
        slots.shutdown()


async def test_a_waiter_cancelled_as_it_is_woken_stays_cancelled():
    # On Python 3.11 asyncio.wait_for returned the result of a wait woken in the same turn as its cancellation, and
    # the cancellation was lost (a worker asked to stop would wait on); the store's timed wait keeps it.
    store = InMemoryJobStore[CountSpec, CountOutput]()
    waiter = asyncio.create_task(store.wait_for_events("some-job", 30))
    await asyncio.sleep(0)  # it waits on the store's condition
    async with store._changed:
        store._changed.notify_all()
        waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
