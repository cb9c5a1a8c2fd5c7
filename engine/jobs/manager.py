"""Job lifecycle, shared by every kind: admit, queue, run off the event loop, record events, watch.

``JobManager[S, O]`` runs the jobs of one kind through that kind's :class:`JobRunner`. It keeps an in-memory
log for each job of this process (so watchers see every event at once) and writes the log and the job
through to the :class:`~engine.jobs.ports.JobStore`. A write that fails (the database restarting) keeps its
events pending and is retried, so the stored log never has a gap. A job's lifetime is independent of any
watcher: a client that disconnects stops nothing.

All managers of a process share one :class:`JobSlots`: the number of jobs that run at once (each holds a
model in memory) and the worker threads they run in.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from engine import telemetry
from engine.errors import AlreadyExists, Cancelled, EngineError, FailedPrecondition, NotFound
from engine.jobs.core import (
    ACTIVE_STATES,
    Failed,
    Job,
    JobEvent,
    JobFailure,
    JobKind,
    JobProgress,
    JobState,
    StateChanged,
)
from engine.jobs.ports import CancelToken, JobStore, ProgressSink
from engine.names import decode_page_token, encode_page_token

log = logging.getLogger(__name__)

S = TypeVar("S")
O = TypeVar("O")  # noqa: E741 - as in engine.jobs.core
T = TypeVar("T")

FLUSH_RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)  # then every 5 s until the store takes the events


def now() -> datetime:
    return datetime.now(UTC)


class JobSlots:
    """How many jobs run at once across every kind, and the worker threads they run in."""

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
        """Do the job, reporting through ``ctx``; return the message of its SUCCEEDED state."""
        ...

    def fold(self, job: Job[S, O], payload: object) -> Job[S, O]:
        """The job with one of the kind's own events folded in (e.g. step metrics into progress)."""
        ...


@dataclass
class _LiveJob(Generic[S, O]):
    """A job running (or queued) in this process, with its complete event log."""

    job: Job[S, O]
    events: list[JobEvent]
    prepared: object = None  # what validation resolved at create time, if this process created the job
    cancel: CancelToken = field(default_factory=CancelToken)
    unpersisted: list[JobEvent] = field(default_factory=list)
    finished: bool = False
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None


class JobContext(Generic[S, O]):
    """What a runner sees of its job: the job as it is now, how to report, cancel and run blocking work."""

    def __init__(self, manager: JobManager[S, O], live: _LiveJob[S, O], work_dir: Path) -> None:
        self._manager = manager
        self._live = live
        self.work_dir = work_dir
        self.cancel = live.cancel
        self.sink: ProgressSink = _LoopSink(asyncio.get_running_loop(), self.record)

    @property
    def job(self) -> Job[S, O]:
        return self._live.job

    @property
    def prepared(self) -> object:
        """What create-time validation resolved (None when the job was created by an earlier process)."""
        return self._live.prepared

    def record(self, payload: object) -> None:
        self._manager.record(self._live, payload)

    def transition(self, state: JobState, message: str) -> None:
        self._manager.transition(self._live, state, message)

    def started(self, state: JobState, message: str, *, total_steps: int = 0) -> None:
        """Enter ``state`` (RUNNING) now: sets start_time, and the step count when it is known."""
        self._live.job = replace(self._live.job, start_time=now(),
                                 progress=JobProgress(0, total_steps) if total_steps else self._live.job.progress)
        self.transition(state, message)

    def set_output(self, output: O) -> None:
        self._live.job = replace(self._live.job, output=output)

    async def in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work in a job worker thread; spans it opens nest under the caller's."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._manager.slots.executor, context.run, fn, *args)


class JobManager(Generic[S, O]):
    """The lifecycle of one kind of job; see the module docstring."""

    def __init__(self, *, runner: JobRunner[S, O], store: JobStore[S, O], work_dir: Path, slots: JobSlots) -> None:
        self.kind = runner.kind
        self.runner = runner
        self.slots = slots
        self._store = store
        self._work_dir = work_dir
        self._live: dict[str, _LiveJob[S, O]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._flush_lock = asyncio.Lock()
        self._closing = False

    # ---- lifecycle ------------------------------------------------------------

    async def recover(self) -> None:
        """At start: requeue jobs that never started, fail those a previous process was running."""
        for job in await self._store.jobs_in_states(ACTIVE_STATES):
            events = await self._store.list_events(job.id, after_sequence=0)
            live = _LiveJob(job=job, events=events)
            self._live[job.id] = live
            if job.state is JobState.QUEUED:
                log.info("requeued job after restart", extra={"job_id": job.id, "kind": self.kind.name})
                live.task = self._spawn(self._run(live))
            else:
                failure = JobFailure("ABORTED", "SERVER_RESTARTED", "the server restarted while the job ran")
                self._finish(live, JobState.FAILED, failure.message, failure=failure)
                await self._close(live)

    async def shutdown(self) -> None:
        """Stop: running jobs end FAILED (SERVER_SHUTDOWN); queued ones stay QUEUED for the next start."""
        self._closing = True
        for live in list(self._live.values()):
            if live.job.state is JobState.QUEUED and live.task is not None:
                live.task.cancel()
            else:
                live.cancel.cancel()
        # Finishing jobs spawn more flushes; wait until none is left, so nothing outlives the store.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)

    # ---- API --------------------------------------------------------------------

    def new_job(self, spec: S, output: O, *, request_id: str = "") -> Job[S, O]:
        """A QUEUED job of this kind, not yet stored."""
        return Job(id=uuid.uuid4().hex, kind=self.kind.name, spec=spec, output=output, state=JobState.QUEUED,
                   create_time=now(), request_id=request_id)

    async def submit(self, job: Job[S, O], *, prepared: object = None) -> Job[S, O]:
        """Store a new QUEUED job (or return the one its request_id already names) and queue it.

        ``prepared`` is what validation resolved (the dataset, the parent record); the runner uses it instead
        of resolving again while this process runs the job.
        """
        stored = await self._store.insert_job(job)
        if stored.id != job.id:  # request_id seen before
            if stored.spec != job.spec:
                raise AlreadyExists(
                    "REQUEST_ID_REUSED",
                    f"request_id {job.request_id!r} was used for a different job ({stored.name})",
                    metadata={"request_id": job.request_id, "job": stored.name},
                )
            return self._live[stored.id].job if stored.id in self._live else stored
        live = _LiveJob(job=job, events=[], prepared=prepared)
        self._live[job.id] = live
        self._record(live, StateChanged(None, JobState.QUEUED, "job accepted"))
        await self._flush(live)
        log.info("job created", extra={"job_id": job.id, "kind": self.kind.name})
        live.task = self._spawn(self._run(live))
        return live.job

    async def get(self, job_id: str) -> Job[S, O]:
        live = self._live.get(job_id)
        if live is not None:
            return live.job
        job = await self._store.get_job(job_id)
        if job is None:
            name = self.kind.resource_name(job_id)
            raise NotFound("JOB_NOT_FOUND", f"{self.kind.name} job {name} does not exist", metadata={"name": name})
        return job

    async def list(
        self, *, states: Sequence[JobState], page_size: int, page_token: str
    ) -> tuple[list[Job[S, O]], str]:
        before = decode_page_token(page_token) if page_token else None
        jobs = await self._store.list_jobs(states=states, limit=page_size + 1, before=before)
        more = len(jobs) > page_size
        jobs = [self._live[j.id].job if j.id in self._live else j for j in jobs[:page_size]]
        token = encode_page_token(jobs[-1].create_time, jobs[-1].id) if more and jobs else ""
        return jobs, token

    async def cancel(self, job_id: str) -> Job[S, O]:
        live = self._live.get(job_id)
        job = live.job if live is not None else await self.get(job_id)
        if live is None or job.state.terminal:
            raise FailedPrecondition(
                "JOB_NOT_CANCELLABLE", f"job {job.name} already ended ({job.state.value})",
                metadata={"state": job.state.value},
            )
        if job.state is not JobState.CANCELLING:
            live.cancel.cancel()
            self.transition(live, JobState.CANCELLING, "cancellation requested")
        return live.job

    async def watch(self, job_id: str, *, after_sequence: int = 0) -> AsyncIterator[Job[S, O] | JobEvent]:
        """The job as it is now, then every event after ``after_sequence``, until it ends."""
        live = self._live.get(job_id)
        if live is None:
            job = await self.get(job_id)
            live = self._live.get(job_id)  # it may have been requeued meanwhile
            if live is None:
                yield job
                for event in await self._store.list_events(job_id, after_sequence=after_sequence):
                    yield event
                return
        yield live.job
        index = next((i for i, ev in enumerate(live.events) if ev.sequence > after_sequence), len(live.events))
        while True:
            while index < len(live.events):
                yield live.events[index]
                index += 1
            if live.finished:
                return
            async with live.changed:
                await live.changed.wait_for(lambda seen=index: live.finished or seen < len(live.events))

    # ---- running ----------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, live: _LiveJob[S, O]) -> None:
        job_dir = self._work_dir / live.job.id
        try:
            async with self.slots.semaphore:
                if live.cancel.cancelled:
                    raise Cancelled("JOB_CANCELLED", "cancelled before it started")
                message = await self.runner.run(JobContext(self, live, job_dir))
                self._finish(live, JobState.SUCCEEDED, message)
        except Cancelled as exc:
            if self._closing:
                failure = JobFailure("ABORTED", "SERVER_SHUTDOWN", "the server shut down while the job ran")
                self._finish(live, JobState.FAILED, failure.message, failure=failure)
            else:
                self._finish(live, JobState.CANCELLED, exc.message,
                             failure=JobFailure("CANCELLED", exc.reason, exc.message))
        except EngineError as exc:
            failure = JobFailure(exc.code, exc.reason, exc.message, tuple(sorted(exc.metadata.items())))
            self._finish(live, JobState.FAILED, exc.message, failure=failure)
        except Exception as exc:  # noqa: BLE001 - a job failing must not take the server down
            log.exception("job failed", extra={"job_id": live.job.id})
            failure = JobFailure("INTERNAL", "INTERNAL", f"internal error: {type(exc).__name__}")
            self._finish(live, JobState.FAILED, failure.message, failure=failure)
        finally:
            live.prepared = None
            await self._close(live)
            shutil.rmtree(job_dir, ignore_errors=True)

    # ---- event log --------------------------------------------------------------

    def record(self, live: _LiveJob[S, O], payload: object) -> None:
        """Append one event (on the loop thread) and fold it into the job."""
        self._record(live, payload)

    def _record(self, live: _LiveJob[S, O], payload: object) -> None:
        event = JobEvent(live.job.last_sequence + 1, now(), payload)
        job = replace(live.job, last_sequence=event.sequence)
        if not isinstance(payload, (StateChanged, Failed)):
            job = self.runner.fold(job, payload)
        live.job = job
        if isinstance(payload, StateChanged):
            telemetry.job_state_changed(self.kind.name, job.id, payload.state.value, payload.state.terminal)
        live.events.append(event)
        live.unpersisted.append(event)
        self._notify(live)
        if not self._flush_lock.locked():
            self._spawn(self._flush_soon(live))

    def _notify(self, live: _LiveJob[S, O]) -> None:
        async def wake() -> None:
            async with live.changed:
                live.changed.notify_all()

        self._spawn(wake())

    def transition(self, live: _LiveJob[S, O], state: JobState, message: str) -> None:
        previous = live.job.state if live.events else None
        live.job = replace(live.job, state=state)
        self._record(live, StateChanged(previous, state, message))

    def _finish(
        self, live: _LiveJob[S, O], state: JobState, message: str, *, failure: JobFailure | None = None
    ) -> None:
        live.job = replace(live.job, end_time=now(), failure=failure if state is not JobState.SUCCEEDED else None)
        if state is JobState.SUCCEEDED:
            total = live.job.progress.total_steps
            live.job = replace(live.job, progress=JobProgress(total, total, 0.0))
        if failure is not None and state is JobState.FAILED:
            self._record(live, Failed(failure))
        self.transition(live, state, message)
        log.info("job ended", extra={"job_id": live.job.id, "state": state.value})

    async def _close(self, live: _LiveJob[S, O]) -> None:
        """Persist the ended job, then end its watch streams: once a stream ends, reads see the end state."""
        try:
            await self._flush_until_stored(live)
        finally:
            async with live.changed:
                live.finished = True
                live.changed.notify_all()
            self._live.pop(live.job.id, None)

    async def _flush(self, live: _LiveJob[S, O]) -> None:
        """Write the pending events and the job; on failure the events stay pending (nothing is dropped)."""
        async with self._flush_lock:
            batch = list(live.unpersisted)
            if batch:
                await self._store.append_events(live.job.id, batch)
                del live.unpersisted[: len(batch)]
            await self._store.update_job(live.job)

    async def _flush_soon(self, live: _LiveJob[S, O]) -> None:
        """A background flush after an event; if the store is down, later events or the job's end retry it."""
        try:
            await self._flush(live)
        except Exception as exc:  # noqa: BLE001 - kept pending; retried by the next flush
            log.warning("job events not stored yet; will retry", extra={"job_id": live.job.id, "error": str(exc)})

    async def _flush_until_stored(self, live: _LiveJob[S, O]) -> None:
        """Flush, retrying with backoff while the store is unreachable (a job's end must be stored)."""
        attempt = 0
        while True:
            try:
                await self._flush(live)
                return
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


class _LoopSink:
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
