"""What a queue's failed last attempt may end, and how: never a job another worker runs (a frozen worker's attempt
failing as it wakes, while the stalled item's replacement runs the job elsewhere), in memory and on PostgreSQL; and
a cancel or pause asked of the job meanwhile is carried out (CANCELLED, PAUSED), not overruled by FAILED."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from engine.jobs.context import JobSlots, now
from engine.jobs.core import JobEvent, JobState, StateChanged
from engine.jobs.manager import JobManager
from engine.jobs.ports import QueueAttempt, queue_attempt
from engine.stores.job_store import PostgresJobStore
from engine.stores.memory import InMemoryJobStore, InProcessQueue
from engine.stores.postgres import migrate
from tests.jobs.test_job_attempts import FailingStore, _watched
from tests.jobs.test_job_core import COUNT, CountOutput, CountRunner, CountSpec, make_manager, stop

WAIT = 10  # seconds: only how long a broken test takes to fail


class FrozenStore(InMemoryJobStore[CountSpec, CountOutput]):
    """The first ``list_events`` after the first claim (worker A reading the log of the job it claimed) waits until
    ``wake`` is set, then fails: a worker frozen (its heartbeat stopped) whose connection is gone when it wakes."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen, self.wake = asyncio.Event(), asyncio.Event()
        self.claims = 0

    async def claim(self, job_id, owner):
        self.claims += 1
        return await super().claim(job_id, owner)

    async def list_events(self, job_id, *, after_sequence):
        if self.claims == 1 and not self.frozen.is_set():
            self.frozen.set()
            await self.wake.wait()
            raise ConnectionError("the connection was lost while the worker was frozen")
        return await super().list_events(job_id, after_sequence=after_sequence)


async def test_a_failed_last_attempt_does_not_end_a_job_another_worker_runs(tmp_path: Path) -> None:
    store = FrozenStore()
    slots_a, slots_b = JobSlots(1), JobSlots(1)
    a = await make_manager(store, tmp_path / "a", slots_a)  # its in-process queue: every attempt is the last
    b = await make_manager(store, tmp_path / "b", slots_b)
    try:
        job = await a.submit(a.new_job(CountSpec(2), CountOutput()))
        async with asyncio.timeout(WAIT):
            await store.frozen.wait()  # A claimed the job and froze
        # A's heartbeat stopped: the stalled item is replaced, and another worker (B) takes the job over and runs it
        taken = asyncio.get_running_loop().create_task(b.execute(job.id))
        async with asyncio.timeout(WAIT):
            await b.runner.started.wait()
        store.wake.set()  # A wakes: its read fails, on the item's last attempt
        await asyncio.sleep(0.5)
        held = await store.get_job(job.id)
        assert held.state is JobState.RUNNING, (held.state, held.failure)
        b.runner.release.release()
        b.runner.release.release()
        async with asyncio.timeout(WAIT):
            await taken
        assert (await store.get_job(job.id)).state is JobState.SUCCEEDED
    finally:
        store.wake.set()
        await stop(a)
        await stop(b)
        slots_a.shutdown()
        slots_b.shutdown()


class FrozenPostgresStore(PostgresJobStore[CountSpec, CountOutput]):
    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool, COUNT)
        self.frozen, self.wake = asyncio.Event(), asyncio.Event()

    async def list_events(self, job_id, *, after_sequence):
        if not self.frozen.is_set():
            self.frozen.set()
            await self.wake.wait()
            raise ConnectionError("the connection was lost while the worker was frozen")
        return await super().list_events(job_id, after_sequence=after_sequence)


@pytest.mark.full_stack
async def test_on_postgresql_a_frozen_workers_last_attempt_leaves_the_job_to_the_worker_running_it(
        database_url: str, tmp_path: Path) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    slots_a, slots_b = JobSlots(1), JobSlots(1)
    tasks: list[asyncio.Task[None]] = []
    frozen = FrozenPostgresStore(pool)
    b: JobManager[CountSpec, CountOutput] | None = None
    try:
        await migrate(pool)
        a = JobManager(runner=CountRunner(), store=frozen, queue=InProcessQueue(), work_dir=tmp_path / "a",
                       slots=slots_a, control_poll_seconds=0.05, worker_id="worker-a")
        b = JobManager(runner=CountRunner(), store=PostgresJobStore(pool, COUNT), queue=InProcessQueue(),
                       work_dir=tmp_path / "b", slots=slots_b, control_poll_seconds=0.05, worker_id="worker-b")
        job = await b.submit(b.new_job(CountSpec(2), CountOutput()))  # b's queue is not started: nothing runs it

        async def attempt(mgr: JobManager[CountSpec, CountOutput], number: int, last: bool) -> None:
            queue_attempt.set(QueueAttempt(number, last))
            await mgr.execute(job.id)

        loop = asyncio.get_running_loop()
        tasks.append(loop.create_task(attempt(a, 21, True)))  # the stalled item's last attempt, on A
        async with asyncio.timeout(WAIT):
            await frozen.frozen.wait()
        tasks.append(loop.create_task(attempt(b, 1, False)))  # its replacement, on B
        async with asyncio.timeout(WAIT):
            await b.runner.started.wait()
        frozen.wake.set()
        await asyncio.sleep(0.5)
        held = await b.get(job.id)
        owner = await pool.fetchval("SELECT lease_owner FROM jobs WHERE id = $1", job.id)
        assert (held.state, owner) == (JobState.RUNNING, "worker-b")
        for _ in range(2):
            b.runner.release.release()
        async with asyncio.timeout(WAIT):
            await tasks[1]  # B's run ends the job
        assert (await b.get(job.id)).state is JobState.SUCCEEDED
    finally:
        frozen.wake.set()
        if b is not None:
            for _ in range(5):
                b.runner.release.release()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool.close()
        slots_a.shutdown()
        slots_b.shutdown()


@pytest.mark.parametrize(("asked", "ends"), [("cancel", JobState.CANCELLED), ("pause", JobState.PAUSED)])
async def test_a_request_made_of_the_job_is_carried_out_by_the_attempt_that_gives_up(
        tmp_path: Path, asked: str, ends: JobState) -> None:
    """A worker took the job and stopped before acting on a cancel (or pause) asked of it; the next attempt claims
    it (the request comes with the claim), then fails reading its log, and it was the last."""
    store, slots = FailingStore(reads=1), JobSlots(1)
    mgr = await make_manager(store, tmp_path, slots)
    try:
        job = mgr.new_job(CountSpec(1), CountOutput())
        await store.insert_job(replace(job, last_sequence=1),
                               [JobEvent(1, now(), StateChanged(None, JobState.QUEUED, "job accepted"))])
        assert await InMemoryJobStore.claim(store, job.id, "worker-x") is not None  # it took it, then stopped
        await (mgr.cancel(job.id) if asked == "cancel" else mgr.pause(job.id))  # stored for the holder to act on
        await mgr.test_queue.enqueue(COUNT.name, job.id)
        if ends is JobState.CANCELLED:
            await _watched(mgr, job.id)
        else:
            async with asyncio.timeout(WAIT):
                while (await store.get_job(job.id)).state is not ends:
                    await asyncio.sleep(0.05)
        ended = await store.get_job(job.id)
        assert ended.state is ends, (ended.state, ended.failure)
        assert "the job queue gave up" in (await store.list_events(job.id, after_sequence=0))[-1].payload.message
        assert not mgr.runner.started.is_set()
    finally:
        await stop(mgr)
        slots.shutdown()


async def test_a_job_a_stopped_worker_held_is_queued_again_when_the_last_attempt_cannot_claim_it(
        tmp_path: Path) -> None:
    """The job's worker stopped holding it (its lease stands); the item meant to take it over fails to claim it on
    its last attempt. The job is not this attempt's to end (a holder may be running it), nor left with nothing
    queued: it is queued again, and the next item takes it over and runs it."""
    store, slots = FailingStore(claims=1), JobSlots(1)
    mgr = await make_manager(store, tmp_path, slots)  # its in-process queue: every attempt is the last
    try:
        job = mgr.new_job(CountSpec(1), CountOutput())
        await store.insert_job(replace(job, last_sequence=1),
                               [JobEvent(1, now(), StateChanged(None, JobState.QUEUED, "job accepted"))])
        assert await InMemoryJobStore.claim(store, job.id, "worker-x") is not None  # it took it, then stopped
        await mgr.test_queue.enqueue(COUNT.name, job.id)  # the stalled item's replacement
        async with asyncio.timeout(WAIT):
            await mgr.runner.started.wait()  # taken over by the item queued again
        assert store.claims == 0
        mgr.runner.release.release()
        items = await _watched(mgr, job.id)
        assert items[-1].payload.state is JobState.SUCCEEDED
    finally:
        await stop(mgr)
        slots.shutdown()


class ReleaseDownStore(InMemoryJobStore[CountSpec, CountOutput]):
    """``release`` fails ``releases`` times (the database restarting for longer than a release's retries)."""

    def __init__(self, releases: int) -> None:
        super().__init__()
        self.releases = releases

    async def release(self, job, events, lease):
        if self.releases:
            self.releases -= 1
            raise ConnectionError("the database is restarting")
        return await super().release(job, events, lease)


@pytest.mark.slow
async def test_a_paused_job_whose_release_failed_on_the_last_attempt_is_paused_by_the_next(tmp_path: Path) -> None:
    """The run began, was paused, and could not store its release (PAUSED) within its retries, on the queue's last
    attempt: the job is queued again, and the next attempt claims it with the pause asked of it and pauses it."""
    store, slots = ReleaseDownStore(releases=6), JobSlots(1)  # one more than a release's retries
    mgr = await make_manager(store, tmp_path, slots)  # every attempt is the last
    try:
        job = await mgr.submit(mgr.new_job(CountSpec(2), CountOutput()))
        async with asyncio.timeout(WAIT):
            await mgr.runner.started.wait()
        await mgr.pause(job.id)
        mgr.runner.release.release()
        async with asyncio.timeout(30):  # the release's retries (0.2 + 0.5 + 1 + 2 + 5 s), then the next attempt
            while (stored := await store.get_job(job.id)).state is not JobState.PAUSED:
                await asyncio.sleep(0.1)
        assert store.releases == 0 and stored.state is JobState.PAUSED
    finally:
        await stop(mgr)
        slots.shutdown()
