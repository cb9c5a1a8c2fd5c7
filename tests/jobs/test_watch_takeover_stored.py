"""A watch on the worker that loses its job shows the job's stored log: the events that worker recorded but could not
store are never shown, and the events the worker taking the job over records under those sequence numbers are
(found in review: the watcher was shown the unstored events from memory and then skipped the new worker's)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from engine.jobs.context import now
from engine.jobs.core import JobEvent, JobState, Noticed, StateChanged
from engine.jobs.ports import StopReason
from tests.jobs.test_job_core import Counted, CountOutput, CountSpec, manager, store  # noqa: F401 - fixtures

WAIT = 10  # seconds for anything the test waits on


def _described(events: list[JobEvent]) -> list[tuple[int, object]]:
    return [(e.sequence, e.payload) for e in events]


async def test_a_watch_across_a_takeover_shows_the_stored_log_without_gaps(manager, store):  # noqa: F811
    job = await manager.submit(manager.new_job(CountSpec(5), CountOutput()))
    await manager.runner.started.wait()
    manager.runner.release.release()  # Counted(1), recorded and stored
    async with asyncio.timeout(WAIT):
        while not any(isinstance(e.payload, Counted) for e in await store.list_events(job.id, after_sequence=0)):
            await asyncio.sleep(0.01)
    stored_before = (await store.get_job(job.id)).last_sequence

    seen: list[JobEvent] = []

    async def watch() -> None:
        async for item in manager.watch(job.id):
            if isinstance(item, JobEvent):
                seen.append(item)

    watcher = asyncio.get_running_loop().create_task(watch())
    async with asyncio.timeout(WAIT):  # the watcher is shown the stored log so far
        while not seen or seen[-1].sequence < stored_before:
            await asyncio.sleep(0.01)

    # This worker is cut off from the database: its writes fail; it records Counted(2) and Counted(3) in memory.
    store.down = True
    manager.runner.release.release()
    manager.runner.release.release()
    live = manager._live[job.id]
    async with asyncio.timeout(WAIT):
        while not (any(isinstance(e.payload, Counted) and e.payload.n == 3 for e in live.events)
                   and store.refused > 0):
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # time for a watcher to be (wrongly) shown them
    unstored = [e for e in seen if e.sequence > stored_before]
    assert not unstored, f"the watcher was shown events the store does not hold: {_described(unstored)}"

    # Another worker takes the job over (this one's heartbeat stopped) and carries it on to its end.
    claim = await store.claim(job.id, "worker-B")
    assert claim is not None and claim.job.last_sequence == stored_before
    store.down = False
    async with asyncio.timeout(WAIT):  # this worker's control poll (or its write) finds its lease lost
        while live.cancel.reason is not StopReason.LEASE_LOST:
            await asyncio.sleep(0.01)
    manager.runner.release.release()  # its run looks again and stops
    taken = claim.job
    b_events = [JobEvent(taken.last_sequence + 1, now(), Noticed("TAKEN_OVER", "worker-B continues it")),
                JobEvent(taken.last_sequence + 2, now(), Counted(2)),
                JobEvent(taken.last_sequence + 3, now(), StateChanged(JobState.RUNNING, JobState.SUCCEEDED, "done"))]
    await store.write(replace(taken, state=JobState.SUCCEEDED, last_sequence=taken.last_sequence + 3,
                              end_time=now()), b_events, claim.lease)

    try:
        async with asyncio.timeout(WAIT):
            await watcher
    except TimeoutError:
        watcher.cancel()
        raise AssertionError(f"the watch did not end with the job; it was shown {_described(seen)}") from None
    stored = await store.list_events(job.id, after_sequence=0)
    assert [e.sequence for e in stored] == list(range(1, stored[-1].sequence + 1)), "a gap in the stored log"
    # What the client was shown is the job's log: every stored event once, in order, nothing never stored.
    assert _described(seen) == _described(stored), (
        f"the watch showed {_described(seen)}; the stored log is {_described(stored)}")

    # A client reconnecting after any event it was shown is shown the rest of the log, no gap, no repeat.
    for shown in seen:
        resumed = [i for i in [item async for item in manager.watch(job.id, after_sequence=shown.sequence)]
                   if isinstance(i, JobEvent)]
        assert _described(resumed) == _described([e for e in stored if e.sequence > shown.sequence]), (
            f"resumed after {shown.sequence}, shown {_described(resumed)}")
