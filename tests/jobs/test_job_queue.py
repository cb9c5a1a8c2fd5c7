"""The PostgreSQL job queue (procrastinate) on a real database: a worker whose heartbeat update failed once keeps
its job (procrastinate's own heartbeat task ends at its first error; the queue keeps the heartbeats going)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from engine.stores.job_queue import QUEUE, ProcrastinateQueue
from engine.stores.postgres import migrate

pytestmark = pytest.mark.full_stack

HEARTBEAT, STALLED = 0.2, 1.0


async def test_a_failed_heartbeat_does_not_hand_a_running_job_to_another_worker(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    await migrate(pool)
    queue = ProcrastinateQueue(database_url, heartbeat_seconds=HEARTBEAT, stalled_seconds=STALLED)
    await queue.open()
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
        await queue.close()
        await pool.close()
