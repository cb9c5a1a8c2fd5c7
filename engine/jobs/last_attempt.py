"""What becomes of a job when the job queue's last attempt at it fails around its run.

:meth:`~engine.jobs.manager.JobManager.execute` raises when something around the run fails (the store, taking the
job or reading its log), and the queue runs it again; after the queue's last attempt
(:data:`~engine.jobs.ports.queue_attempt`) nothing would, and the job would stay active with nothing queued to run
it. :class:`LastAttempt` ends it then (FAILED, or as a cancel or pause asked of it meanwhile says), or queues it
again when it is not that attempt's to end.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from engine.errors import Aborted
from engine.jobs.core import Control, Job, JobFailure, JobState
from engine.jobs.ports import Claim, JobQueue, JobStore, Lease, LeaseLost, QueueAttempt

log = logging.getLogger(__name__)

S = TypeVar("S")
O = TypeVar("O")  # noqa: E741 - as in engine.jobs.core


class IdleWrite(Protocol[S, O]):
    """How the manager moves a job no run of it holds to ``state``, with its events
    (:meth:`~engine.jobs.event_log.JobEventLog._write_idle`)."""

    async def __call__(
        self, job: Job[S, O], state: JobState, message: str, *, failure: JobFailure | None = None,
        lease: Lease | None = None,
    ) -> Job[S, O]: ...


class LastAttempt(Generic[S, O]):
    """Ends, or queues again, a job of one kind whose queue item's last attempt failed; see the module docstring.
    ``write_idle`` and ``cancelled_while_idle`` are the manager's: how it moves a job no run of it holds, and what
    it does once such a job was stored CANCELLED."""

    def __init__(
        self, *, kind: str, store: JobStore[S, O], queue: JobQueue, write_idle: IdleWrite[S, O],
        cancelled_while_idle: Callable[[Job[S, O]], Awaitable[Job[S, O]]],
    ) -> None:
        self._kind = kind
        self._store = store
        self._queue = queue
        self._write_idle = write_idle
        self._cancelled_while_idle = cancelled_while_idle

    async def give_up(self, job_id: str, attempt: QueueAttempt, doing: str, error: Exception,
                      claim: Claim[S, O] | None) -> None:
        """The queue's last attempt at the job failed before its run began: end the job, or it would stay active
        with no queue item to run it, and its watchers would wait for ever. FAILED, or as a cancel or pause asked
        of it meanwhile says (CANCELLED, PAUSED: resumable). Never taken from another worker: with the claim this
        attempt made, under its lease (a worker that took the job over since holds another, and runs it); without
        one (the claim is what failed), only if no worker holds the job, as a cancel ends a queued job. A job
        another worker holds that way may be one whose worker stopped (the item failing here was the one to take
        it over): it is queued again, to be taken over by a later attempt, or found ended or paused by its
        holder. Written once: if the store fails here as well, it is left as it is and logged. A failure after
        the run began (storing its end) is not this: the run decided how the job ends (``queue_again``)."""
        log.error("the job queue's last attempt at a job failed; ending the job",
                  extra={"job_id": job_id, "kind": self._kind, "attempts": attempt.number},
                  exc_info=(type(error), error, error.__traceback__))
        message = (f"the job queue gave up on this job: its last attempt (of {attempt.number}) failed {doing} "
                   f"({type(error).__name__})")
        failure = JobFailure("UNAVAILABLE", "JOB_QUEUE_RETRIES_EXHAUSTED", message,
                             (("attempts", str(attempt.number)),))
        try:
            job = await self._store.get_job(job_id)  # as stored now: its log may have grown since the claim
            if job is None or job.state.terminal or job.state is JobState.PAUSED:
                return
            if claim is None:
                ended = await self._write_idle(job, JobState.FAILED, message, failure=failure)
            else:
                requested = await self._store.control(job_id, claim.lease) or claim.requested
                if requested is Control.PAUSE:
                    state, note, why = JobState.PAUSED, f"paused as asked: {message}", None
                elif requested is Control.CANCEL:
                    note = f"cancelled as asked: {message}"
                    state, why = JobState.CANCELLED, JobFailure("CANCELLED", "JOB_CANCELLED", note)
                else:
                    state, note, why = JobState.FAILED, message, failure
                ended = await self._write_idle(job, state, note, failure=why, lease=claim.lease)
        except LeaseLost:  # a worker took it over meanwhile (it holds its own queue item)
            log.info("a job the job queue gave up on was taken over by another worker", extra={"job_id": job_id})
            return
        except Aborted:  # a worker holds it: alive (running it) or stopped (this item was to take it over)
            await self.queue_again(job_id, error)
            return
        except Exception:  # noqa: BLE001 - once only: the queue is done with the job, and so is this worker
            log.exception("could not end a job the job queue gave up on; it stays as it is",
                          extra={"job_id": job_id, "kind": self._kind})
            return
        if ended.state is JobState.CANCELLED:
            await self._cancelled_while_idle(ended)

    async def queue_again(self, job_id: str, error: Exception) -> None:
        """The queue's last attempt is over and the job is not this attempt's to end: queue it again, so that it is
        never left active with nothing queued (a fresh item waits while this one ends, as procrastinate's lock
        keeps it; its first run claims the job, and finds it ended or paused if a worker holding it ended it). A
        pause or cancel asked of it comes with that claim, as a stopped worker's does."""
        log.warning("queueing again a job the job queue's last attempt could not end",
                    extra={"job_id": job_id, "kind": self._kind, "error": type(error).__name__})
        try:
            job = await self._store.get_job(job_id)
            if job is None or job.state.terminal or job.state is JobState.PAUSED:
                return
            await self._queue.enqueue(self._kind, job_id, priority=job.priority)
        except Exception:  # noqa: BLE001 - the store down: a restart's recovery queues it if it is QUEUED
            log.exception("could not queue again a job the job queue gave up on",
                          extra={"job_id": job_id, "kind": self._kind})
