"""The job core when something lands while it is in the middle of something else: a request while the worker lets
go of a job, a crash after the worker accepted a request, a shutdown while a job waits for a slot or is being
claimed, an event while a write is in flight, a client retrying a request whose queueing failed. On the in-memory
store and queue, each step held by an event, not by time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.errors import FailedPrecondition
from engine.jobs.context import JobSlots
from engine.jobs.core import JobState, Noticed, StateChanged
from engine.jobs.manager import JobManager
from engine.stores.memory import InMemoryJobStore, InProcessQueue
from tests.jobs.test_job_core import (
    COUNT,
    CountOutput,
    CountRunner,
    CountSpec,
    _until_ended,
    _until_recorded,
    make_manager,
    stop,
)

WAIT = 10  # seconds: only how long a broken test takes to fail


async def _stored(store: InMemoryJobStore, job_id: str, state: JobState) -> None:
    """Until the job's stored log holds a change to ``state`` (an AssertionError if it never does)."""
    try:
        async with asyncio.timeout(WAIT):
            await _until_recorded(store, job_id, state)
    except TimeoutError:
        job = await store.get_job(job_id)
        raise AssertionError(f"{state.value} never stored; the job is {job.state.value if job else None}") from None


async def _states(store: InMemoryJobStore, job_id: str) -> list[JobState]:
    return [e.payload.state for e in await store.list_events(job_id, after_sequence=0)
            if isinstance(e.payload, StateChanged)]


class HeldReleaseStore(InMemoryJobStore[CountSpec, CountOutput]):
    """Releases that fail ``failures`` times, then wait for ``go``: the moments a request can land meanwhile."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.failures = failures
        self.releasing, self.failed, self.go = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def release(self, job, events, lease):
        if self.failures:
            self.failures -= 1
            self.failed.set()
            raise ConnectionError("the database is restarting")
        self.releasing.set()
        await self.go.wait()
        return await super().release(job, events, lease)


async def test_a_cancel_asked_here_while_a_paused_job_is_released_is_carried_out(tmp_path: Path):
    """The worker is writing the job PAUSED when a client of this replica cancels it: the cancel, answered
    CANCELLING, is not lost with the release's pending events; the job ends CANCELLED."""
    store, slots = HeldReleaseStore(), JobSlots(1)
    mgr = await make_manager(store, tmp_path, slots)
    try:
        job = await mgr.submit(mgr.new_job(CountSpec(5), CountOutput()))
        await mgr.runner.started.wait()
        await mgr.pause(job.id)
        mgr.runner.release.release()  # the runner sees the pause at its next step
        await store.releasing.wait()
        assert (await mgr.cancel(job.id)).state is JobState.CANCELLING
        store.go.set()
        await _stored(store, job.id, JobState.CANCELLED)
        assert await _states(store, job.id) == [JobState.QUEUED, JobState.RUNNING, JobState.PAUSING,
                                                JobState.PAUSED, JobState.CANCELLED]
    finally:
        store.go.set()
        await stop(mgr)
        slots.shutdown()


async def test_a_cancel_asked_between_two_attempts_of_a_release_is_carried_out(tmp_path: Path):
    """The first release of a paused job fails (the database restarting) and the cancel lands before the retry:
    the job ends CANCELLED, not CANCELLING with no worker holding it and nothing queued."""
    store, slots = HeldReleaseStore(failures=1), JobSlots(1)
    mgr = await make_manager(store, tmp_path, slots)
    try:
        job = await mgr.submit(mgr.new_job(CountSpec(5), CountOutput()))
        await mgr.runner.started.wait()
        await mgr.pause(job.id)
        mgr.runner.release.release()
        await store.failed.wait()  # retried after a short backoff
        assert (await mgr.cancel(job.id)).state is JobState.CANCELLING
        store.go.set()
        await _stored(store, job.id, JobState.CANCELLED)
        await _until_ended(mgr, job.id)
        assert (await store.get_job(job.id)).state is JobState.CANCELLED
        assert not mgr._live and store.lease_token(job.id) is None
    finally:
        store.go.set()
        await stop(mgr)
        slots.shutdown()


async def test_a_cancel_accepted_by_the_worker_holding_the_job_survives_its_crash(tmp_path: Path):
    """A cancel served by the replica whose worker runs the job is stored as the request it is, not only kept in
    that worker's memory: the worker taking the job over after it stopped carries it out."""
    store = InMemoryJobStore[CountSpec, CountOutput]()
    slots_a, slots_b = JobSlots(1), JobSlots(1)
    a = await make_manager(store, tmp_path / "a", slots_a)
    b = JobManager(runner=CountRunner(), store=store, queue=InProcessQueue(), work_dir=tmp_path / "b", slots=slots_b,
                   control_poll_seconds=0.01, watch_poll_seconds=0.05)
    try:
        job = await a.submit(a.new_job(CountSpec(2), CountOutput()))
        await a.runner.started.wait()
        assert (await a.cancel(job.id)).state is JobState.CANCELLING
        # Worker A stops here (killed, or its heartbeat lost) before its next step; the queue hands the job to B.
        for _ in range(2):
            b.runner.release.release()
        await b.execute(job.id)
        ended = await store.get_job(job.id)
        assert ended.state is JobState.CANCELLED, f"the accepted cancel was lost: the job ended {ended.state.value}"
        events = await store.list_events(job.id, after_sequence=0)
        assert any(isinstance(e.payload, Noticed) and e.payload.code == "TAKEN_OVER" for e in events)
    finally:
        await b.shutdown()
        await stop(a)
        slots_a.shutdown()
        slots_b.shutdown()


async def test_shutdown_starts_no_job_that_was_waiting_for_a_slot(tmp_path: Path):
    """A queue that hands a worker more jobs than it has slots (a worker given more queue places than slots): a job
    waiting for a slot when the worker begins to stop is left to another worker, not started."""
    store, slots, queue = InMemoryJobStore[CountSpec, CountOutput](), JobSlots(1), InProcessQueue()
    mgr = JobManager(runner=CountRunner(), store=store, queue=queue, work_dir=tmp_path, slots=slots,
                     control_poll_seconds=0.01, watch_poll_seconds=0.05)
    handed: dict[str, asyncio.Event] = {}

    async def execute(kind: str, job_id: str) -> None:
        handed.setdefault(job_id, asyncio.Event()).set()
        await mgr.execute(job_id)  # waits for the slot at once when it is taken

    queue.start_worker({COUNT.name: execute}, concurrency=2, name="test")
    stopping: asyncio.Future[None] | None = None
    try:
        first = await mgr.submit(mgr.new_job(CountSpec(3), CountOutput()))
        await mgr.runner.started.wait()
        second = await mgr.submit(mgr.new_job(CountSpec(3), CountOutput()))
        await handed.setdefault(second.id, asyncio.Event()).wait()
        mgr.runner.started.clear()
        shutting = asyncio.ensure_future(mgr.shutdown())
        stopping = asyncio.ensure_future(queue.stop_worker())  # together, as the server stops
        mgr.runner.release.release()  # the first job reaches its next step and is queued again
        async with asyncio.timeout(WAIT):
            await shutting
        done, _ = await asyncio.wait({stopping}, timeout=WAIT)
        assert done and not mgr.runner.started.is_set(), "the waiting job started after the worker began to stop"
        assert (await store.get_job(first.id)).state is JobState.QUEUED
        assert (await store.get_job(second.id)).state is JobState.QUEUED
    finally:
        for _ in range(10):
            mgr.runner.release.release()
        if stopping is not None:
            await stopping
        slots.shutdown()


class HeldClaimStore(InMemoryJobStore[CountSpec, CountOutput]):
    """The read of a job's log right after its claim waits for ``go`` (``reading`` is set once it does): the
    database round trips of a claim, which a stop can land in."""

    def __init__(self) -> None:
        super().__init__()
        self.claimed: set[str] = set()
        self.reading, self.go = asyncio.Event(), asyncio.Event()

    async def claim(self, job_id, owner):
        claim = await super().claim(job_id, owner)
        self.claimed.add(job_id)
        return claim

    async def list_events(self, job_id, *, after_sequence):
        if job_id in self.claimed:
            self.claimed.discard(job_id)
            self.reading.set()
            await self.go.wait()
        return await super().list_events(job_id, after_sequence=after_sequence)


async def test_shutdown_while_a_job_is_being_claimed_stops_it_before_it_starts(tmp_path: Path):
    """The worker begins to stop (SIGTERM) after it took a job's slot and while it claims the job: the stop found no
    job held, and the job, held from then on, ran to its end (a worker that does not drain, killed by its
    orchestrator). It is let go of before it starts, QUEUED for another worker."""
    store, slots = HeldClaimStore(), JobSlots(1)
    mgr = await make_manager(store, tmp_path, slots)
    stopping: asyncio.Future[None] | None = None
    try:
        job = await mgr.submit(mgr.new_job(CountSpec(3), CountOutput()))
        async with asyncio.timeout(WAIT):
            await store.reading.wait()  # claimed; its log being read
        shutting = asyncio.ensure_future(mgr.shutdown())
        stopping = asyncio.ensure_future(mgr.test_queue.stop_worker())  # together, as the server stops
        await asyncio.sleep(0)
        store.go.set()  # the read answers
        async with asyncio.timeout(WAIT):
            await shutting
            while await _states(store, job.id) == [JobState.QUEUED] and not mgr.runner.started.is_set():
                await asyncio.sleep(0.01)  # until it is let go of, or starts
        assert not mgr.runner.started.is_set(), "the job being claimed when the worker began to stop started"
        async with asyncio.timeout(WAIT):
            await stopping
        assert await _states(store, job.id) == [JobState.QUEUED, JobState.QUEUED]
        assert store.lease_token(job.id) is None
    finally:
        store.go.set()
        for _ in range(10):
            mgr.runner.release.release()
        if stopping is not None:
            await stopping
        slots.shutdown()


class HeldWriteStore(InMemoryJobStore[CountSpec, CountOutput]):
    """Its first write waits for ``go``: a write in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.writing, self.go = asyncio.Event(), asyncio.Event()

    async def write(self, job, events, lease) -> None:
        if not self.writing.is_set():
            self.writing.set()
            await self.go.wait()
        await super().write(job, events, lease)


async def test_an_event_recorded_while_a_write_is_in_flight_is_stored_after_it(tmp_path: Path):
    """It is written once the write in flight ends, not left pending until the job records another (the store,
    and so every other replica, would show a stale state meanwhile: here for as long as the step lasts)."""
    store, slots = HeldWriteStore(), JobSlots(1)
    mgr = await make_manager(store, tmp_path, slots)
    try:
        job = await mgr.submit(mgr.new_job(CountSpec(2), CountOutput()))
        await store.writing.wait()  # the RUNNING event's write
        await mgr.cancel(job.id)  # records CANCELLING meanwhile
        store.go.set()
        await _stored(store, job.id, JobState.CANCELLING)
    finally:
        store.go.set()
        await stop(mgr)
        slots.shutdown()


class FailingOnceQueue(InProcessQueue):
    """The in-process queue, whose first enqueue fails (the database restarting)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def enqueue(self, kind: str, job_id: str, *, priority: int = 0) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the database is restarting")
        await super().enqueue(kind, job_id, priority=priority)


async def test_a_submit_retried_after_its_queueing_failed_runs(tmp_path: Path):
    """The job was stored, then queueing it failed and the client was told so: its retry, with the same request
    id, queues the stored job instead of returning it QUEUED with nothing to run it."""
    slots = JobSlots(1)
    mgr = await make_manager(InMemoryJobStore(), tmp_path, slots, FailingOnceQueue())
    try:
        job = mgr.new_job(CountSpec(1), CountOutput(), request_id="r-1")
        with pytest.raises(ConnectionError):
            await mgr.submit(job)
        again = await mgr.submit(mgr.new_job(CountSpec(1), CountOutput(), request_id="r-1"))
        assert again.id == job.id and again.state is JobState.QUEUED
        mgr.runner.release.release()
        async with asyncio.timeout(WAIT):
            await _until_ended(mgr, job.id)
        assert (await mgr.get(job.id)).state is JobState.SUCCEEDED
    finally:
        await stop(mgr)
        slots.shutdown()


async def test_a_resume_retried_after_its_queueing_failed_runs_the_job(tmp_path: Path):
    """The job was stored QUEUED, then queueing it failed: the retried resume is refused (the job is not PAUSED
    any more) but queues it, so it does not wait for a restart of the process."""
    slots = JobSlots(1)
    queue = FailingOnceQueue()
    queue.failures = 0
    store = InMemoryJobStore[CountSpec, CountOutput]()
    mgr = await make_manager(store, tmp_path, slots, queue)
    try:
        job = await mgr.submit(mgr.new_job(CountSpec(2), CountOutput()))
        await mgr.runner.started.wait()
        await mgr.pause(job.id)
        mgr.runner.release.release()
        await _until_ended(mgr, job.id)
        queue.failures = 1
        with pytest.raises(ConnectionError):
            await mgr.resume(job.id)
        with pytest.raises(FailedPrecondition) as caught:
            await mgr.resume(job.id)
        assert caught.value.reason == "JOB_NOT_RESUMABLE" and caught.value.metadata == {"state": "QUEUED"}
        for _ in range(2):
            mgr.runner.release.release()
        await _stored(store, job.id, JobState.SUCCEEDED)
    finally:
        await stop(mgr)
        slots.shutdown()


async def test_a_job_queued_again_while_it_runs_waits_for_that_run_to_end(tmp_path: Path):
    """As procrastinate's lock keeps it: with places free, the in-process queue still runs one job's items one
    after the other (a second run beside the first would take the job over from it)."""
    store, slots, queue = InMemoryJobStore[CountSpec, CountOutput](), JobSlots(2), InProcessQueue()
    mgr = JobManager(runner=CountRunner(), store=store, queue=queue, work_dir=tmp_path, slots=slots,
                     control_poll_seconds=0.01, watch_poll_seconds=0.05)
    running, most, calls, second_done = 0, 0, 0, asyncio.Event()

    async def execute(kind: str, job_id: str) -> None:
        nonlocal running, most, calls
        calls += 1
        running += 1
        most = max(most, running)
        try:
            await mgr.execute(job_id)
        finally:
            running -= 1
            if calls == 2:
                second_done.set()

    queue.start_worker({COUNT.name: execute}, concurrency=2, name="test")
    mgr.test_queue = queue  # type: ignore[attr-defined]
    try:
        job = await mgr.submit(mgr.new_job(CountSpec(1), CountOutput()))
        await mgr.runner.started.wait()
        await queue.enqueue(COUNT.name, job.id)
        while queue._heap:  # taken by the free worker task: run, or held back
            await asyncio.sleep(0)
        assert calls == 1, "the job's second item ran beside the first"
        mgr.runner.release.release()
        async with asyncio.timeout(WAIT):
            await second_done.wait()  # it ran after the first, and found the job ended
        assert most == 1 and (await store.get_job(job.id)).state is JobState.SUCCEEDED
    finally:
        await stop(mgr)
        slots.shutdown()
