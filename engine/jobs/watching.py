"""The event streams a watch of a job follows (:meth:`~engine.jobs.manager.JobManager.watch`).

While this process's worker holds the job, its events come from memory (``watch_live``), each once the store holds
it; any other job's, and a held job's once the worker lets go of it, from the store (``watch_stored``), woken by the
store's notifications, so a watcher on one replica follows a job running on another.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TypeVar

from engine.jobs.context import LiveJob
from engine.jobs.core import Job, JobEvent, JobState
from engine.jobs.ports import JobStore

S = TypeVar("S")
O = TypeVar("O")  # noqa: E741 - as in engine.jobs.core


async def watch_live(live: LiveJob[S, O], after: int) -> AsyncIterator[JobEvent]:
    """The events of a job this worker holds, from memory, each once the store holds it (woken as the store
    takes them), until the worker lets go of the job. What it recorded and had not stored then is never shown:
    a worker that lost the job drops it, and the stored log (``watch_stored``) goes on from there. Only events after
    ``after`` are yielded, also when the job has not reached it yet (events recorded later are compared with it too)."""
    index = next((i for i, ev in enumerate(live.events) if ev.sequence > after), len(live.events))
    while True:
        while index < len(live.events) and live.events[index].sequence <= live.stored:
            event = live.events[index]
            index += 1
            if event.sequence > after:
                after = event.sequence
                yield event
        if live.finished:
            return
        async with live.changed:
            await live.changed.wait_for(functools.partial(live.moved_past, after))


async def watch_stored(
    job_id: str, after: int, *, store: JobStore[S, O], held: Mapping[str, LiveJob[S, O]],
    get: Callable[[str], Awaitable[Job[S, O]]], poll_seconds: float,
) -> AsyncIterator[JobEvent]:
    """Events from the store (the source of truth), woken by its notifications, until the job ends. ``held`` are the
    jobs this process's worker holds, ``get`` reads a job as it is shown (the manager's ``get``), and
    ``poll_seconds`` bounds each wait for a notification."""
    while True:
        live = held.get(job_id)
        if live is not None:  # the local worker took the job meanwhile: follow it from memory
            async for event in watch_live(live, after):
                after = event.sequence
                yield event
        # Taken before reading: a write made from now on, while the consumer is slow to take the events
        # below, ends the wait at once instead of waking no one.
        notified = await store.notified(job_id)
        job = await get(job_id)
        for event in await store.list_events(job_id, after_sequence=after):
            after = event.sequence
            yield event
        if (job.state.terminal or job.state is JobState.PAUSED) and after >= job.last_sequence:
            return
        await store.wait_for_events(job_id, poll_seconds, since=notified)


async def watch_ended(job_id: str, after: int, *, store: JobStore[S, O], poll_seconds: float,
                      done: Callable[[], Awaitable[bool]]) -> AsyncIterator[JobEvent]:
    """Events added to the log of a job that has ended (``JobManager.note``: what became of something it left behind),
    from the store, woken by its notifications, until ``done()`` says no more are coming. It is asked after each
    read of the log (so the events just yielded count), and what was stored before it said so is read once more."""
    while True:
        notified = await store.notified(job_id)
        for event in await store.list_events(job_id, after_sequence=after):
            after = event.sequence
            yield event
        if await done():
            for event in await store.list_events(job_id, after_sequence=after):
                yield event
            return
        await store.wait_for_events(job_id, poll_seconds, since=notified)
