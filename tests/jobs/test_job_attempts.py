"""A job whose queue item could not run it, on the in-memory store and queue: the queue runs an item once, so a
failure around the run (the store, claiming the job or reading its log) is its last attempt, and the job is ended
FAILED, not left active with nothing queued to run it while its watchers wait for ever. If the store fails that
end too, the worker logs it and goes on. The same on PostgreSQL with procrastinate's retries: test_job_queue."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from engine.jobs.context import JobSlots
from engine.jobs.core import Failed, JobEvent, JobState, StateChanged
from engine.stores.memory import InMemoryJobStore
from tests.jobs.test_job_core import CountOutput, CountSpec, make_manager, stop

WAIT = 10  # seconds: only how long a broken test takes to fail


class FailingStore(InMemoryJobStore[CountSpec, CountOutput]):
    """``claim`` fails ``claims`` times; after a claim succeeds, the next ``list_events`` of the claimed job (the
    worker reading its log) fails ``reads`` times; a write of a job no worker holds fails ``writes`` times. A
    database restarting, or a defect."""

    def __init__(self, *, claims: int = 0, reads: int = 0, writes: int = 0) -> None:
        super().__init__()
        self.claims, self.reads, self.writes = claims, reads, writes
        self.claimed: set[str] = set()

    async def write(self, job, events, lease):
        if self.writes and lease is None:
            self.writes -= 1
            raise ConnectionError("the database is restarting")
        return await super().write(job, events, lease)

    async def claim(self, job_id, owner):
        if self.claims:
            self.claims -= 1
            raise ConnectionError("the database is restarting")
        self.claimed.add(job_id)
        return await super().claim(job_id, owner)

    async def list_events(self, job_id, *, after_sequence):
        if self.reads and job_id in self.claimed:
            self.reads -= 1
            self.claimed.discard(job_id)
            raise ConnectionError("the database is restarting")
        return await super().list_events(job_id, after_sequence=after_sequence)


async def _watched(mgr, job_id: str) -> list:
    try:
        async with asyncio.timeout(WAIT):
            return [item async for item in mgr.watch(job_id)]
    except TimeoutError:
        job = await mgr.get(job_id)
        raise AssertionError(f"the watch never ended: the job stayed {job.state.value}") from None


@pytest.mark.parametrize(("failing", "doing"), [({"claims": 1}, "as the job was claimed"),
                                                ({"reads": 1}, "as the job's event log was read")])
async def test_a_job_its_queue_could_not_run_ends_failed_and_its_watchers_see_it(tmp_path: Path, failing, doing):
    store, slots = FailingStore(**failing), JobSlots(1)
    mgr = await make_manager(store, tmp_path, slots)
    try:
        job = await mgr.submit(mgr.new_job(CountSpec(1), CountOutput()))
        items = await _watched(mgr, job.id)
        ended = await store.get_job(job.id)
        assert ended is not None and ended.state is JobState.FAILED and ended.end_time is not None
        assert ended.failure is not None and ended.failure.code == "UNAVAILABLE"
        assert ended.failure.reason == "JOB_QUEUE_RETRIES_EXHAUSTED"
        assert doing in ended.failure.message and "ConnectionError" in ended.failure.message
        events = await store.list_events(job.id, after_sequence=0)
        assert [e.sequence for e in events] == [1, 2, 3] and ended.last_sequence == 3
        assert events[1].payload == Failed(ended.failure)
        assert events[2].payload == StateChanged(JobState.QUEUED, JobState.FAILED, ended.failure.message)
        assert [i for i in items if isinstance(i, JobEvent)] == events
        assert not mgr.runner.started.is_set()
    finally:
        await stop(mgr)
        slots.shutdown()


async def test_a_job_the_store_cannot_end_either_is_logged_and_the_worker_goes_on(tmp_path: Path, caplog):
    """The store fails the end as well (its write): the job is left as it is, once, logged; the next job runs."""
    store, slots = FailingStore(claims=1, writes=1), JobSlots(1)
    mgr = await make_manager(store, tmp_path, slots)
    try:
        with caplog.at_level(logging.ERROR, logger="engine.jobs.last_attempt"):
            stuck = await mgr.submit(mgr.new_job(CountSpec(1), CountOutput()))
            mgr.runner.release.release()
            job = await mgr.submit(mgr.new_job(CountSpec(1), CountOutput()))
            items = await _watched(mgr, job.id)
        assert items[-1].payload.state is JobState.SUCCEEDED
        assert (await store.get_job(stuck.id)).state is JobState.QUEUED and store.writes == 0
        assert any("could not end a job" in r.getMessage() for r in caplog.records)
    finally:
        await stop(mgr)
        slots.shutdown()
