"""A watch of a job this process does not hold (a queued job, or one another replica runs) reads the store's events
and yields them one by one: what is written while the stream waits on its consumer (a slow client, flow control)
wakes the watch at once, in memory and in PostgreSQL alike, rather than after ``watch_poll_seconds``. Here a queued
job is cancelled while its watcher delivers the first event."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from engine.jobs.context import JobSlots
from engine.jobs.core import JobEvent, JobState, StateChanged, Warned
from engine.jobs.manager import JobManager
from engine.jobs.ports import JobStore
from engine.stores.job_store import JobNotifications, PostgresJobStore
from engine.stores.memory import InMemoryJobStore, InProcessQueue
from engine.stores.postgres import migrate
from tests.jobs.test_job_core import COUNT, CountOutput, CountRunner, CountSpec


async def test_an_event_written_while_the_consumer_is_slow_wakes_the_watch(tmp_path: Path) -> None:
    await _cancel_while_the_watcher_is_busy(InMemoryJobStore(), tmp_path)


async def test_a_postgres_notification_sent_while_the_consumer_is_slow_wakes_the_watch(
        database_url: str, tmp_path: Path) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    notifications = JobNotifications(pool)
    try:
        await migrate(pool)
        await _cancel_while_the_watcher_is_busy(PostgresJobStore(pool, COUNT, notifications), tmp_path)
    finally:
        await notifications.close()
        await pool.close()


async def _cancel_while_the_watcher_is_busy(job_store: JobStore[CountSpec, CountOutput], tmp_path: Path) -> None:
    slots = JobSlots(1)
    mgr = JobManager(runner=CountRunner(), store=job_store, queue=InProcessQueue(), work_dir=tmp_path, slots=slots,
                     watch_poll_seconds=30)  # no worker: the job stays queued
    try:
        job = await mgr.submit(mgr.new_job(CountSpec(3), CountOutput()))
        stream = mgr.watch(job.id)
        assert (await anext(stream)).state is JobState.QUEUED  # the snapshot
        accepted = await anext(stream)
        assert isinstance(accepted, JobEvent) and accepted.sequence == 1
        # No worker takes the job, which it is told; the watch is now suspended at this yield (the client reading
        # slowly), the job's last event so far.
        waiting = await anext(stream)
        assert isinstance(waiting, JobEvent) and isinstance(waiting.payload, Warned)
        assert waiting.payload.code == "NO_WORKER"
        await mgr.cancel(job.id)  # stored, and the store notifies its waiters
        try:
            event = await asyncio.wait_for(anext(stream), 5)
        except TimeoutError:
            raise AssertionError("the cancel written while the watcher was busy woke nothing; it would be shown "
                                 "only after watch_poll_seconds") from None
        assert isinstance(event, JobEvent)
        assert isinstance(event.payload, StateChanged) and event.payload.state is JobState.CANCELLED
        await stream.aclose()
    finally:
        slots.shutdown()
