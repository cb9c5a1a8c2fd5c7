"""How a :class:`~engine.jobs.manager.JobManager` writes its jobs' events to the store, and lets go of a job it held.

``JobEventLog[S, O]``, the manager's base class, is that writing half. An event the running job records is appended
in memory and written through to the store at once in the background, fenced by the job's lease, so a worker that
lost the job to another writes nothing more. Watchers are shown an event once it is stored (``LiveJob.stored``, woken
as it advances), never before: the events a worker that lost its job had not stored are dropped, and the job's next
holder records its own under those sequence numbers. A write that fails (the database restarting) keeps its events
pending and is retried: the stored log never has a gap. When the run stops, the job is
closed (its end stored before its watch streams end), released (PAUSED, or QUEUED again for any worker, carrying
out a cancel or pause asked meanwhile) or, taken over by another worker, dropped unwritten. A job no worker holds
is moved directly, its events with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Generic, TypeVar

from engine import telemetry
from engine.errors import Aborted
from engine.jobs.context import JobRunner, LiveJob, now
from engine.jobs.core import Control, Failed, Job, JobEvent, JobFailure, JobKind, JobProgress, JobState, StateChanged
from engine.jobs.ports import JobQueue, JobStore, Lease, LeaseLost, StopReason

log = logging.getLogger(__name__)

S = TypeVar("S")
O = TypeVar("O")  # noqa: E741 - as in engine.jobs.core

FLUSH_RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)  # then every 5 s until the store takes the events


class JobEventLog(Generic[S, O]):
    """The writing half of a :class:`~engine.jobs.manager.JobManager`; see the module docstring. The manager's
    ``__init__`` sets the attributes declared here."""

    kind: JobKind[S, O]
    runner: JobRunner[S, O]
    worker_id: str
    _store: JobStore[S, O]
    _queue: JobQueue
    _live: dict[str, LiveJob[S, O]]
    _tasks: set[asyncio.Task[None]]
    _flush_lock: asyncio.Lock
    _closing: bool
    _idle: asyncio.Event  # no job held by this process's worker

    # ---- a job no run of it holds --------------------------------------------------

    async def _write_idle(
        self, job: Job[S, O], state: JobState, message: str, *, failure: JobFailure | None = None,
        lease: Lease | None = None, after: Sequence[object] = (),
    ) -> Job[S, O]:
        """Move a job no run of it holds to ``state``, with its events (``after``: more, after the state change):
        one no worker holds (Aborted if a worker claimed it meanwhile), or, with ``lease``, one this worker claimed
        but never ran, moved under that lease and let go of (LeaseLost if another worker took it over meanwhile)."""
        events: list[object] = []
        if failure is not None and state is JobState.FAILED:
            events.append(Failed(failure))
        events.append(StateChanged(job.state, state, message))
        events.extend(after)
        logged = [JobEvent(job.last_sequence + i + 1, now(), p) for i, p in enumerate(events)]
        ended = state.terminal
        updated = replace(job, state=state, last_sequence=logged[-1].sequence, failure=failure,
                          end_time=now() if ended else job.end_time)
        if lease is None:
            await self._store.write(updated, logged, None)
        else:
            await self._store.release(updated, logged, lease)
        telemetry.job_state_changed(self.kind.name, job.id, state.value, held=False)
        return updated

    # ---- event log --------------------------------------------------------------

    def record(self, live: LiveJob[S, O], payload: object) -> None:
        """Append one event (on the loop thread) and fold it into the job."""
        self._record(live, payload)

    def _record(self, live: LiveJob[S, O], payload: object) -> None:
        if live.cancel.reason is StopReason.LEASE_LOST:
            return  # another worker owns the log now
        event = JobEvent(live.job.last_sequence + 1, now(), payload)
        job = replace(live.job, last_sequence=event.sequence)
        if not isinstance(payload, (StateChanged, Failed)):
            job = self.runner.fold(job, payload)
        live.job = job
        if isinstance(payload, StateChanged):
            telemetry.job_state_changed(self.kind.name, job.id, payload.state.value, held=not payload.state.terminal)
        live.events.append(event)
        live.unpersisted.append(event)  # watchers are woken once it is stored (_stored)
        if not (live.flush_scheduled or live.releasing):  # else that flush, or the release, writes it
            live.flush_scheduled = True
            self._spawn(self._flush_soon(live))

    async def persist(self, live: LiveJob[S, O]) -> None:
        try:
            await self._flush(live)
        except LeaseLost:
            live.cancel.cancel(StopReason.LEASE_LOST)
            raise

    async def _stored(self, live: LiveJob[S, O], batch: list[JobEvent]) -> None:
        """``batch`` was just written: its events may be shown to watchers now; wake them."""
        if batch:
            live.stored = max(live.stored, batch[-1].sequence)
            async with live.changed:
                live.changed.notify_all()

    def transition(self, live: LiveJob[S, O], state: JobState, message: str) -> None:
        previous = live.job.state
        live.job = replace(live.job, state=state)
        self._record(live, StateChanged(previous, state, message))

    def _finish(
        self, live: LiveJob[S, O], state: JobState, message: str, *, failure: JobFailure | None = None
    ) -> None:
        live.job = replace(live.job, end_time=now(), failure=failure if state is not JobState.SUCCEEDED else None)
        if state is JobState.SUCCEEDED:
            total = live.job.progress.total_steps
            live.job = replace(live.job, progress=JobProgress(total, total, 0.0))
        if failure is not None and state is JobState.FAILED:
            self._record(live, Failed(failure))
        self.transition(live, state, message)
        log.info("job ended", extra={"job_id": live.job.id, "state": state.value})

    async def _close(self, live: LiveJob[S, O]) -> None:
        """Persist the ended job, then end its watch streams: once a stream ends, reads see the end state."""
        try:
            await self._flush_until_stored(live)
        except LeaseLost:
            pass
        finally:
            await self._forget(live)

    async def _release(self, live: LiveJob[S, O], state: JobState) -> None:
        """Stop holding the job: PAUSED (a client paused it) or QUEUED again (this worker is stopping).

        From here on nothing is added to the job's log in memory: a cancel or pause asked meanwhile goes through
        the store, where the release finds it pending (and carries it out below) or, asked after it, finds the
        job unclaimed."""
        live.releasing = True
        message = "paused" if state is JobState.PAUSED else f"queued again: worker {self.worker_id} stopped"
        self.transition(live, state, message)
        pending: Control | None = None
        try:
            for attempt in range(len(FLUSH_RETRY_SECONDS) + 1):
                try:
                    async with self._flush_lock:
                        batch = list(live.unpersisted)
                        pending = await self._store.release(live.job, batch, live.lease)
                        del live.unpersisted[: len(batch)]
                        await self._stored(live, batch)
                    break
                except LeaseLost:
                    return
                except Exception:  # noqa: BLE001 - the database restarting
                    if attempt == len(FLUSH_RETRY_SECONDS):
                        raise
                    await asyncio.sleep(FLUSH_RETRY_SECONDS[attempt])
            # A request made after this worker last looked is carried out now that the job is unclaimed.
            if pending is Control.CANCEL:
                with contextlib.suppress(Aborted):
                    live.job = await self._write_idle(
                        live.job, JobState.CANCELLED, "cancelled",
                        failure=JobFailure("CANCELLED", "JOB_CANCELLED", "cancelled while it was stopping"))
                    return
            if pending is Control.PAUSE and state is JobState.QUEUED:
                with contextlib.suppress(Aborted):
                    live.job = await self._write_idle(live.job, JobState.PAUSED, "paused")
                    return
            if state is JobState.QUEUED:
                await self._queue.enqueue(self.kind.name, live.job.id, priority=live.job.priority)
        finally:
            await self._forget(live)

    async def _drop(self, live: LiveJob[S, O]) -> None:
        """Forget a job another worker took over, writing nothing."""
        live.unpersisted.clear()
        await self._forget(live)

    async def _forget(self, live: LiveJob[S, O]) -> None:
        telemetry.job_let_go(self.kind.name, live.job.id)  # however it was let go of: ended, released or dropped
        async with live.changed:
            live.finished = True
            live.changed.notify_all()
        self._live.pop(live.job.id, None)
        if not self._live:
            self._idle.set()

    async def _flush(self, live: LiveJob[S, O]) -> None:
        """Write the pending events and the job, again while events were recorded during the write (unless the
        job is being released, which writes them); on failure the events stay pending (nothing is dropped)."""
        async with self._flush_lock:
            while True:
                batch = list(live.unpersisted)
                await self._store.write(live.job, batch, live.lease)
                del live.unpersisted[: len(batch)]
                await self._stored(live, batch)
                if not live.unpersisted or live.releasing:
                    return

    async def _flush_soon(self, live: LiveJob[S, O]) -> None:
        """A background flush after an event, writing as well what is recorded until it is done. If the store is
        down it is retried with backoff (watchers see the events once they are stored), until the job is let go
        of: its end or release writes what is pending then."""
        attempt = 0
        try:
            while True:
                try:
                    await self._flush(live)
                    return
                except LeaseLost:
                    live.cancel.cancel(StopReason.LEASE_LOST)
                    return
                except Exception as exc:  # noqa: BLE001 - kept pending; retried below
                    delay = FLUSH_RETRY_SECONDS[min(attempt, len(FLUSH_RETRY_SECONDS) - 1)]
                    log.warning("job events not stored yet; will retry",
                                extra={"job_id": live.job.id, "error": str(exc), "retry_in_seconds": delay})
                attempt += 1
                await asyncio.sleep(delay)
                if live.finished or live.releasing or live.cancel.reason is StopReason.LEASE_LOST:
                    return
        finally:
            live.flush_scheduled = False  # an event recorded from now on schedules the next

    async def _flush_until_stored(self, live: LiveJob[S, O]) -> None:
        """Flush, retrying with backoff while the store is unreachable (a job's end must be stored)."""
        attempt = 0
        while True:
            try:
                await self._flush(live)
                return
            except LeaseLost:
                raise
            except Exception as exc:  # noqa: BLE001 - the database restarting; try again
                if self._closing and attempt >= len(FLUSH_RETRY_SECONDS):
                    log.error("could not store the end of a job before shutdown",
                              extra={"job_id": live.job.id, "error": str(exc)})
                    raise
                delay = FLUSH_RETRY_SECONDS[min(attempt, len(FLUSH_RETRY_SECONDS) - 1)]
                log.warning("job state not stored yet; retrying",
                            extra={"job_id": live.job.id, "error": str(exc), "retry_in_seconds": delay})
                attempt += 1
                await asyncio.sleep(delay)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
