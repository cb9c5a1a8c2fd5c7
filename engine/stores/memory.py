"""In-memory implementations of the storage ports, for tests and for a server without a database.

They keep the same contracts as the PostgreSQL stores (request-id idempotency, newest-first pages, an event
appended twice stored once), so the engine runs on them unchanged. Nothing survives the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import heapq
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Generic, TypeVar

import torch
from safetensors.torch import load, save

from engine.continual.fisher import Diagonal
from engine.continual.spec import FisherSnapshot
from engine.domain import Pin
from engine.errors import Aborted, DataLoss, NotFound
from engine.jobs.core import Control, Job, JobEvent, JobState, shown_state
from engine.jobs.ports import Claim, JobExecutor, Lease, QueueAttempt, lease_lost, queue_attempt
from engine.registry.ports import ROLE_PROTECTION, Cursor, ServingRole
from engine.registry.records import AdapterRecord, VersionNumber, next_number, reservation_lost, version_not_found

S = TypeVar("S")
O = TypeVar("O")  # noqa: E741 - as in engine.jobs.core


@dataclass
class _Held:
    lease: Lease | None = None
    requested: Control | None = None


class InMemoryJobStore(Generic[S, O]):
    """engine.jobs.ports.JobStore in a dict, with the same leases and fencing as the PostgreSQL store."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job[S, O]] = {}
        self.events: dict[str, dict[int, JobEvent]] = {}
        self.held: dict[str, _Held] = {}
        self._changed = asyncio.Condition()
        self._changes = 0  # of every job, so far: the token of ``notified``

    async def insert_job(self, job: Job[S, O], events: Sequence[JobEvent] = (), *,
                         pins: Sequence[Pin] = ()) -> Job[S, O]:
        stored = await self.job_for_request(job.request_id)
        if stored is not None:
            return stored
        for pin in pins:
            await pin.check(None)
        self.jobs[job.id] = job
        self.events[job.id] = {e.sequence: e for e in events}
        self.held[job.id] = _Held()
        await self._wake()
        return job

    async def job_for_request(self, request_id: str) -> Job[S, O] | None:
        if request_id:
            for stored in self.jobs.values():
                if stored.request_id == request_id:
                    return self._shown(stored)
        return None

    async def get_job(self, job_id: str) -> Job[S, O] | None:
        job = self.jobs.get(job_id)
        return None if job is None else self._shown(job)

    def _shown(self, job: Job[S, O]) -> Job[S, O]:
        """The stored job as it is shown and listed (engine.jobs.core.shown_state, as the PostgreSQL store)."""
        state = shown_state(job.state, self.held[job.id].requested)
        return job if state is job.state else replace(job, state=state)

    async def list_jobs(
        self, *, states: Sequence[JobState], limit: int, before: tuple[datetime, str] | None
    ) -> list[Job[S, O]]:
        rows = sorted(map(self._shown, self.jobs.values()), key=lambda j: (j.create_time, j.id), reverse=True)
        rows = [j for j in rows if (not states or j.state in states)  # the state shown, as get_job shows it
                and (before is None or (j.create_time, j.id) < before)]
        return rows[:limit]

    async def jobs_in_states(self, states: Sequence[JobState]) -> list[Job[S, O]]:
        return sorted((j for j in self.jobs.values() if j.state in states), key=lambda j: j.create_time)

    async def list_events(self, job_id: str, *, after_sequence: int) -> list[JobEvent]:
        log = self.events.get(job_id, {})
        return [log[n] for n in sorted(log) if n > after_sequence]

    async def claim(self, job_id: str, owner: str) -> Claim[S, O] | None:
        job = self.jobs.get(job_id)
        if job is None or job.state.terminal or job.state is JobState.PAUSED:
            return None
        held = self.held[job_id]
        previous = held.lease.owner if held.lease is not None else ""
        held.lease = Lease(owner, uuid.uuid4().hex)
        claimed = self.jobs[job_id] = replace(job, worker=owner)
        await self._wake()
        return Claim(claimed, held.lease, previous, held.requested)

    def lease_token(self, job_id: str) -> str | None:
        held = self.held.get(job_id)
        return held.lease.token if held is not None and held.lease is not None else None

    def _check(self, job_id: str, lease: Lease | None) -> None:
        held = self.held[job_id]
        if lease is None:
            if held.lease is not None and not self.jobs[job_id].state.terminal:  # an ended job's worker let go
                raise Aborted("JOB_CLAIMED", f"job {job_id} was claimed by a worker", metadata={"job": job_id})
        elif held.lease != lease:
            raise lease_lost(job_id)

    async def write(self, job: Job[S, O], events: Sequence[JobEvent], lease: Lease | None) -> None:
        self._check(job.id, lease)
        if lease is None and self.jobs[job.id].last_sequence != job.last_sequence - len(events):
            raise Aborted("JOB_CHANGED", f"job {job.id} changed meanwhile", metadata={"job": job.id})
        log = self.events[job.id]
        for event in events:
            log.setdefault(event.sequence, copy.copy(event))
        if self.jobs[job.id].last_sequence <= job.last_sequence:  # never back to an earlier log
            self.jobs[job.id] = job
        if job.state.terminal:
            self.held[job.id].requested = None
        await self._wake()

    async def control(self, job_id: str, lease: Lease) -> Control | None:
        self._check(job_id, lease)
        return self.held[job_id].requested

    async def request(self, job_id: str, control: Control) -> Job[S, O] | None:
        held = self.held[job_id]
        if held.lease is None:
            return None
        if held.requested is None or control is Control.CANCEL:  # a cancel overrides a pending pause
            held.requested = control
        return await self.get_job(job_id)

    async def release(self, job: Job[S, O], events: Sequence[JobEvent], lease: Lease) -> Control | None:
        await self.write(job, events, lease)
        pending = self.held[job.id].requested
        self.held[job.id] = _Held()
        return pending

    async def notified(self, job_id: str) -> int:
        return self._changes

    async def wait_for_events(self, job_id: str, timeout: float, since: int | None = None) -> None:
        """Woken by a change of any job: a needless wake only costs its waiter a read of memory."""
        seen = self._changes if since is None else since
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait_for(lambda: self._changes != seen)

    async def _wake(self) -> None:
        async with self._changed:
            self._changes += 1
            self._changed.notify_all()


class InProcessQueue:
    """engine.jobs.ports.WorkerQueue within this process: waiting jobs run by priority, then in the order queued,
    ``concurrency`` at a time; a job queued again while it runs waits for that run to end (as procrastinate's lock
    keeps it). An item is run once: a failed one is not retried, so every attempt is the last (``queue_attempt``)
    and its executor ends a job it could not run. Nothing survives the process: a restart queues again what the
    store holds."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str, str]] = []
        self._waiting: set[str] = set()
        self._running: set[str] = set()
        self._held: dict[str, tuple[int, int, str, str]] = {}  # queued again while running: back after the run
        self._counter = 0
        self._ready = asyncio.Condition()
        self._executors: dict[str, JobExecutor] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start_worker(self, executors: Mapping[str, JobExecutor], *, concurrency: int, name: str) -> None:
        self._executors = dict(executors)
        self._stopping = False
        self._tasks = [asyncio.get_running_loop().create_task(self._work()) for _ in range(concurrency)]

    async def stop_worker(self) -> None:
        self._stopping = True
        async with self._ready:
            self._ready.notify_all()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def close(self) -> None:
        await self.stop_worker()

    async def held(self, job_ids: Sequence[str]) -> set[str]:
        return (self._waiting | self._running) & set(job_ids)

    async def waiting_reason(self, kind: str) -> str | None:
        if kind in self._executors and self._tasks and not self._stopping:
            return None
        return f"no worker of this process takes {kind} jobs: the job waits QUEUED until one is started"

    async def enqueue(self, kind: str, job_id: str, *, priority: int = 0) -> None:
        if job_id in self._waiting:
            return
        self._waiting.add(job_id)
        self._counter += 1
        heapq.heappush(self._heap, (-priority, self._counter, kind, job_id))
        async with self._ready:
            self._ready.notify()

    async def _work(self) -> None:
        while True:
            async with self._ready:
                await self._ready.wait_for(lambda: self._stopping or bool(self._heap))
                if self._stopping:
                    return
                item = heapq.heappop(self._heap)
                _, _, kind, job_id = item
                if job_id in self._running:
                    self._held[job_id] = item  # still waiting (queueing it again is a no-op)
                    continue
                self._waiting.discard(job_id)
                self._running.add(job_id)
            attempt = queue_attempt.set(QueueAttempt(1, last=True))
            try:
                await self._executors[kind](kind, job_id)
            except Exception:  # noqa: BLE001 - a job's own failure is recorded on it; keep serving
                logging.getLogger(__name__).exception("job executor failed", extra={"job_id": job_id})
            finally:
                queue_attempt.reset(attempt)
                self._running.discard(job_id)
                held = self._held.pop(job_id, None)
            if held is not None:
                heapq.heappush(self._heap, held)
                async with self._ready:
                    self._ready.notify()


@dataclass
class _Row:
    state: str  # RESERVED, PUBLISHED, DELETED, CONFLICT, SUPERSEDED (as in engine.stores.adapter_index)
    record: AdapterRecord | None = None
    request_id: str = ""
    attempt: str = ""  # the publish attempt holding a reservation
    fence: tuple[str, str] | None = None  # the job lease that attempt's publish is fenced by


class _Published:
    """A published version of an InMemoryAdapterIndex something being stored names (engine.domain.Pin): checked
    published, and not held (this index keeps no training job's parent from deletion: ``continued_versions``)."""

    def __init__(self, index: InMemoryAdapterIndex, base_model: str, number: VersionNumber) -> None:
        self._index, self._base_model, self._number = index, base_model, number

    async def check(self, conn: object) -> None:
        row = self._index.rows.get((self._base_model, self._number))
        if row is None or row.record is None or row.state != "PUBLISHED":
            raise version_not_found(self._base_model, str(self._number))


class InMemoryAdapterIndex:
    """engine.registry.ports.AdapterIndex in a dict keyed by (base model, version number)."""

    def __init__(self, leases: Callable[[str], str | None] | None = None) -> None:
        self.rows: dict[tuple[str, VersionNumber], _Row] = {}
        self._lock = asyncio.Lock()
        self.leases = leases  # a job's current lease token (InMemoryJobStore.lease_token), for fenced publishes

    async def reserve(
        self, base_model: str, under: tuple[int, ...], request_id: str = "", attempt: str = "",
        fence: tuple[str, str] | None = None,
    ) -> VersionNumber:
        if request_id and any(k[0] == base_model and r.request_id == request_id and r.state == "RESERVED"
                              for k, r in self.rows.items()):
            raise Aborted("IMPORT_IN_PROGRESS", f"request_id {request_id!r} is being imported right now; retry",
                          metadata={"request_id": request_id})
        taken = [n[len(under)] for b, n in self.rows if b == base_model and n[: len(under)] == under]
        number = next_number(under, max(taken, default=None))
        self.rows[(base_model, number)] = _Row("RESERVED", request_id=request_id, attempt=attempt, fence=fence)
        return number

    async def supersede(self, base_model: str, request_id: str) -> list[tuple[str, VersionNumber, str]]:
        superseded = []
        for (model, number), row in self.rows.items():
            if (model == base_model and row.request_id == request_id and row.state == "RESERVED"
                    and row.fence is not None and self.leases is not None
                    and self.leases(row.fence[0]) != row.fence[1]):
                row.state = "SUPERSEDED"
                superseded.append((model, number, row.attempt))
        return superseded

    async def publish(self, record: AdapterRecord, *, fence: tuple[str, str] | None = None,
                      pins: Sequence[Pin] = ()) -> AdapterRecord:
        if fence is not None and self.leases is not None and self.leases(fence[0]) != fence[1]:
            raise lease_lost(fence[0])
        for pin in pins:
            await pin.check(None)
        row = self.rows.get((record.base_model, record.number))
        if row is None or row.state != "RESERVED" or row.attempt != record.attempt:
            raise reservation_lost(record.base_model, record.version)
        published = replace(record, create_time=datetime.now(UTC))
        row.state, row.record = "PUBLISHED", published
        return published

    async def release(self, base_model: str, number: VersionNumber, attempt: str = "") -> None:
        row = self.rows.get((base_model, number))
        if row is not None and row.state == "RESERVED" and row.attempt == attempt:
            del self.rows[(base_model, number)]

    async def mark_conflict(self, base_model: str, number: VersionNumber, attempt: str = "") -> None:
        row = self.rows.get((base_model, number))
        if row is not None and row.state == "RESERVED" and row.attempt == attempt:
            row.state = "CONFLICT"

    async def release_stale(self) -> list[tuple[str, VersionNumber, str]]:
        return []  # in memory, every publisher lives in this process

    async def get(self, base_model: str, number: VersionNumber, *, include_deleted: bool = False) -> AdapterRecord:
        row = self.rows.get((base_model, number))
        states = ("PUBLISHED", "DELETED") if include_deleted else ("PUBLISHED",)
        if row is None or row.record is None or row.state not in states:
            raise version_not_found(base_model, str(number))
        return row.record

    async def by_request_id(self, base_model: str, request_id: str) -> AdapterRecord | None:
        for (model, _), row in self.rows.items():
            if model == base_model and row.request_id == request_id and row.state == "PUBLISHED":
                return row.record
        return None

    async def list(
        self, *, base_model: str, labels: Mapping[str, str], limit: int, after: Cursor | None
    ) -> list[AdapterRecord]:
        records = [r.record for r in self.rows.values() if r.state == "PUBLISHED" and r.record is not None]
        records = [r for r in records if (not base_model or r.base_model == base_model)
                   and all(dict(r.labels).get(k) == v for k, v in labels.items())]
        keyed = sorted(((r.create_time, r.base_model, *r.number), r) for r in records)
        keyed.reverse()
        return [r for key, r in keyed if after is None or key < after][:limit]

    @contextlib.asynccontextmanager
    async def deleting(self, base_model: str, number: VersionNumber) -> AsyncIterator[AdapterRecord]:
        async with self._lock:
            row = self.rows.get((base_model, number))
            if row is None or row.record is None or row.state != "PUBLISHED":
                raise version_not_found(base_model, str(number))
            yield row.record
            row.state, row.record = "DELETED", replace(row.record, delete_time=datetime.now(UTC))

    def pin(self, base_model: str, number: VersionNumber) -> Pin:
        return _Published(self, base_model, number)

    async def continued_versions(self, base_model: str) -> set[str]:
        """None: this index knows no training jobs (``deleting`` refuses none for continuing a version either)."""
        return set()

    async def update(self, record: AdapterRecord) -> None:
        row = self.rows.get((record.base_model, record.number))
        if row is None or row.state != "PUBLISHED":
            raise version_not_found(record.base_model, record.version)
        row.record = record


class InMemoryServingState:
    """engine.registry.ports.ServingState: the versions serving relies on, set by the test or the caller."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, ServingRole], str] = {}

    async def protected_versions(self, base_model: str) -> dict[str, str]:
        return {v: ROLE_PROTECTION[role] for (model, role), v in self.versions.items() if model == base_model}


class InMemoryFisherSnapshots:
    """engine.continual.ports.FisherSnapshots: the diagonals as safetensors bytes (verified by sha256 on load)."""

    def __init__(self) -> None:
        self.snapshots: dict[str, tuple[FisherSnapshot, bytes]] = {}

    async def save(self, diagonal: Diagonal, draft: FisherSnapshot) -> FisherSnapshot:
        snapshot_id = uuid.uuid4().hex
        tensors = {name: t.detach().to(torch.float32).contiguous().cpu() for name, t in diagonal.items()}
        data = save(tensors)
        snapshot = replace(draft, id=snapshot_id, path=f"memory:{snapshot_id}",
                           sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
        self.snapshots[snapshot_id] = (snapshot, data)
        return snapshot

    async def get(self, snapshot_id: str) -> FisherSnapshot:
        if snapshot_id not in self.snapshots:
            name = f"fisherSnapshots/{snapshot_id}"
            raise NotFound("FISHER_SNAPSHOT_NOT_FOUND", f"Fisher snapshot {name} does not exist",
                           metadata={"name": name})
        return self.snapshots[snapshot_id][0]

    async def load(self, snapshot_id: str) -> tuple[FisherSnapshot, Diagonal]:
        snapshot = await self.get(snapshot_id)
        data = self.snapshots[snapshot_id][1]
        if hashlib.sha256(data).hexdigest() != snapshot.sha256:
            raise DataLoss("FISHER_CHECKSUM_MISMATCH", f"the file of {snapshot.name} does not match its sha256",
                           metadata={"name": snapshot.name})
        return snapshot, load(data)

    async def list(
        self, *, base_model: str, adapter_version: str, limit: int, before: tuple[datetime, str] | None
    ) -> list[FisherSnapshot]:
        rows = sorted((s for s, _ in self.snapshots.values()), key=lambda s: (s.create_time, s.id), reverse=True)
        rows = [s for s in rows if (not base_model or s.base_model == base_model)
                and (not adapter_version or s.adapter_version == adapter_version)
                and (before is None or (s.create_time, s.id) < before)]
        return rows[:limit]

    async def delete(self, snapshot_id: str) -> None:
        await self.get(snapshot_id)
        del self.snapshots[snapshot_id]
