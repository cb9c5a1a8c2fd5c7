"""Jobs (training, Fisher) and their event logs in PostgreSQL (asyncpg).

A job is stored whole as JSON (``doc``) beside the columns that are queried.
Events are append-only rows keyed by (job, sequence). Each kind of job has its
own pair of tables of the same shape (``JobTables``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import TypeAdapter

from engine.continual.spec import FisherJob, FisherProgress
from engine.jobs.core import Failed, JobEvent, JobState, StateChanged, Warned
from engine.training.spec import CheckpointSaved, EvalReported, EventPayload, StepMetrics, TrainingJob

_PAYLOAD_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (StateChanged, StepMetrics, CheckpointSaved, EvalReported, Warned, Failed, FisherProgress)
}
_PAYLOADS: dict[str, TypeAdapter] = {name: TypeAdapter(cls) for name, cls in _PAYLOAD_TYPES.items()}


def encode_payload(payload: EventPayload) -> tuple[str, bytes]:
    kind = type(payload).__name__
    return kind, _PAYLOADS[kind].dump_json(payload)


def decode_payload(kind: str, data: str | bytes) -> EventPayload:
    return _PAYLOADS[kind].validate_json(data)


@dataclass(frozen=True)
class JobTables:
    """Where one kind of job lives: its table, its events table and its domain type."""

    jobs: str
    events: str
    job_type: type


TRAINING_TABLES = JobTables("training_jobs", "training_job_events", TrainingJob)
FISHER_TABLES = JobTables("fisher_jobs", "fisher_job_events", FisherJob)


class PostgresJobStore:
    """JobStore over an asyncpg pool (see engine.ports.JobStore), for one kind of job."""

    def __init__(self, pool: asyncpg.Pool, tables: JobTables = TRAINING_TABLES) -> None:
        self._pool = pool
        self._jobs = tables.jobs
        self._events = tables.events
        self._job: TypeAdapter[Any] = TypeAdapter(tables.job_type)

    async def insert_job(self, job: Any) -> Any:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"INSERT INTO {self._jobs} (id, request_id, state, create_time, doc)"
                " VALUES ($1, $2, $3, $4, $5::jsonb)"
                " ON CONFLICT (request_id) DO NOTHING RETURNING id",
                job.id,
                job.request_id or None,
                job.state.value,
                job.create_time,
                self._job.dump_json(job).decode(),
            )
            if row is not None:
                return job
            existing = await conn.fetchval(
                f"SELECT doc FROM {self._jobs} WHERE request_id = $1", job.request_id
            )
            return self._job.validate_json(existing)

    async def update_job(self, job: Any) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                f"UPDATE {self._jobs} SET state = $2, doc = $3::jsonb WHERE id = $1",
                job.id,
                job.state.value,
                self._job.dump_json(job).decode(),
            )

    async def get_job(self, job_id: str) -> Any | None:
        async with self._pool.acquire() as conn:
            doc = await conn.fetchval(f"SELECT doc FROM {self._jobs} WHERE id = $1", job_id)
        return None if doc is None else self._job.validate_json(doc)

    async def list_jobs(
        self, *, states: Sequence[JobState], limit: int, before: tuple[str, str] | None
    ) -> list[Any]:
        clauses, args = [], []
        if states:
            args.append([s.value for s in states])
            clauses.append(f"state = ANY(${len(args)}::text[])")
        if before is not None:
            args.extend([datetime.fromisoformat(before[0]), before[1]])
            clauses.append(f"(create_time, id) < (${len(args) - 1}, ${len(args)})")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        args.append(limit)
        sql = f"SELECT doc FROM {self._jobs} {where} ORDER BY create_time DESC, id DESC LIMIT ${len(args)}"
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(sql, *args)
        return [self._job.validate_json(r["doc"]) for r in rows]

    async def jobs_in_states(self, states: Sequence[JobState]) -> list[Any]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT doc FROM {self._jobs} WHERE state = ANY($1::text[]) ORDER BY create_time",
                [s.value for s in states],
            )
        return [self._job.validate_json(r["doc"]) for r in rows]

    async def append_events(self, job_id: str, events: Sequence[JobEvent]) -> None:
        records = []
        for ev in events:
            kind, data = encode_payload(ev.payload)
            records.append((job_id, ev.sequence, ev.time, kind, data.decode()))
        async with self._pool.acquire() as conn:
            await conn.executemany(
                f"INSERT INTO {self._events} (job_id, sequence, time, kind, payload)"
                " VALUES ($1, $2, $3, $4, $5::jsonb)",
                records,
            )

    async def list_events(self, job_id: str, *, after_sequence: int) -> list[JobEvent]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT sequence, time, kind, payload FROM {self._events}"
                " WHERE job_id = $1 AND sequence > $2 ORDER BY sequence",
                job_id,
                after_sequence,
            )
        return [JobEvent(r["sequence"], r["time"], decode_payload(r["kind"], r["payload"])) for r in rows]
