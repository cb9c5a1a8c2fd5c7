"""Job lifecycle: create, queue, run off the event loop, record events, watch.

``JobManager`` is the kind-agnostic core (training and Fisher jobs share it): it
owns an in-memory log for each job running in this process (so watchers see
every event at once) and writes the log and the job through to the JobStore. A
job's lifetime is independent of any watcher: a client that disconnects stops
nothing. Subclasses say what running a job means (``_execute``) and how progress
events fold into the job (``_fold``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import json
import logging
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.continual.planner import EwcPlanner, with_plan
from engine.errors import (
    AlreadyExists,
    Cancelled,
    EngineError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from engine.jobs.core import Failed, JobEvent, JobFailure, JobProgress, JobState, StateChanged
from engine.jobs.ports import CancelToken, JobStore
from engine.registry import AdapterRegistry
from engine.telemetry import job_event, tracer
from engine.training.preparation import JobPreparer, PreparedJob
from engine.training.recipe import TrainingResult, run_training
from engine.training.spec import EventPayload, StepMetrics, TrainingJob, TrainingJobSpec

log = logging.getLogger(__name__)

_ACTIVE = (JobState.QUEUED, JobState.PREPARING, JobState.RUNNING, JobState.CANCELLING)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _LiveJob:
    """A job running (or queued) in this process, with its complete event log."""

    job: TrainingJob
    events: list[JobEvent]
    cancel: CancelToken = field(default_factory=CancelToken)
    unpersisted: list[JobEvent] = field(default_factory=list)
    finished: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


WatchItem = Any  # the job (first), then JobEvent items


class JobManager:
    """The lifecycle shared by every kind of job; see the module docstring."""

    kind = "job"  # for messages and metrics, e.g. "training"
    collection = "jobs"  # resource collection, e.g. "trainingJobs"

    def __init__(self, *, store: JobStore, work_dir: Path, max_concurrent_jobs: int = 1) -> None:
        self._store = store
        self._work_dir = work_dir
        self._executor = ThreadPoolExecutor(max_workers=max_concurrent_jobs, thread_name_prefix=self.kind)
        self._slots = asyncio.Semaphore(max_concurrent_jobs)
        self._live: dict[str, _LiveJob] = {}
        self._tasks: set[asyncio.Task] = set()
        self._flush_lock = asyncio.Lock()
        self._closing = False

    # ---- lifecycle ------------------------------------------------------------

    async def recover(self) -> None:
        """At start: requeue jobs that never started, fail those a previous process was running."""
        for job in await self._store.jobs_in_states(_ACTIVE):  # type: ignore[attr-defined]
            events = await self._store.list_events(job.id, after_sequence=0)
            live = _LiveJob(job=job, events=events)
            self._live[job.id] = live
            if job.state is JobState.QUEUED:
                log.info("requeued job after restart", extra={"job_id": job.id})
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
        deadline = asyncio.get_running_loop().time() + 60
        while self._tasks and (left := deadline - asyncio.get_running_loop().time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---- API --------------------------------------------------------------------

    async def _admit(self, job: Any) -> Any:
        """Store a new QUEUED job (or return the one its request_id already names) and queue it."""
        request_id, spec = job.request_id, job.spec
        stored = await self._store.insert_job(job)
        if stored.id != job.id:  # request_id seen before
            if stored.spec != spec:
                raise AlreadyExists(
                    "REQUEST_ID_REUSED",
                    f"request_id {request_id!r} was used for a different job ({stored.name})",
                    metadata={"request_id": request_id, "job": stored.name},
                )
            return stored
        live = _LiveJob(job=job, events=[])
        self._live[job.id] = live
        self._record(live, StateChanged(None, JobState.QUEUED, "job accepted"))
        await self._flush(live)
        log.info("job created", extra={"job_id": job.id, "kind": self.kind})
        live.task = self._spawn(self._run(live))
        return live.job

    async def get(self, job_id: str) -> Any:
        live = self._live.get(job_id)
        if live is not None:
            return live.job
        job = await self._store.get_job(job_id)
        if job is None:
            name = f"{self.collection}/{job_id}"
            raise NotFound("JOB_NOT_FOUND", f"{self.kind} job {name} does not exist", metadata={"name": name})
        return job

    async def list(
        self, *, states: Sequence[JobState], page_size: int, page_token: str
    ) -> tuple[list[Any], str]:
        before = _decode_page_token(page_token) if page_token else None
        jobs = await self._store.list_jobs(states=states, limit=page_size + 1, before=before)
        more = len(jobs) > page_size
        jobs = [self._live[j.id].job if j.id in self._live else j for j in jobs[:page_size]]
        token = _encode_page_token(jobs[-1]) if more and jobs else ""
        return jobs, token

    async def cancel(self, job_id: str) -> Any:
        live = self._live.get(job_id)
        job = live.job if live is not None else await self.get(job_id)
        if live is None or job.state.terminal:
            raise FailedPrecondition(
                "JOB_NOT_CANCELLABLE", f"job {job.name} already ended ({job.state.value})",
                metadata={"state": job.state.value},
            )
        if job.state is not JobState.CANCELLING:
            live.cancel.cancel()
            self._transition(live, JobState.CANCELLING, "cancellation requested")
        return live.job

    async def watch(self, job_id: str, *, after_sequence: int = 0) -> AsyncIterator[WatchItem]:
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
            waiter = live.changed
            while index < len(live.events):
                yield live.events[index]
                index += 1
            if live.finished:
                return
            await waiter.wait()

    # ---- running ----------------------------------------------------------------

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, live: _LiveJob) -> None:
        job_dir = self._work_dir / live.job.id
        try:
            async with self._slots:
                if live.cancel.cancelled:
                    raise Cancelled("JOB_CANCELLED", "cancelled before it started")
                message = await self._execute(live, job_dir)
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
            await self._close(live)
            shutil.rmtree(job_dir, ignore_errors=True)

    def _sink(self, live: _LiveJob) -> _LoopSink:
        """A ProgressSink for worker threads that records into this job's log."""
        return _LoopSink(asyncio.get_running_loop(), lambda payload: self._record(live, payload))

    async def _execute(self, live: _LiveJob, job_dir: Path) -> str:
        """Run the job (in ``job_dir``, removed afterwards); return the message of its SUCCEEDED state."""
        raise NotImplementedError

    def _fold(self, payload: EventPayload) -> dict:
        """Changes to the job that one event implies (beyond last_sequence)."""
        return {}

    # ---- event log --------------------------------------------------------------

    def _set(self, live: _LiveJob, **changes) -> None:
        live.job = replace(live.job, **changes)

    def _record(self, live: _LiveJob, payload: EventPayload) -> None:
        """Append one event (on the loop thread) and fold it into the job."""
        event = JobEvent(live.job.last_sequence + 1, _now(), payload)
        live.job = replace(live.job, last_sequence=event.sequence, **self._fold(payload))
        job_event(self.kind, live.job.id, event)
        live.events.append(event)
        live.unpersisted.append(event)
        live.notify()
        if not self._flush_lock.locked():
            self._spawn(self._flush(live))

    def _transition(self, live: _LiveJob, state: JobState, message: str) -> None:
        previous = live.job.state if live.events else None
        live.job = replace(live.job, state=state)
        self._record(live, StateChanged(previous, state, message))

    def _finish(self, live: _LiveJob, state: JobState, message: str, *, failure: JobFailure | None = None) -> None:
        self._set(live, end_time=_now(), failure=failure if state is not JobState.SUCCEEDED else None)
        if state is JobState.SUCCEEDED:
            total = live.job.progress.total_steps
            self._set(live, progress=JobProgress(total, total, 0.0))
        if failure is not None and state is JobState.FAILED:
            self._record(live, Failed(failure))
        self._transition(live, state, message)
        log.info("job ended", extra={"job_id": live.job.id, "state": state.value})

    async def _close(self, live: _LiveJob) -> None:
        """Persist the ended job, then end its watch streams: once a stream ends, reads see the end state."""
        try:
            await self._flush(live)
        finally:
            live.finished = True
            live.notify()
            self._live.pop(live.job.id, None)

    async def _flush(self, live: _LiveJob) -> None:
        async with self._flush_lock:
            batch, live.unpersisted = live.unpersisted, []
            if batch:
                await self._store.append_events(live.job.id, batch)
            await self._store.update_job(live.job)


class TrainingJobManager(JobManager):
    kind = "training"
    collection = "trainingJobs"

    def __init__(
        self,
        *,
        store: JobStore,
        registry: AdapterRegistry,
        preparer: JobPreparer,
        work_dir: Path,
        max_concurrent_jobs: int = 1,
        train: Callable[..., TrainingResult] = run_training,
        ewc: EwcPlanner | None = None,
    ) -> None:
        super().__init__(store=store, work_dir=work_dir, max_concurrent_jobs=max_concurrent_jobs)
        self._registry = registry
        self._preparer = preparer
        self._train = train
        self._ewc = ewc

    async def create(self, spec: TrainingJobSpec, *, request_id: str = "", validate_only: bool = False) -> TrainingJob:
        spec = await self._preparer.validate(spec)
        if self._ewc is not None:
            await self._ewc.validate(spec)
        job = TrainingJob(
            id=uuid.uuid4().hex, spec=spec, state=JobState.QUEUED, create_time=_now(), request_id=request_id
        )
        if validate_only:
            return job
        return await self._admit(job)

    async def _execute(self, live: _LiveJob, job_dir: Path) -> str:
        self._transition(live, JobState.PREPARING, "loading dataset and model")
        with tracer.start_as_current_span("training_job.prepare", attributes={"job": live.job.name}):
            prepared = await self._preparer.prepare(live.job.spec, job_dir)
        self._set(live, dataset=prepared.dataset, device=prepared.device)
        sink = self._sink(live)
        spec, run = live.job.spec, prepared.run
        if self._ewc is not None and prepared.parent is not None and not spec.ewc.disabled:
            plan = await self._ewc.plan(spec, prepared.parent, run.parent_adapter_dir, run.base_model_dir,
                                        run.examples, sink, live.cancel)
            prepared = replace(prepared, run=with_plan(run, plan))
            self._set(live, ewc_lineage=plan.lineage)
        self._transition(live, JobState.RUNNING, f"training on {prepared.device}")
        live.job = replace(live.job, start_time=_now())
        loop = asyncio.get_running_loop()
        with tracer.start_as_current_span("training_job.train", attributes={"job": live.job.name}):
            context = contextvars.copy_context()  # the training thread's spans nest under this one
            result = await loop.run_in_executor(
                self._executor, context.run, self._train, prepared.run, sink, live.cancel
            )
        # The prepared summary knows the data's origin (feedback window, composition); training adds the tokens.
        dataset = replace(prepared.dataset, target_token_count=result.dataset.target_token_count)
        self._set(live, dataset=dataset)
        with tracer.start_as_current_span("training_job.publish", attributes={"job": live.job.name}):
            record = await self._publish(live, prepared, result)
        self._set(live, output_adapter_version=record.version)
        return f"published adapter {record.version}"

    def _fold(self, payload: EventPayload) -> dict:
        if isinstance(payload, StepMetrics):
            return {"latest_metrics": payload,
                    "progress": JobProgress(payload.step, payload.total_steps, payload.eta_seconds)}
        return {}

    async def _publish(self, live: _LiveJob, prepared: PreparedJob, result: TrainingResult):
        spec = live.job.spec
        return await self._registry.publish(
            base_model=spec.base_model,
            adapter_dir=result.adapter_dir,
            parent=prepared.parent,
            major_bump=spec.major_version_bump,
            training_job=live.job.name,
            dataset=live.job.dataset,
            train_loss=result.final_task_loss,
            labels=spec.labels,
            **_ewc_lineage(live.job),
        )


def _ewc_lineage(job: TrainingJob) -> dict:
    """The EWC settings recorded with the adapter: only for a continuation with EWC on."""
    lineage = job.ewc_lineage
    if lineage is None:
        return {}
    return {"ewc_lambda": lineage.ewc_lambda, "ewc_gamma": lineage.gamma, "fisher_snapshot": lineage.fisher_snapshot,
            "ewc_fisher_space": lineage.space}


class _LoopSink:
    """ProgressSink that hands events from worker threads to the event loop, in the order they happen.

    On the loop's own thread it records at once, so an event emitted by async code is not overtaken
    by a state change recorded right after it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, record: Callable[[EventPayload], None]) -> None:
        self._loop = loop
        self._record = record
        self._loop_thread = threading.get_ident()  # built on the loop's thread (JobManager._sink)

    def emit(self, payload: EventPayload) -> None:
        if threading.get_ident() == self._loop_thread:
            self._record(payload)
        else:
            self._loop.call_soon_threadsafe(self._record, payload)


def _encode_page_token(job: TrainingJob) -> str:
    raw = json.dumps([job.create_time.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_page_token(token: str) -> tuple[str, str]:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        datetime.fromisoformat(created)
        return str(created), str(job_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidArgument(
            "INVALID_PAGE_TOKEN", "page_token is not one this server issued",
            violations=[FieldViolation("page_token", "use next_page_token from a previous response")],
        ) from exc

