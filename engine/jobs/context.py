"""What a runner sees of the job it runs (:class:`JobContext`), and what every kind's jobs share in a process.

A :class:`~engine.jobs.manager.JobManager` holds each job its worker runs as a :class:`LiveJob` (the job, its
complete event log, the lease it runs under) and hands the kind's :class:`JobRunner` a :class:`JobContext` on it:
reports go back through the manager (:class:`JobHost`), blocking work runs in the process's :class:`JobSlots`.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from engine.jobs.core import Job, JobEvent, JobKind, JobProgress, JobState
from engine.jobs.ports import CancelToken, Lease, ProgressSink

S = TypeVar("S")
O = TypeVar("O")  # noqa: E741 - as in engine.jobs.core
T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


class JobSlots:
    """How many jobs run at once in this process across every kind, and the worker threads they run in."""

    def __init__(self, max_concurrent_jobs: int = 1) -> None:
        self.max_concurrent_jobs = max_concurrent_jobs
        self.executor = ThreadPoolExecutor(max_workers=max_concurrent_jobs, thread_name_prefix="job")
        self._semaphore: asyncio.Semaphore | None = None

    @property
    def semaphore(self) -> asyncio.Semaphore:
        if self._semaphore is None:  # made on first use, inside the running loop
            self._semaphore = asyncio.Semaphore(self.max_concurrent_jobs)
        return self._semaphore

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class JobRunner(Protocol[S, O]):
    """What running one kind of job means."""

    kind: JobKind[S, O]

    async def run(self, ctx: JobContext[S, O]) -> str:
        """Do the job, reporting through ``ctx``; return the message of its SUCCEEDED state. Stops with
        ``Cancelled`` once ``ctx.cancel`` is set (after a checkpoint if ``ctx.cancel.keeps_progress``)."""
        ...

    def fold(self, job: Job[S, O], payload: object) -> Job[S, O]:
        """The job with one of the kind's own events folded in (e.g. step metrics into progress)."""
        ...


@dataclass(frozen=True)
class IdleCancel(Generic[O]):
    """What a :class:`CancelHook` made of a job cancelled while none of it ran: what to add to its log (notices,
    warnings: what became of what it left), and its output when that changed (None: as it is)."""

    notes: Sequence[object] = ()
    output: O | None = None


@runtime_checkable
class CancelHook(Protocol[S, O]):
    """What a :class:`JobRunner` whose runs leave something beyond themselves (a pipeline run's canary in force, a
    training job's metrics to store) adds, for a cancel no run of the job carries out: the job was queued or paused
    (the manager ends it in the store), being let go of by its worker (the release ends it), or taken up with the
    cancel pending (it ends before its run starts). A running job's cancel is the runner's own (``run`` ends it); a
    runner without this hook has nothing to end."""

    async def cancelled_while_idle(self, job: Job[S, O], events: Sequence[JobEvent]) -> IdleCancel[O]:
        """``job`` is stored CANCELLED, with its log ``events``: end what its runs left. A failure is the runner's to
        report in the notes: the cancel stands."""
        ...


@runtime_checkable
class ResultHook(Protocol[S, O]):
    """What a :class:`JobRunner` adds whose run makes its result durable outside the job (a training job's version,
    registered under the job's own request id) before the job's end is stored: a worker that stops in between
    (killed while it stored the job's metrics, say) leaves the result made and the job active, and the worker that
    takes the job up next must neither make it again nor end the job otherwise (a cancel or a failure of a run the
    job no longer needs) while it exists. The manager asks it first, every time a worker takes the job up, a cancel
    or a pause pending on the job or not."""

    async def earlier_result(self, ctx: JobContext[S, O]) -> str | None:
        """Whether an earlier run of ``ctx.job`` made its result: if it did, that result set on the job through
        ``ctx`` (its output, as the run would have left it), and the message of its SUCCEEDED state; None if none
        did (the job is run)."""
        ...


@dataclass
class LiveJob(Generic[S, O]):
    """A job this process's worker holds, with its complete event log (``events``; those up to ``stored`` are in
    the store, the rest are being written: a worker that loses the job drops them, and the job's next holder
    records its own events under those sequence numbers)."""

    job: Job[S, O]
    events: list[JobEvent]
    lease: Lease
    stored: int = 0  # the sequence of the last event the store holds: what a watcher may be shown
    prepared: object = None  # what validation resolved at create time, if this process created the job
    taken_over_from: str = ""  # the worker that held it before, if it was resumed after that worker stopped
    cancel: CancelToken = field(default_factory=CancelToken)
    unpersisted: list[JobEvent] = field(default_factory=list)
    flush_scheduled: bool = False  # a background flush is on its way: it writes what is recorded until it runs
    releasing: bool = False  # the worker is letting go of it: a cancel or pause now goes through the store
    finished: bool = False
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def moved_past(self, seen: int) -> bool:
        """Whether the job was let go of, or the store holds events after sequence ``seen``."""
        return self.finished or seen < self.stored


class JobHost(Protocol[S, O]):
    """What a :class:`JobContext` reports to: the manager running the job."""

    slots: JobSlots

    def record(self, live: LiveJob[S, O], payload: object) -> None: ...

    async def persist(self, live: LiveJob[S, O]) -> None: ...

    def transition(self, live: LiveJob[S, O], state: JobState, message: str) -> None: ...


class JobContext(Generic[S, O]):
    """What a runner sees of its job: the job as it is now, how to report, stop and run blocking work."""

    def __init__(self, manager: JobHost[S, O], live: LiveJob[S, O], work_dir: Path) -> None:
        self._manager = manager
        self._live = live
        self.work_dir = work_dir
        self.cancel = live.cancel
        self.sink: ProgressSink = LoopSink(asyncio.get_running_loop(), self.record)

    @property
    def job(self) -> Job[S, O]:
        return self._live.job

    @property
    def prepared(self) -> object:
        """What create-time validation resolved (None when another process created the job)."""
        return self._live.prepared

    @property
    def taken_over_from(self) -> str:
        """The worker that held the job before this one, when it is resumed after that worker stopped."""
        return self._live.taken_over_from

    @property
    def events(self) -> list[JobEvent]:
        """The job's event log so far, also what earlier runs of it recorded (a copy)."""
        return list(self._live.events)

    @property
    def lease_token(self) -> str:
        """This worker's claim on the job: fences what it publishes (engine.registry.PublishRequest.fence)."""
        return self._live.lease.token

    def record(self, payload: object) -> None:
        self._manager.record(self._live, payload)

    async def persist(self) -> None:
        """Store the job and its events now (raises LeaseLost, or the store's error: nothing is dropped)."""
        await self._manager.persist(self._live)

    def transition(self, state: JobState, message: str) -> None:
        self._manager.transition(self._live, state, message)

    def started(self, state: JobState, message: str, *, total_steps: int = 0) -> None:
        """Enter ``state`` (RUNNING) now: sets start_time (the first time), and the step count when known."""
        job = self._live.job
        self._live.job = replace(job, start_time=job.start_time or now(),
                                 progress=JobProgress(0, total_steps) if total_steps else job.progress)
        self.transition(state, message)

    def set_output(self, output: O) -> None:
        self._live.job = replace(self._live.job, output=output)

    async def in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work in a job worker thread; spans it opens nest under the caller's."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._manager.slots.executor, context.run, fn, *args)


class LoopSink:
    """ProgressSink that hands events from worker threads to the event loop, in the order they happen.

    On the loop's own thread it records at once, so an event emitted by async code is not overtaken
    by a state change recorded right after it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, record: Callable[[object], None]) -> None:
        self._loop = loop
        self._record = record
        self._loop_thread = threading.get_ident()  # built on the loop's thread (JobContext)

    def emit(self, payload: object) -> None:
        if threading.get_ident() == self._loop_thread:
            self._record(payload)
        else:
            self._loop.call_soon_threadsafe(self._record, payload)


__all__ = ["CancelHook", "IdleCancel", "JobContext", "JobHost", "JobRunner", "JobSlots", "LiveJob", "ResultHook",
           "now"]
