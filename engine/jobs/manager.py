"""Job lifecycle, shared by every kind: admit, queue, claim and run on a worker, record events, watch, steer.

``JobManager[S, O]`` serves the jobs of one kind through that kind's :class:`JobRunner`, in two roles:

- **API** (any replica): ``submit`` stores a QUEUED job with its first event and hands it to the
  :class:`~engine.jobs.ports.JobQueue`; a create first asks ``created_for`` for the job its request_id made before
  (a retry is answered with it before anything is validated or resolved again); ``get``/``list``/``watch`` read
  it (a job running in this process is read from memory, any other from the store, whose notifications wake
  watchers on other replicas);
  ``cancel``/``pause``/``resume`` act on an unclaimed job directly and ask the worker holding a claimed one. A
  cancel no run of the job carries out (the job unclaimed, being released, or not yet started) is followed by the
  runner's :class:`~engine.jobs.context.CancelHook`, if it has one, for what earlier runs left in force.
- **Worker** (``execute``, called by the queue): claims the job with a new lease (a fencing token), runs the
  runner, and writes its events through to the store fenced by that lease, so a worker that lost the job to
  another (after its heartbeat stopped) can write nothing more. A write that fails (the database restarting)
  keeps its events pending and is retried: the stored log never has a gap. A cancel, pause or shutdown stops
  the run at its next step; pause and shutdown keep the progress (the runner checkpoints), and the job is then
  PAUSED, or QUEUED again for any worker. Should the queue's last attempt at a job fail around its run (the store
  unreachable at every attempt), the job is ended FAILED, or queued again when it is not that attempt's to end; it
  is never left active with nothing queued to run it (:class:`~engine.jobs.last_attempt.LastAttempt`).

A job's lifetime is independent of any watcher: a client that disconnects stops nothing. All managers of a
process share one :class:`~engine.jobs.context.JobSlots`: how many jobs run at once (each holds a model) and
their threads. Writing a job's events to the store, and letting go of a held job, is the manager's base class,
:class:`~engine.jobs.event_log.JobEventLog`. A watch's event streams are in :mod:`engine.jobs.watching`, and what
the API refuses a repeated request_id or a cancel or pause with in :mod:`engine.jobs.refusals`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Generic, TypeVar

from engine import telemetry
from engine.domain import Pin
from engine.errors import Aborted, Cancelled, EngineError, FailedPrecondition, NotFound
from engine.jobs.codec import request_digest
from engine.jobs.context import CancelHook, JobContext, JobRunner, JobSlots, LiveJob, ResultHook, now
from engine.jobs.core import (
    ACTIVE_STATES,
    Control,
    Job,
    JobEvent,
    JobFailure,
    JobState,
    Noticed,
    StateChanged,
    Warned,
)
from engine.jobs.event_log import FLUSH_RETRY_SECONDS, JobEventLog
from engine.jobs.last_attempt import LastAttempt
from engine.jobs.ports import Claim, JobQueue, JobStore, LeaseLost, StopReason, queue_attempt
from engine.jobs.refusals import check_steerable, reused, same_job
from engine.jobs.watching import watch_ended, watch_live, watch_stored
from engine.names import PageScope, decode_page_token, encode_page_token

log = logging.getLogger(__name__)

S = TypeVar("S")
O = TypeVar("O")  # noqa: E741 - as in engine.jobs.core

SHUTDOWN_SECONDS = 120  # how long a stopping worker waits for its jobs to checkpoint and be released
PREPARED_KEPT = 16  # inputs validated here, kept for the local worker (most recent jobs)


class JobManager(JobEventLog[S, O]):
    """The lifecycle of one kind of job; see the module docstring."""

    def __init__(
        self, *, runner: JobRunner[S, O], store: JobStore[S, O], queue: JobQueue, work_dir: Path, slots: JobSlots,
        worker_id: str = "", control_poll_seconds: float = 1.0, watch_poll_seconds: float = 2.0,
    ) -> None:
        self.kind = runner.kind
        self.runner = runner
        self.slots = slots
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:12]}"
        self._store = store
        self._queue = queue
        self._work_dir = work_dir
        self._control_poll = control_poll_seconds
        self._watch_poll = watch_poll_seconds
        self._live: dict[str, LiveJob[S, O]] = {}
        self._prepared: collections.OrderedDict[str, object] = collections.OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flush_lock = asyncio.Lock()
        self._closing = False
        self._idle = asyncio.Event()  # no job held by this process's worker
        self._idle.set()
        self._last_attempt = LastAttempt(kind=self.kind.name, store=store, queue=queue, write_idle=self._write_idle,
                                         cancelled_while_idle=self._cancelled_while_idle)

    # ---- lifecycle ------------------------------------------------------------

    async def recover(self) -> int:
        """Queue again the jobs the store holds as QUEUED that have no item in the queue (waiting or being run), and
        return how many. At start, and every ``job_recover_seconds`` after (server.engine_wiring): a job can be left
        QUEUED with nothing queued to run it (its create stored it and then failed to queue it, and the client did
        not retry; an item moved to its kind's queue whose re-queueing kept failing until its retries ended;
        procrastinate's items lost with a restored database), and would wait for ever. Queueing one again is safe
        whatever happens meanwhile: queueing a waiting job is a no-op, and an item queued while another runs the job
        waits on the job's lock, then finds it ended or claimed (``execute``)."""
        queued = await self._store.jobs_in_states((JobState.QUEUED,))
        held = await self._queue.held([job.id for job in queued]) if queued else set()
        lost = [job for job in queued if job.id not in held]
        for job in lost:
            log.warning("a queued job had nothing queued to run it; queueing it again",
                        extra={"job_id": job.id, "kind": self.kind.name})
            await self._queue.enqueue(self.kind.name, job.id, priority=job.priority)
        return len(lost)

    async def shutdown(self) -> None:
        """Stop this process's worker: running jobs stop at their next step, keep their progress (checkpoint)
        and are QUEUED again for any worker; nothing queued is lost."""
        self._closing = True
        for live in list(self._live.values()):
            live.cancel.cancel(StopReason.SHUTDOWN)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_SECONDS
        # The held jobs first (they checkpoint and are released while this worker still sends heartbeats, so no
        # other worker takes them over meanwhile), then the writes still in flight.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_SECONDS):
                await self._idle.wait()
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)

    # ---- API --------------------------------------------------------------------

    def new_job(self, spec: S, output: O, *, request_id: str = "", priority: int = 0,
                digest: str = "") -> Job[S, O]:
        """A QUEUED job of this kind, not yet stored. ``digest`` is the ``request_digest`` of the request as the
        client sent it (see ``created_for``); by default, of ``spec``."""
        return Job(id=uuid.uuid4().hex, kind=self.kind.name, spec=spec, output=output, state=JobState.QUEUED,
                   create_time=now(), request_id=request_id, priority=priority,
                   request_digest=digest or request_digest(spec), trace_context=telemetry.trace_carrier())

    async def created_for(self, request_id: str, digest: str) -> Job[S, O] | None:
        """The job an earlier create with ``request_id`` made, for a create to return before it validates or
        resolves anything (a retry is answered with its job whatever changed since: its inputs gone, the active
        version or the server's defaults moved): None if there is none (or it was stored without a digest, then
        compared by spec once resolved, by ``check_request`` or ``submit``); ALREADY_EXISTS REQUEST_ID_REUSED if
        its request, whose ``request_digest`` is ``digest``, was another. Two first creates that both find
        nothing meet at the store's insert (``submit``)."""
        stored = await self.for_request(request_id) if request_id else None
        if stored is None or not stored.request_digest:
            return None
        if stored.request_digest != digest:
            raise reused(request_id, stored)
        return await self._seen_before(stored)

    async def submit(self, job: Job[S, O], *, prepared: object = None, pins: Sequence[Pin] = ()) -> Job[S, O]:
        """Store a new QUEUED job (or return the one its request_id already names) and queue it.

        ``prepared`` is what validation resolved (the dataset, the parent record); a worker of this process
        uses it instead of resolving again. ``pins``, what the job names and needs live (engine.domain.Pin), are
        checked as it is stored, in the same transaction: one gone since validation stores nothing (NOT_FOUND).
        """
        payloads = [StateChanged(None, JobState.QUEUED, "job accepted"), *await self._no_worker()]
        events = [JobEvent(i, now(), payload) for i, payload in enumerate(payloads, start=1)]
        stored = await self._store.insert_job(replace(job, last_sequence=len(events)), events, pins=pins)
        if stored.id != job.id:  # request_id seen before
            same_job(job, stored)
            return await self._seen_before(stored)
        telemetry.job_state_changed(self.kind.name, job.id, JobState.QUEUED.value, held=False)
        if prepared is not None:
            self._prepared[job.id] = prepared
            while len(self._prepared) > PREPARED_KEPT:
                self._prepared.popitem(last=False)
        log.info("job created", extra={"job_id": job.id, "kind": self.kind.name})
        await self._queue.enqueue(self.kind.name, job.id, priority=job.priority)
        return stored

    async def _no_worker(self) -> list[Warned]:
        """A NO_WORKER warning for a job queued now that no running worker takes (``JobQueue.waiting_reason``): it
        waits QUEUED, and is told why and what would start a worker, instead of waiting with no word."""
        waiting = await self._queue.waiting_reason(self.kind.name)
        return [] if waiting is None else [Warned("NO_WORKER", waiting)]

    async def _seen_before(self, stored: Job[S, O]) -> Job[S, O]:
        """The job an earlier create of the same request stored, as it is now; queued (again) if it is QUEUED: the
        first create may have stored it but failed to queue it (queueing a waiting job is a no-op)."""
        current = await self.get(stored.id)
        if current.state is JobState.QUEUED:
            await self._queue.enqueue(self.kind.name, current.id, priority=current.priority)
        return current

    async def check_request(self, job: Job[S, O]) -> Job[S, O] | None:
        """What ``submit`` would find under ``job``'s request_id, storing nothing (a validate_only request): the
        stored job of that request_id, None if there is none, REQUEST_ID_REUSED if it has another request."""
        stored = await self.for_request(job.request_id) if job.request_id else None
        if stored is not None:
            same_job(job, stored)
        return stored

    async def for_request(self, request_id: str) -> Job[S, O] | None:
        """The job stored under ``request_id``, whatever it asked for; None if there is none."""
        return await self._store.job_for_request(request_id)

    async def get(self, job_id: str) -> Job[S, O]:
        live = self._live.get(job_id)
        if live is not None:
            return live.job
        job = await self._store.get_job(job_id)
        if job is None:
            raise self._not_found(job_id)
        return job

    def _not_found(self, job_id: str) -> NotFound:
        name = self.kind.resource_name(job_id)
        return NotFound("JOB_NOT_FOUND", f"{self.kind.name} job {name} does not exist", metadata={"name": name})

    async def events(self, job_id: str) -> tuple[Job[S, O], list[JobEvent]]:
        """The job and its whole stored event log so far (a job running here from memory, any other from the
        store)."""
        live = self._live.get(job_id)
        if live is not None:
            return live.job, [e for e in live.events if e.sequence <= live.stored]
        job = await self.get(job_id)
        return job, await self._store.list_events(job_id, after_sequence=0)

    async def list(
        self, *, states: Sequence[JobState], page_size: int, page_token: str
    ) -> tuple[list[Job[S, O]], str]:
        """A page of jobs, newest first, in ``states`` (any, if empty) as they are shown: a job running here as it
        is in memory, which may be ahead of the store (then it is left out if its state is not asked for, and the
        page filled from further on). A page token is good only for this kind's list with the same ``states``."""
        scope = self._page_scope(states)
        before = decode_page_token(page_token, scope) if page_token else None
        wanted = page_size + 1  # one more tells whether there is a next page
        jobs: list[Job[S, O]] = []
        while len(jobs) < wanted:
            limit = wanted - len(jobs)
            stored = await self._store.list_jobs(states=states, limit=limit, before=before)
            for j in stored:
                shown = self._live[j.id].job if j.id in self._live else j
                if not states or shown.state in states:
                    jobs.append(shown)
            if len(stored) < limit:
                break
            before = (stored[-1].create_time, stored[-1].id)
        more = len(jobs) > page_size
        jobs = jobs[:page_size]
        token = encode_page_token(scope, jobs[-1].create_time, jobs[-1].id) if more and jobs else ""
        return jobs, token

    def _page_scope(self, states: Sequence[JobState]) -> PageScope:
        """What a page token of :meth:`list` pages: this kind's jobs in ``states`` (as a set: the order a client
        lists them in filters nothing)."""
        return PageScope(self.kind.collection, tuple(sorted({s.value for s in states})))

    async def cancel(self, job_id: str) -> Job[S, O]:
        """Cancel in any state but an ended one: a queued or paused job at once, a running one at its next step."""
        return await self._steer(job_id, Control.CANCEL)

    async def pause(self, job_id: str) -> Job[S, O]:
        """Pause a queued or running job: a running one checkpoints and releases its worker (PAUSING, PAUSED)."""
        return await self._steer(job_id, Control.PAUSE)

    async def resume(self, job_id: str) -> Job[S, O]:
        """Queue a paused job again; any worker continues it from its last checkpoint."""
        for _ in range(5):
            job = await self.get(job_id)
            if job.state is JobState.QUEUED:  # maybe the retry of a resume that stored it but failed to queue it:
                await self._queue.enqueue(self.kind.name, job_id, priority=job.priority)  # queued, then refused
            if job.state is not JobState.PAUSED:
                raise FailedPrecondition(
                    "JOB_NOT_RESUMABLE", f"job {job.name} is {job.state.value}; only a PAUSED job can be resumed",
                    metadata={"state": job.state.value},
                )
            try:
                resumed = await self._write_idle(job, JobState.QUEUED, "resumed", after=await self._no_worker())
            except Aborted:
                continue  # changed meanwhile: look again
            await self._queue.enqueue(self.kind.name, job_id, priority=job.priority)
            return resumed
        raise Aborted("JOB_CONTENTION", f"job {job_id} kept changing; retry")

    async def note(self, job_id: str, *payloads: object, output: O | None = None) -> Job[S, O]:
        """Add events to the log of a job that has ended: what became of something it left behind (an online
        session's live alias), and, given ``output``, its output as it is now (what a cancel stored of it). Only
        for an ended job, which no worker writes to any more."""
        for attempt in range(len(FLUSH_RETRY_SECONDS)):
            job = await self._store.get_job(job_id)  # the stored log, which this is added to
            if job is None:
                raise self._not_found(job_id)
            try:
                if not job.state.terminal:  # its end is being stored (or it has not ended: the caller's error)
                    raise Aborted("JOB_CHANGED", f"job {job_id} has not ended")
                events = [JobEvent(job.last_sequence + 1 + i, now(), payload) for i, payload in enumerate(payloads)]
                updated = replace(job, last_sequence=job.last_sequence + len(events),
                                  output=job.output if output is None else output)
                await self._store.write(updated, events, None)
            except Aborted:  # another event was added meanwhile: look again
                await asyncio.sleep(FLUSH_RETRY_SECONDS[attempt])
                continue
            return updated
        raise Aborted("JOB_CONTENTION", f"job {job_id} kept changing; retry")

    async def watch(self, job_id: str, *, after_sequence: int = 0) -> AsyncIterator[Job[S, O] | JobEvent]:
        """The job as it is now, then every event after ``after_sequence``, until it ends or is paused."""
        live = self._live.get(job_id)
        job = live.job if live is not None else await self.get(job_id)
        yield job
        seen = after_sequence
        if live is not None:
            async for event in watch_live(live, seen):
                seen = event.sequence
                yield event
        async for event in watch_stored(job_id, seen, store=self._store, held=self._live, get=self.get,
                                        poll_seconds=self._watch_poll):
            yield event

    def watch_ended(self, job_id: str, *, after_sequence: int,
                    done: Callable[[], Awaitable[bool]]) -> AsyncIterator[JobEvent]:
        """After :meth:`watch` of a job that ended: the events :meth:`note` adds to its log after
        ``after_sequence``, until ``done()`` says no more are coming (engine.jobs.watching.watch_ended)."""
        return watch_ended(job_id, after_sequence, store=self._store, poll_seconds=self._watch_poll, done=done)

    # ---- steering -------------------------------------------------------------------

    async def _steer(self, job_id: str, control: Control) -> Job[S, O]:
        stopping = control.stopping
        for _ in range(5):
            live = self._live.get(job_id)
            job = live.job if live is not None else await self.get(job_id)
            check_steerable(job, control)
            if live is not None and not live.releasing:  # held by this process's worker
                if job.state not in (JobState.CANCELLING, stopping):
                    live.cancel.cancel(StopReason.CANCEL if control is Control.CANCEL else StopReason.PAUSE)
                    self.transition(live, stopping, f"{control.value.lower()} requested")
                # Stored as well, as a request made on another replica is: should this worker stop before it
                # carries the request out (a crash, a lost heartbeat), the worker taking the job over does.
                await self._store.request(job_id, control)
                return live.job
            # Any other job, or one this worker is letting go of: its release carries out a request stored before
            # it, and a request made after it finds the job unclaimed.
            requested = await self._store.request(job_id, control)
            if requested is not None:  # a worker elsewhere holds it; it acts at its next step
                return requested
            try:  # unclaimed (queued or paused): act now
                # "while queued": before it ran, or after a run that let go of it (a stopping worker's)
                idle = f"while {job.state.value.lower()}"
                if control is Control.PAUSE:
                    return await self._write_idle(job, JobState.PAUSED, f"paused {idle}")
                cancelled = await self._write_idle(job, JobState.CANCELLED, f"cancelled {idle}",
                                                        failure=JobFailure("CANCELLED", "JOB_CANCELLED",
                                                                           f"cancelled {idle}"))
            except Aborted:
                continue  # a worker claimed it meanwhile: ask that worker
            return await self._cancelled_while_idle(cancelled)
        raise Aborted("JOB_CONTENTION", f"job {job_id} kept changing; retry")

    async def _cancelled_while_idle(self, job: Job[S, O]) -> Job[S, O]:
        """``job`` was just stored CANCELLED with no run of it to act on the cancel (an earlier run may have left
        something in force, a pipeline run its canary): the runner's :class:`CancelHook`, if it has one, ends that,
        and what it says of it is added to the ended job's log. Whatever fails here is logged: the cancel stands."""
        runner = self.runner
        if not isinstance(runner, CancelHook):
            return job
        try:
            ended = await runner.cancelled_while_idle(job, await self._store.list_events(job.id, after_sequence=0))
            if ended.notes or ended.output is not None:
                job = await self.note(job.id, *ended.notes, output=ended.output)
        except Exception:  # noqa: BLE001 - the job is cancelled already; its caller must learn that, not this
            log.exception("a cancelled job's runner could not end what its runs left in force",
                          extra={"job_id": job.id, "kind": self.kind.name})
        return job

    # ---- worker -----------------------------------------------------------------

    async def execute(self, job_id: str) -> None:
        """Run one job the queue handed to this worker (called by the queue; never raises for the job's own
        failures, which end the job FAILED).

        It raises when something around the run fails (the store, taking the job or reading its log), and the
        queue runs it again; after the queue's last attempt (``queue_attempt``) nothing would, so the job is
        ended here instead, when that is this attempt's to do (:class:`~engine.jobs.last_attempt.LastAttempt`)."""
        doing = ""  # while it is left to another worker (this one stopping), nothing for this attempt to end
        claim: Claim[S, O] | None = None
        try:
            if self._closing:
                await self._leave(job_id)
                return
            async with self.slots.semaphore:
                if self._closing:  # it began stopping while the job waited for a slot
                    await self._leave(job_id)
                    return
                doing = "as the job was claimed"
                claim = await self._store.claim(job_id, self.worker_id)
                if claim is None:  # ended or paused meanwhile
                    return
                # A failure from here on leaves the job claimed but not run; the next attempt claims it anew (a
                # claim replaces any lease), on this worker or another.
                job = claim.job
                doing = "as the job's event log was read"
                events = await self._store.list_events(job_id, after_sequence=0)
                live = LiveJob(job=job, events=events, lease=claim.lease, prepared=self._prepared.pop(job_id, None),
                               stored=events[-1].sequence if events else 0)
                if job.state.claimed:  # its worker stopped (it crashed, or lost its heartbeat): take it over
                    live.taken_over_from = claim.previous_owner or "a stopped worker"
                self._live[job_id] = live
                self._idle.clear()
                if self._closing:  # it began stopping while the job was claimed: it found nothing to stop then
                    live.cancel.cancel(StopReason.SHUTDOWN)  # so it is let go of (QUEUED) before it starts
                doing = ""  # the run decides the job's end from here on
                poller = asyncio.get_running_loop().create_task(self._follow_control(live))
                try:
                    with telemetry.tracer.start_as_current_span(
                            f"{self.kind.name}_job.run", context=telemetry.carried_context(job.trace_context),
                            attributes={"job": job.name, "worker": self.worker_id}):
                        await self._run(live, claim.requested)
                finally:
                    poller.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await poller
        except Exception as exc:
            attempt = queue_attempt.get()
            if attempt is not None and attempt.last:
                if doing:
                    await self._last_attempt.give_up(job_id, attempt, doing, exc, claim)
                else:  # not this attempt's to end (the run began and decided how; or this worker is stopping and
                    # could not leave it to another): another attempt will
                    await self._last_attempt.queue_again(job_id, exc)
            raise

    async def _leave(self, job_id: str) -> None:
        """This worker is stopping: leave the job to another (queued again; it waits while this item ends)."""
        job = await self.get(job_id)
        await self._queue.enqueue(self.kind.name, job_id, priority=job.priority)

    async def _run(self, live: LiveJob[S, O], requested: Control | None) -> None:
        job_dir = self._work_dir / live.job.id
        release_as: JobState | None = None
        ran = False  # whether the runner got the job (then a cancel is its to carry out)
        try:
            if live.taken_over_from:
                self._record(live, Noticed("TAKEN_OVER", f"the worker running this job ({live.taken_over_from}) "
                                                         f"stopped; {self.worker_id} continues it"))
            if requested is not None:  # accepted by the worker that held it before, which stopped before acting
                self._stop_for(live, requested)
            ctx = JobContext(self, live, job_dir)
            # Its result made by an earlier run whose worker stopped before it stored the job's end: the job ended
            # then, as a job whose run returned before a cancel reached it does.
            message = await self.runner.earlier_result(ctx) if isinstance(self.runner, ResultHook) else None
            if message is None:
                if live.cancel.cancelled:
                    raise Cancelled("JOB_CANCELLED", "stopped before it started")
                ran = True
                message = await self.runner.run(ctx)
            self._finish(live, JobState.SUCCEEDED, message)
        except (Cancelled, LeaseLost) as exc:
            reason = StopReason.LEASE_LOST if isinstance(exc, LeaseLost) else live.cancel.reason
            if reason is StopReason.LEASE_LOST:
                log.warning("job taken over by another worker; stopping", extra={"job_id": live.job.id})
            elif reason is StopReason.PAUSE:
                release_as = JobState.PAUSED
            elif reason is StopReason.SHUTDOWN:
                release_as = JobState.QUEUED
            else:
                self._finish(live, JobState.CANCELLED, exc.message,
                             failure=JobFailure("CANCELLED", exc.reason, exc.message))
        except EngineError as exc:
            failure = JobFailure(exc.code, exc.reason, exc.message, tuple(sorted(exc.metadata.items())))
            self._finish(live, JobState.FAILED, exc.message, failure=failure)
        except Exception as exc:  # noqa: BLE001 - a job failing must not take the worker down
            log.exception("job failed", extra={"job_id": live.job.id})
            failure = JobFailure("INTERNAL", "INTERNAL", f"internal error: {type(exc).__name__}")
            self._finish(live, JobState.FAILED, failure.message, failure=failure)
        finally:
            live.prepared = None
            if live.cancel.reason is StopReason.LEASE_LOST:
                await self._drop(live)
            elif release_as is not None:
                await self._release(live, release_as)
            else:
                await self._close(live)
            shutil.rmtree(job_dir, ignore_errors=True)
        # Cancelled with no run of it acting on the cancel: as it was let go of (the release carried out a cancel
        # asked meanwhile), or before its run started (a cancel its previous worker accepted and did not act on).
        if live.job.state is JobState.CANCELLED and (release_as is not None or not ran):
            await self._cancelled_while_idle(live.job)

    async def _follow_control(self, live: LiveJob[S, O]) -> None:
        """Act on requests made through the store (from other replicas), and notice a lost lease; until the job
        is let go of (its release carries out what is pending then)."""
        while not (live.finished or live.releasing):
            await asyncio.sleep(self._control_poll)
            try:
                control = await self._store.control(live.job.id, live.lease)
            except LeaseLost:
                if not live.releasing:  # a released job's lease is gone too
                    live.cancel.cancel(StopReason.LEASE_LOST)
                return
            except Exception:  # noqa: BLE001 - the database restarting: ask again at the next tick
                continue
            if control is not None:
                self._stop_for(live, control)

    def _stop_for(self, live: LiveJob[S, O], control: Control) -> None:
        """Stop the run at its next step for a request found in the store (a cancel overrides a pause or a
        shutdown), and record it unless the job is already in its stopping state."""
        overrides = control is Control.CANCEL and live.cancel.reason in (StopReason.PAUSE, StopReason.SHUTDOWN)
        if live.releasing or live.job.state.terminal or (live.cancel.cancelled and not overrides):
            return
        live.cancel.cancel(StopReason.CANCEL if control is Control.CANCEL else StopReason.PAUSE)
        state = control.stopping
        if live.job.state is not state:
            self.transition(live, state, f"{control.value.lower()} requested")


__all__ = ["ACTIVE_STATES", "JobManager"]


class RetriedCreates(Generic[S, O]):
    """What every kind's create API shares: the job an earlier create with a request_id made, for the API to answer
    a retry before it converts or checks anything of the request (a retry is answered with its job whatever changed
    since; another request under the same id is REQUEST_ID_REUSED, however invalid)."""

    _manager: JobManager[S, O]

    async def created(self, request_id: str, received: object) -> Job[S, O] | None:
        """The job of an earlier create with ``request_id`` if ``received`` (the request as the client sent it) is
        the same; None when none was made; ALREADY_EXISTS REQUEST_ID_REUSED when it was another request."""
        return await self._manager.created_for(request_id, request_digest(received)) if request_id else None

