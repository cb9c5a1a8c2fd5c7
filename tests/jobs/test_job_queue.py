"""The PostgreSQL job queue (procrastinate) on a real database: a worker whose heartbeat update failed once keeps
its job (procrastinate's own heartbeat task ends at its first error; the queue keeps the heartbeats going), one
whose fetch failed once goes on taking jobs beside the one it runs (procrastinate's own stops and waits for it),
one whose registration was pruned registers anew, and a worker stops when asked even if the cancellation that
asks it is lost. Ended items are deleted after the retention period, their events with them (the jobs' records
stay). A job whose item's last attempt failed before it could run is ended FAILED, and its watchers on another
replica see it end; a job claimed by an attempt that then failed is claimed again by the next."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from procrastinate.jobs import Status

from engine.jobs.context import JobSlots
from engine.jobs.core import Failed, Job, JobEvent, JobState, StateChanged
from engine.jobs.manager import JobManager
from engine.stores.job_queue import QUEUE, ProcrastinateQueue
from engine.stores.job_store import PostgresJobStore
from engine.stores.postgres import migrate
from tests.jobs.test_job_core import COUNT, CountOutput, CountRunner, CountSpec

pytestmark = pytest.mark.full_stack

HEARTBEAT, STALLED = 0.2, 1.0


@pytest.fixture
async def opened(database_url: str):
    """(a pool on a migrated database, a queue opened on it), closed after the test."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    await migrate(pool)
    queue = ProcrastinateQueue(database_url, heartbeat_seconds=HEARTBEAT, stalled_seconds=STALLED)
    await queue.open()
    try:
        yield pool, queue
    finally:
        await queue.close()
        await pool.close()


@pytest.mark.slow
async def test_a_failed_heartbeat_does_not_hand_a_running_job_to_another_worker(opened) -> None:
    pool, queue = opened
    manager = queue._app.job_manager
    update = manager.update_heartbeat
    failures = 0

    async def flaky(worker_id: int) -> None:  # the database away for the first two heartbeats
        nonlocal failures
        if failures < 2:
            failures += 1
            raise ConnectionError("the database is restarting")
        await update(worker_id)

    manager.update_heartbeat = flaky  # type: ignore[method-assign]
    runs: list[str] = []
    started, finish = asyncio.Event(), asyncio.Event()

    async def execute(kind: str, job_id: str) -> None:
        runs.append(job_id)
        started.set()
        await finish.wait()

    try:
        queue.start_worker({"count": execute}, concurrency=1, name="test")
        await queue.enqueue("count", "job-1")
        await asyncio.wait_for(started.wait(), 30)
        # Three stalled periods with the job held: without heartbeats it would be put back and run again.
        await asyncio.sleep(3 * STALLED)
        items = await pool.fetch("SELECT status FROM procrastinate_jobs WHERE queue_name = $1", QUEUE)
        assert [r["status"] for r in items] == ["doing"], "the running job's item was put back in the queue"
        assert runs == ["job-1"] and failures == 2
    finally:
        finish.set()


async def test_a_worker_stops_even_if_its_cancellation_is_lost(opened) -> None:
    """Python 3.11's ``asyncio.wait_for`` drops a cancellation that lands as the awaited future completes
    (CPython gh-86296), and psycopg_pool waits for a connection with it. A server stopped right after it started
    could cancel its worker just as procrastinate's ``Worker.run`` got its connection to register, before it
    shields its loop from cancellation: the worker then ran on and the stop waited for it forever. Lost here on
    purpose, at the same point."""
    pool, queue = opened
    manager = queue._app.job_manager
    register = manager.register_worker
    registering = asyncio.Event()

    async def losing_the_cancellation() -> int:
        registering.set()
        with contextlib.suppress(asyncio.CancelledError):  # what wait_for does when its future is done as well
            await asyncio.sleep(60)
        return await register()

    async def execute(kind: str, job_id: str) -> None:
        raise AssertionError("no job was queued")

    manager.register_worker = losing_the_cancellation  # type: ignore[method-assign]
    queue.start_worker({"count": execute}, concurrency=1, name="test")
    await asyncio.wait_for(registering.wait(), 30)
    # Not under a timeout: stop_worker awaits the worker, and a timeout would cancel the worker once more.
    stopping = asyncio.ensure_future(queue.stop_worker())
    done, _ = await asyncio.wait({stopping}, timeout=20)
    assert done, "the worker did not stop"
    workers = await pool.fetchval("SELECT count(*) FROM procrastinate_workers")
    assert workers == 0, "the stopped worker is still registered"


async def test_a_failed_fetch_does_not_stop_a_worker_taking_jobs_beside_the_one_it_runs(opened) -> None:
    """procrastinate's worker stops at a failed fetch and, stopping, waits for its running jobs to end (a training
    run: hours) before another worker could start in its place: no job was taken all that time."""
    pool, queue = opened
    manager = queue._app.job_manager
    fetch = manager.fetch_job
    blip, blipped = asyncio.Event(), asyncio.Event()

    async def flaky(queues, worker_id):  # the database restarting once, while the first job runs
        if blip.is_set() and not blipped.is_set():
            blipped.set()
            raise ConnectionError("the database is restarting")
        return await fetch(queues=queues, worker_id=worker_id)

    manager.fetch_job = flaky  # type: ignore[method-assign]
    started = {"job-1": asyncio.Event(), "job-2": asyncio.Event()}
    finish = asyncio.Event()

    async def execute(kind: str, job_id: str) -> None:
        started[job_id].set()
        if job_id == "job-1":
            await finish.wait()

    try:
        queue.start_worker({"count": execute}, concurrency=2, name="test")
        await queue.enqueue("count", "job-1")
        await asyncio.wait_for(started["job-1"].wait(), 30)
        blip.set()
        await asyncio.wait_for(blipped.wait(), 30)  # the next poll (every second) fails
        await queue.enqueue("count", "job-2")
        try:
            await asyncio.wait_for(started["job-2"].wait(), 30)  # while job-1 runs on
        except TimeoutError:
            raise AssertionError("after a failed fetch the worker took no job until its running one ended") from None
    finally:
        finish.set()


async def test_a_worker_whose_registration_was_pruned_registers_anew(opened) -> None:
    """A process frozen for longer than the stalled timeout finds its registration pruned by the others: its
    fetches then violate the worker foreign key until it registers again, which it does."""
    pool, queue = opened
    started = asyncio.Event()

    async def execute(kind: str, job_id: str) -> None:
        started.set()

    queue.start_worker({"count": execute}, concurrency=1, name="test")
    async with asyncio.timeout(30):
        while not await pool.fetchval("SELECT count(*) FROM procrastinate_workers"):
            await asyncio.sleep(0.05)
    await pool.execute("DELETE FROM procrastinate_workers")  # pruned, as another worker's check does
    await queue.enqueue("count", "job-1")
    await asyncio.wait_for(started.wait(), 30)
    assert await pool.fetchval("SELECT count(*) FROM procrastinate_workers") == 1


WAIT = 8  # seconds: only how long a broken test takes to fail


async def test_items_that_ended_are_deleted_after_the_retention_period_with_their_events(database_url: str) -> None:
    """Failed items (a stalled one closed by the check, one out of retries) and cancelled ones were kept for ever,
    with their events. Deleted once they ended longer ago than the retention, at the period after a failed try;
    the jobs' own records stay."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    queue = ProcrastinateQueue(database_url, heartbeat_seconds=HEARTBEAT, stalled_seconds=STALLED,
                               retention_hours=1, prune_every_seconds=0.5)
    try:
        await migrate(pool)
        await queue.open()
        manager = queue._app.job_manager
        ids: dict[str, int] = {}
        for name in ("old-failed", "old-cancelled", "recent-failed"):
            await queue.enqueue("count", name)
            ids[name] = await pool.fetchval(
                "SELECT id FROM procrastinate_jobs WHERE args->>'job_id' = $1", name)
        await manager.finish_job_by_id_async(ids["old-failed"], Status.FAILED, delete_job=False)
        await manager.finish_job_by_id_async(ids["recent-failed"], Status.FAILED, delete_job=False)
        await manager.cancel_job_by_id_async(ids["old-cancelled"])
        old = [ids["old-failed"], ids["old-cancelled"]]
        await pool.execute("UPDATE procrastinate_events SET at = now() - interval '2 hours' WHERE job_id = ANY($1)",
                           old)  # they ended two hours ago
        store = PostgresJobStore(pool, COUNT)
        await store.insert_job(Job("ended-long-ago", COUNT.name, CountSpec(1), CountOutput(), JobState.FAILED,
                                   datetime.now(UTC) - timedelta(days=30)))

        delete, tries = manager.delete_old_jobs, []

        async def flaky(**kwargs) -> None:  # the database away at the first try
            tries.append(asyncio.get_running_loop().time())
            if len(tries) == 1:
                raise ConnectionError("the database is restarting")
            await delete(**kwargs)

        manager.delete_old_jobs = flaky  # type: ignore[method-assign]

        async def execute(kind: str, job_id: str) -> None:
            raise AssertionError("no item was waiting")

        queue.start_worker({"count": execute}, concurrency=1, name="test")
        try:
            async with asyncio.timeout(WAIT):
                while await pool.fetchval("SELECT count(*) FROM procrastinate_jobs WHERE id = ANY($1)", old):
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError("items that ended before the retention period are still stored") from None
        assert tries[1] - tries[0] >= 0.5 - HEARTBEAT, "tried again before the next period (at every heartbeat?)"
        left = await pool.fetch("SELECT id, status FROM procrastinate_jobs")
        assert [(r["id"], r["status"]) for r in left] == [(ids["recent-failed"], "failed")]
        assert await pool.fetchval("SELECT count(*) FROM procrastinate_events WHERE job_id = ANY($1)", old) == 0
        assert await pool.fetchval("SELECT count(*) FROM procrastinate_events WHERE job_id = $1",
                                   ids["recent-failed"]) > 0
        assert (await store.get_job("ended-long-ago")) is not None
    finally:
        await queue.close()
        await pool.close()


class FlakyPostgresStore(PostgresJobStore[CountSpec, CountOutput]):
    """The PostgreSQL store, whose first ``claims`` claims fail and whose ``reads`` first reads of a job's log
    right after a claim fail (the database restarting, or a defect), counting the claims."""

    def __init__(self, pool: asyncpg.Pool, *, claims: int = 0, reads: int = 0) -> None:
        super().__init__(pool, COUNT)
        self.failing_claims, self.failing_reads, self.claims = claims, reads, 0
        self.claimed: set[str] = set()

    async def claim(self, job_id, owner):
        self.claims += 1
        if self.failing_claims:
            self.failing_claims -= 1
            raise ConnectionError("the database is restarting")
        self.claimed.add(job_id)
        return await super().claim(job_id, owner)

    async def list_events(self, job_id, *, after_sequence):
        if self.failing_reads and job_id in self.claimed:
            self.failing_reads -= 1
            self.claimed.discard(job_id)
            raise ConnectionError("the database is restarting")
        return await super().list_events(job_id, after_sequence=after_sequence)


@contextlib.asynccontextmanager
async def _worker_and_api(database_url: str, tmp_path: Path, store_args: dict):
    """(the worker's store, a manager serving the API on another replica), with a queue retrying once at once
    whose worker runs the jobs through a manager on ``FlakyPostgresStore(**store_args)``."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    queue = ProcrastinateQueue(database_url, heartbeat_seconds=HEARTBEAT, stalled_seconds=STALLED, retries=1,
                               retry_wait_seconds=0)
    slots = JobSlots(1)
    worker = api = None
    try:
        await migrate(pool)
        await queue.open()
        store = FlakyPostgresStore(pool, **store_args)
        worker = JobManager(runner=CountRunner(), store=store, queue=queue, work_dir=tmp_path / "worker",
                            slots=slots, control_poll_seconds=0.05)
        api = JobManager(runner=CountRunner(), store=PostgresJobStore(pool, COUNT), queue=queue,
                         work_dir=tmp_path / "api", slots=JobSlots(1), watch_poll_seconds=0.2)
        queue.start_worker({COUNT.name: lambda kind, job_id: worker.execute(job_id)}, concurrency=1, name="test")
        yield pool, store, worker, api
    finally:
        if worker is not None:
            for _ in range(10):
                worker.runner.release.release()
            await asyncio.gather(worker.shutdown(), queue.stop_worker())
        await queue.close()
        for manager in (worker, api):
            if manager is not None:
                await manager._store._notifications.close()
        await pool.close()
        slots.shutdown()


async def _watched(api: JobManager, job_id: str) -> list:
    try:
        async with asyncio.timeout(WAIT):
            return [item async for item in api.watch(job_id)]
    except TimeoutError:
        job = await api.get(job_id)
        raise AssertionError(f"the watch never ended: the job stayed {job.state.value}") from None


async def test_a_job_whose_last_queue_attempt_failed_ends_failed_and_its_watchers_see_it(
        database_url: str, tmp_path: Path) -> None:
    """Both attempts (the first and its one retry) fail to claim the job: procrastinate marks the item failed,
    and the job, QUEUED until then, was left so with nothing queued (until a restart queued it again)."""
    async with _worker_and_api(database_url, tmp_path, {"claims": 2}) as (pool, store, worker, api):
        job = await api.submit(api.new_job(CountSpec(1), CountOutput()))
        items = await _watched(api, job.id)
        ended = await api.get(job.id)
        assert ended.state is JobState.FAILED and ended.failure is not None
        assert (ended.failure.code, ended.failure.reason) == ("UNAVAILABLE", "JOB_QUEUE_RETRIES_EXHAUSTED")
        assert "(of 2) failed as the job was claimed (ConnectionError)" in ended.failure.message
        assert ended.failure.metadata == (("attempts", "2"),)
        events = [i for i in items if isinstance(i, JobEvent)]
        assert [e.payload for e in events[1:]] == [
            Failed(ended.failure), StateChanged(JobState.QUEUED, JobState.FAILED, ended.failure.message)]
        assert store.claims == 2 and not worker.runner.started.is_set()  # two attempts; the end claims nothing
        async with asyncio.timeout(WAIT):  # the item's end is stored as the executor's error returns
            while (status := await pool.fetchval("SELECT status FROM procrastinate_jobs")) == "doing":
                await asyncio.sleep(0.05)
        assert status == "failed"


async def test_a_job_claimed_by_an_attempt_that_failed_is_claimed_again_by_the_next(
        database_url: str, tmp_path: Path) -> None:
    """The first attempt claims the job, then cannot read its log: the lease it leaves does not hold the job
    from the next attempt (a claim replaces any lease), which runs it; nothing ends it FAILED meanwhile."""
    async with _worker_and_api(database_url, tmp_path, {"reads": 1}) as (pool, store, worker, api):
        worker.runner.release.release()
        job = await api.submit(api.new_job(CountSpec(1), CountOutput()))
        items = await _watched(api, job.id)
        assert (await api.get(job.id)).state is JobState.SUCCEEDED and store.claims == 2
        states = [i.payload.state for i in items if isinstance(i, JobEvent) and isinstance(i.payload, StateChanged)]
        assert states == [JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]


def test_a_queue_that_would_never_give_up_is_refused(database_url: str) -> None:
    """No retries at all would tell every run it is the last, while procrastinate reads max_attempts=0 as no
    limit and runs a failed item again for ever: the constructor refuses it."""
    with pytest.raises(ValueError, match="retries must be at least 1"):
        ProcrastinateQueue(database_url, retries=0)
