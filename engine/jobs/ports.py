"""Ports of the job core: where jobs are stored, the queue that hands them to workers, where a running job
reports, and how it is stopped.

:class:`JobStore` is implemented by ``engine.stores.job_store`` (PostgreSQL) and ``engine.stores.memory``;
:class:`JobQueue` by ``engine.stores.job_queue`` (procrastinate on PostgreSQL: workers on many machines) and
``engine.stores.memory`` (in process). The composition root picks them.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from engine.domain import Pin
from engine.errors import Aborted
from engine.jobs.core import Control, Job, JobEvent, JobState

S = TypeVar("S")
O = TypeVar("O")  # noqa: E741 - as in engine.jobs.core


class ProgressSink(Protocol):
    """Where a running job reports. Called from any thread; must not block long."""

    def emit(self, payload: object) -> None: ...


class StopReason(enum.StrEnum):
    CANCEL = "CANCEL"  # a client cancelled the job
    PAUSE = "PAUSE"  # a client paused it: checkpoint, release the worker
    SHUTDOWN = "SHUTDOWN"  # this worker is stopping: checkpoint, hand the job to another worker
    LEASE_LOST = "LEASE_LOST"  # another worker took the job over: stop, write nothing more


class CancelToken:
    """A flag the training loop checks every step, with why it was set. Set from any thread; the first reason
    set wins, but a cancel overrides a pause or a shutdown (the client asked for more than a stop), and a lost
    lease overrides everything (nothing more may be written)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._reason: StopReason | None = None
        self._lock = threading.Lock()

    def cancel(self, reason: StopReason = StopReason.CANCEL) -> None:
        with self._lock:
            if self._reason is None or reason is StopReason.LEASE_LOST or (
                    reason is StopReason.CANCEL and self._reason in (StopReason.PAUSE, StopReason.SHUTDOWN)):
                self._reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> StopReason | None:
        return self._reason

    @property
    def keeps_progress(self) -> bool:
        """Stopping to continue later (pause, shutdown): a checkpoint is worth writing first."""
        return self._reason in (StopReason.PAUSE, StopReason.SHUTDOWN)


@dataclass(frozen=True)
class Lease:
    """A worker's claim on a job. ``token`` is new at every claim: a write fenced by an older token (a worker
    that lost the job to another) is refused."""

    owner: str
    token: str


@dataclass(frozen=True)
class Claim(Generic[S, O]):
    """A job a worker just took: the job as stored, its new lease, the worker that held it before (empty unless
    the job was taken over from a worker that stopped) and the request pending on it (a cancel or pause that
    worker accepted but stopped before carrying out)."""

    job: Job[S, O]
    lease: Lease
    previous_owner: str = ""
    requested: Control | None = None


class LeaseLost(Aborted):
    """The job was taken over by another worker; this one must stop and write nothing more."""


def lease_lost(job_id: str) -> LeaseLost:
    return LeaseLost("LEASE_LOST", f"another worker took job {job_id} over", metadata={"job": job_id})


class JobStore(Protocol[S, O]):
    """Durable storage of the jobs of one kind and their event logs, with leases for the workers running them."""

    async def insert_job(self, job: Job[S, O], events: Sequence[JobEvent] = (), *,
                         pins: Sequence[Pin] = ()) -> Job[S, O]:
        """Insert a new job with its first events, ``pins`` (what it names and needs live) checked in the same
        transaction (a pin's NOT_FOUND stores nothing). If its request_id is taken (for this kind), return the stored
        job instead and store nothing."""
        ...

    async def get_job(self, job_id: str) -> Job[S, O] | None:
        """The job; a non-terminal job with a pending control request shows as CANCELLING / PAUSING."""
        ...

    async def job_for_request(self, request_id: str) -> Job[S, O] | None:
        """The job ``insert_job`` stored under ``request_id`` (for this kind), if any."""
        ...

    async def list_jobs(
        self, *, states: Sequence[JobState], limit: int, before: tuple[datetime, str] | None
    ) -> list[Job[S, O]]:
        """Jobs newest first; ``before`` is the (create_time, id) cursor of the previous page."""
        ...

    async def jobs_in_states(self, states: Sequence[JobState]) -> list[Job[S, O]]:
        """Every job in one of ``states``, oldest first."""
        ...

    async def list_events(self, job_id: str, *, after_sequence: int) -> list[JobEvent]: ...

    async def claim(self, job_id: str, owner: str) -> Claim[S, O] | None:
        """Take the job for ``owner`` with a new lease token, unless it ended or is paused (then None)."""
        ...

    async def write(self, job: Job[S, O], events: Sequence[JobEvent], lease: Lease | None) -> None:
        """Append ``events`` and store ``job``, atomically. With a lease the write is fenced: LeaseLost if another
        claim replaced it. Events already stored (same sequence) are left as they are, so a retry is harmless, and
        a stored job whose log went further is kept. Without a lease the job must be unclaimed or ended (its
        worker writes nothing more to it), with its stored log as the caller read it (Aborted otherwise)."""
        ...

    async def control(self, job_id: str, lease: Lease) -> Control | None:
        """The control request pending on a job this lease holds; LeaseLost if the lease was replaced."""
        ...

    async def request(self, job_id: str, control: Control) -> Job[S, O] | None:
        """Ask the worker holding the job to cancel or pause it; None if no worker holds it (then act directly)."""
        ...

    async def release(self, job: Job[S, O], events: Sequence[JobEvent], lease: Lease) -> Control | None:
        """Write the job (queued again, or paused) and give up the lease, so the next claim starts afresh;
        returns the request that was pending (a cancel asked too late for the worker to see it)."""
        ...

    async def notified(self, job_id: str) -> int:
        """How far the job's notifications have come, taken before reading it: ``wait_for_events`` given it
        returns at once for a write made meanwhile (while the reader was busy), which would otherwise wake no one."""
        ...

    async def wait_for_events(self, job_id: str, timeout: float, since: int | None = None) -> None:
        """Return when events may have been added to the job since ``since`` (from ``notified``; by default from
        now on), at once if they were already, or after ``timeout`` seconds."""
        ...


class JobQueue(Protocol):
    """Hands queued jobs to workers: at least once, a job at a time per worker slot, higher priority first, and
    never one job to two workers at once (a job queued again while it runs waits until that run ends)."""

    async def enqueue(self, kind: str, job_id: str, *, priority: int = 0) -> None:
        """Queue a job for a worker; queueing one that is already waiting is a no-op."""
        ...

    async def held(self, job_ids: Sequence[str]) -> set[str]:
        """The jobs among ``job_ids`` that have an item in the queue, waiting for a worker or being run."""
        ...

    async def waiting_reason(self, kind: str) -> str | None:
        """Why a job of ``kind`` queued now would wait with no worker to take it (none runs that kind), saying what
        would start one; None when a worker takes it, or when that cannot be told now."""
        ...


JobExecutor = Callable[[str, str], Awaitable[None]]  # (kind, job id): runs a job a worker took from the queue


@dataclass(frozen=True)
class QueueAttempt:
    """Which run of its queue item an executor is: ``number`` (1 the first time) and whether it is the ``last``
    (should it raise, the queue will not run the item again)."""

    number: int
    last: bool


# Set by a WorkerQueue around each executor call. An executor that raises is run again by the queue, unless that
# attempt was the last: the executor then ends the job itself (JobManager.execute), else the job would stay active
# with nothing queued to run it. A context variable rather than an argument: the composition root builds executors
# as plain (kind, job id) callables.
queue_attempt: ContextVar[QueueAttempt | None] = ContextVar("queue_attempt", default=None)


class WorkerQueue(JobQueue, Protocol):
    """A queue this process can also work from."""

    def start_worker(self, executors: Mapping[str, JobExecutor], *, concurrency: int, name: str) -> None:
        """Take jobs in this process, ``concurrency`` at a time, each run by its kind's executor with
        ``queue_attempt`` set."""
        ...

    async def stop_worker(self) -> None:
        """Stop taking jobs; wait for the ones running (stopping them is the job managers' part)."""
        ...

    async def close(self) -> None: ...
