"""The PostgreSQL job queue (procrastinate) on a real database: a worker whose heartbeat update failed once keeps
its job (procrastinate's own heartbeat task ends at its first error; the queue keeps the heartbeats going), one
whose fetch failed once goes on taking jobs beside the one it runs (procrastinate's own stops and waits for it),
one whose registration was pruned registers anew, and a worker stops when asked even if the cancellation that
asks it is lost."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest

from engine.stores.job_queue import QUEUE, ProcrastinateQueue
from engine.stores.postgres import migrate

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
