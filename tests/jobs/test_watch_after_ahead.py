"""A watch of a job this process's worker holds, asked to resume after a sequence the job has not reached yet (a
client that saw the events on another replica first, or a typo), yields only the events after that sequence: it
began at the end of the events in memory and then yielded every event appended there, the one numbered exactly
``after_sequence`` included."""

from __future__ import annotations

import asyncio

from engine.jobs.core import Job, JobEvent, JobState
from tests.jobs.test_job_core import CountOutput, CountSpec, manager, store  # noqa: F401 - fixtures


async def test_a_live_watch_after_a_sequence_not_reached_yet_yields_only_later_events(manager) -> None:  # noqa: F811
    job = await manager.submit(manager.new_job(CountSpec(4), CountOutput()))
    await manager.runner.started.wait()
    while (await manager.get(job.id)).state is not JobState.RUNNING:
        await asyncio.sleep(0.01)
    after = (await manager.get(job.id)).last_sequence + 2  # two events ahead of the job
    stream = manager.watch(job.id, after_sequence=after)
    snapshot = await anext(stream)
    assert isinstance(snapshot, Job) and snapshot.id == job.id
    for _ in range(4):
        manager.runner.release.release()
    sequences = []
    async with asyncio.timeout(15):
        async for item in stream:
            assert isinstance(item, JobEvent)
            sequences.append(item.sequence)
    assert sequences and min(sequences) == after + 1, sequences
    assert sequences == sorted(set(sequences)), sequences
