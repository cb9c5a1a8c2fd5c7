"""A job list's state filter matches the state the list (and Get) shows: a job a worker holds that a client asked to
pause or cancel is shown PAUSING or CANCELLING before its worker acts, and listed under that state, not under the
state stored for it (found in review: ListTrainingJobs{states:[PAUSING]} returned nothing, {states:[RUNNING]} returned
the job shown PAUSING). Held for both job stores, a page full when more jobs match, and for the manager, which shows
a job running in its process as it is in memory (ahead of the store)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from engine.jobs.core import Control, Job, JobEvent, JobState, StateChanged
from engine.stores.job_store import PostgresJobStore
from engine.stores.memory import InMemoryJobStore
from engine.stores.postgres import migrate
from tests.jobs.test_job_core import COUNT, CountOutput, CountSpec, manager, store  # noqa: F401 - fixtures

T0 = datetime(2025, 1, 1, tzinfo=UTC)


async def _job(jobs, job_id: str, minute: int, *, running: bool = True, requested: Control | None = None) -> None:
    """A job claimed by a worker on another machine (RUNNING, or still QUEUED as just claimed), and a client's
    request of it that worker has not looked at yet."""
    t = T0 + timedelta(minutes=minute)
    job = await jobs.insert_job(Job(id=job_id, kind=COUNT.name, spec=CountSpec(3), output=CountOutput(),
                                     state=JobState.QUEUED, create_time=t, last_sequence=1),
                                 [JobEvent(1, t, StateChanged(None, JobState.QUEUED))])
    claim = await jobs.claim(job.id, "worker-elsewhere")
    assert claim is not None
    if running:
        await jobs.write(replace(claim.job, state=JobState.RUNNING, last_sequence=2),
                         [JobEvent(2, t, StateChanged(JobState.QUEUED, JobState.RUNNING))], claim.lease)
    if requested is not None:
        await jobs.request(job.id, requested)


async def _listed(jobs, states: list[JobState], limit: int = 10, before: tuple[datetime, str] | None = None):
    return [(j.id, j.state) for j in await jobs.list_jobs(states=states, limit=limit, before=before)]


async def _check_lists_filter_on_the_shown_state(jobs) -> None:
    await _job(jobs, "j1", 1, requested=Control.PAUSE)
    await _job(jobs, "j2", 2)
    await _job(jobs, "j3", 3, requested=Control.CANCEL)
    await _job(jobs, "j4", 4, requested=Control.PAUSE)
    await _job(jobs, "j5", 5, running=False, requested=Control.PAUSE)  # claimed, not started: shown QUEUED
    shown = {j: (await jobs.get_job(j)).state for j in ("j1", "j2", "j3", "j4", "j5")}
    assert shown == {"j1": JobState.PAUSING, "j2": JobState.RUNNING, "j3": JobState.CANCELLING,
                     "j4": JobState.PAUSING, "j5": JobState.QUEUED}, f"Get shows {shown}"

    for state in (JobState.PAUSING, JobState.RUNNING, JobState.CANCELLING, JobState.QUEUED):
        listed = await _listed(jobs, [state])
        expected = [(j, s) for j, s in sorted(shown.items(), reverse=True) if s is state]
        assert listed == expected, f"listed under {state.value}: {listed}; the jobs Get shows so: {expected}"
    everything = await _listed(jobs, [])
    assert everything == sorted(shown.items(), reverse=True), f"the unfiltered list shows {everything}"
    both = await _listed(jobs, [JobState.PAUSING, JobState.CANCELLING])
    assert both == [("j4", JobState.PAUSING), ("j3", JobState.CANCELLING), ("j1", JobState.PAUSING)], (
        f"listed under PAUSING or CANCELLING: {both}")

    # Pages: full while more jobs match, j2 (RUNNING) between the PAUSING ones filtered out in the query.
    first = await _listed(jobs, [JobState.PAUSING], limit=1)
    assert first == [("j4", JobState.PAUSING)], f"a page of one PAUSING job: {first}"
    second = await _listed(jobs, [JobState.PAUSING], limit=1, before=(T0 + timedelta(minutes=4), "j4"))
    assert second == [("j1", JobState.PAUSING)], f"the page after j4: {second}"


async def test_the_in_memory_store_lists_a_job_under_the_state_it_shows():
    await _check_lists_filter_on_the_shown_state(InMemoryJobStore())


@pytest.mark.full_stack
async def test_the_postgres_store_lists_a_job_under_the_state_it_shows(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        await migrate(pool)
        await _check_lists_filter_on_the_shown_state(PostgresJobStore(pool, COUNT))
    finally:
        await pool.close()


async def test_the_manager_lists_a_job_running_here_under_the_state_it_shows(manager, store):  # noqa: F811
    """A job this process runs is listed as it is in memory; it ended there while the store was down (its end not
    stored yet), so the store still has it RUNNING: it is not listed under RUNNING, and the pages are still full."""
    await _job(store, "older-a", -2)  # RUNNING on another worker
    await _job(store, "older-b", -1)
    job = await manager.submit(manager.new_job(CountSpec(2), CountOutput()))
    await manager.runner.started.wait()
    async with asyncio.timeout(10):
        while (await store.get_job(job.id)).state is not JobState.RUNNING:
            await asyncio.sleep(0.01)
    store.down = True
    try:
        manager.runner.release.release()
        manager.runner.release.release()
        async with asyncio.timeout(10):
            while (await manager.get(job.id)).state is not JobState.SUCCEEDED:
                await asyncio.sleep(0.01)
        assert (await store.get_job(job.id)).state is JobState.RUNNING and store.refused, "the end was stored"

        listed, token = await manager.list(states=[JobState.RUNNING], page_size=10, page_token="")
        assert [(j.id, j.state) for j in listed] == [("older-b", JobState.RUNNING), ("older-a", JobState.RUNNING)], (
            f"listed under RUNNING: {[(j.id, j.state.value) for j in listed]}")
        assert token == ""
        pages, token = [], ""
        while True:
            page, token = await manager.list(states=[JobState.RUNNING], page_size=1, page_token=token)
            pages.append([(j.id, j.state) for j in page])
            if not token:
                break
        assert pages == [[("older-b", JobState.RUNNING)], [("older-a", JobState.RUNNING)]], (
            f"pages of one RUNNING job: {pages}")
    finally:
        store.down = False  # the end is stored
