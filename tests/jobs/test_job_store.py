"""The PostgreSQL job store on a real database: a worker stopped inside a write, whose transaction holds its job's
row, does not block another worker's claim of the job for longer than the row hold (PostgreSQL ends the idle
transaction); the stopped write then fails having written nothing, and its retry finds the lease lost. A cancel
accepted by the worker holding a job is stored, and carried out by the worker taking the job over."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
import pytest

from engine.errors import Unavailable
from engine.jobs.context import JobSlots
from engine.jobs.core import Job, JobEvent, JobState
from engine.jobs.manager import JobManager
from engine.jobs.ports import LeaseLost
from engine.stores import postgres
from engine.stores.job_store import PostgresJobStore
from engine.stores.memory import InProcessQueue
from engine.stores.postgres import migrate
from tests.jobs.test_job_core import COUNT, Counted, CountOutput, CountRunner, CountSpec, make_manager, stop

pytestmark = pytest.mark.full_stack


async def test_a_worker_frozen_inside_a_write_does_not_block_the_takeover_of_its_job(database_url, monkeypatch):
    monkeypatch.setattr(postgres, "ROW_HOLD_SECONDS", 1.0)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        await migrate(pool)
        frozen, store = PostgresJobStore(pool, COUNT), PostgresJobStore(pool, COUNT)
        job = await store.insert_job(Job(id="frozen", kind=COUNT.name, spec=CountSpec(3), output=CountOutput(),
                                         state=JobState.QUEUED, create_time=datetime.now(UTC)))
        first = await frozen.claim(job.id, "worker-a")
        assert first is not None

        inside, thaw = asyncio.Event(), asyncio.Event()
        appended = frozen._append

        async def stops_inside(conn, job_id, events):  # the worker freezes with the row locked by its write
            inside.set()
            await thaw.wait()
            await appended(conn, job_id, events)

        monkeypatch.setattr(frozen, "_append", stops_inside)
        running = replace(first.job, state=JobState.RUNNING, last_sequence=1)
        counted = [JobEvent(1, running.create_time, Counted(1))]
        write = asyncio.create_task(frozen.write(running, counted, first.lease))
        await inside.wait()

        taken = await asyncio.wait_for(store.claim(job.id, "worker-b"), timeout=60)  # not for as long as it sleeps
        assert taken is not None and taken.previous_owner == "worker-a"
        thaw.set()
        with pytest.raises(Unavailable, match="DATABASE_UNAVAILABLE|PostgreSQL is unavailable"):
            await write  # its transaction was ended (the session with it): nothing of it stands
        monkeypatch.setattr(frozen, "_append", appended)
        with pytest.raises(LeaseLost):
            await frozen.write(running, counted, first.lease)  # the retry of a write that failed
        stored = await store.get_job(job.id)
        assert stored is not None and stored.worker == "worker-b" and stored.state is JobState.QUEUED
        assert await store.list_events(job.id, after_sequence=0) == []
    finally:
        await pool.close()



async def test_a_cancel_accepted_by_the_worker_holding_a_job_is_carried_out_by_the_worker_taking_it_over(
        database_url, tmp_path):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    slots_a, slots_b = JobSlots(1), JobSlots(1)
    a = b = None
    try:
        await migrate(pool)
        a = await make_manager(PostgresJobStore(pool, COUNT), tmp_path / "a", slots_a)
        b = JobManager(runner=CountRunner(), store=PostgresJobStore(pool, COUNT), queue=InProcessQueue(),
                       work_dir=tmp_path / "b", slots=slots_b, control_poll_seconds=0.01)
        job = await a.submit(a.new_job(CountSpec(2), CountOutput()))
        await a.runner.started.wait()
        assert (await a.cancel(job.id)).state is JobState.CANCELLING  # served by the replica of A's worker
        # Worker A stops here (killed, or its heartbeat lost) before its next step; the queue hands the job to B.
        for _ in range(2):
            b.runner.release.release()
        await b.execute(job.id)
        ended = await b.get(job.id)
        assert ended.state is JobState.CANCELLED, f"the accepted cancel was lost: the job ended {ended.state.value}"
    finally:
        if b is not None:
            await b.shutdown()
        if a is not None:
            await stop(a)
        slots_a.shutdown()
        slots_b.shutdown()
        await pool.close()
