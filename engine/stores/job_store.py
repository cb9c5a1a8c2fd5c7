"""Training jobs and their event logs in PostgreSQL (asyncpg).

A job is stored whole as JSON (``doc``) beside the columns that are queried.
Events are append-only rows keyed by (job, sequence).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
from pydantic import TypeAdapter

from engine.domain import (
    CheckpointSaved,
    EvalReported,
    EventPayload,
    Failed,
    JobEvent,
    JobState,
    StateChanged,
    StepMetrics,
    TrainingJob,
    Warned,
)

_JOB = TypeAdapter(TrainingJob)
_PAYLOAD_TYPES: dict[str, type] = {
    cls.__name__: cls for cls in (StateChanged, StepMetrics, CheckpointSaved, EvalReported, Warned, Failed)
}
_PAYLOADS: dict[str, TypeAdapter] = {name: TypeAdapter(cls) for name, cls in _PAYLOAD_TYPES.items()}


def encode_payload(payload: EventPayload) -> tuple[str, bytes]:
    kind = type(payload).__name__
    return kind, _PAYLOADS[kind].dump_json(payload)


def decode_payload(kind: str, data: str | bytes) -> EventPayload:
    return _PAYLOADS[kind].validate_json(data)


class PostgresJobStore:
    """JobStore over an asyncpg pool (see engine.ports.JobStore)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def insert_job(self, job: TrainingJob) -> TrainingJob:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "INSERT INTO training_jobs (id, request_id, state, create_time, doc)"
                " VALUES ($1, $2, $3, $4, $5::jsonb)"
                " ON CONFLICT (request_id) DO NOTHING RETURNING id",
                job.id,
                job.request_id or None,
                job.state.value,
                job.create_time,
                _JOB.dump_json(job).decode(),
            )
            if row is not None:
                return job
            existing = await conn.fetchval(
                "SELECT doc FROM training_jobs WHERE request_id = $1", job.request_id
            )
            return _JOB.validate_json(existing)

    async def update_job(self, job: TrainingJob) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE training_jobs SET state = $2, doc = $3::jsonb WHERE id = $1",
                job.id,
                job.state.value,
                _JOB.dump_json(job).decode(),
            )

    async def get_job(self, job_id: str) -> TrainingJob | None:
        async with self._pool.acquire() as conn:
            doc = await conn.fetchval("SELECT doc FROM training_jobs WHERE id = $1", job_id)
        return None if doc is None else _JOB.validate_json(doc)

    async def list_jobs(
        self, *, states: Sequence[JobState], limit: int, before: tuple[str, str] | None
    ) -> list[TrainingJob]:
        clauses, args = [], []
        if states:
            args.append([s.value for s in states])
            clauses.append(f"state = ANY(${len(args)}::text[])")
        if before is not None:
            args.extend([datetime.fromisoformat(before[0]), before[1]])
            clauses.append(f"(create_time, id) < (${len(args) - 1}, ${len(args)})")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        args.append(limit)
        sql = f"SELECT doc FROM training_jobs {where} ORDER BY create_time DESC, id DESC LIMIT ${len(args)}"
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(sql, *args)
        return [_JOB.validate_json(r["doc"]) for r in rows]

    async def jobs_in_states(self, states: Sequence[JobState]) -> list[TrainingJob]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT doc FROM training_jobs WHERE state = ANY($1::text[]) ORDER BY create_time",
                [s.value for s in states],
            )
        return [_JOB.validate_json(r["doc"]) for r in rows]

    async def append_events(self, job_id: str, events: Sequence[JobEvent]) -> None:
        records = []
        for ev in events:
            kind, data = encode_payload(ev.payload)
            records.append((job_id, ev.sequence, ev.time, kind, data.decode()))
        async with self._pool.acquire() as conn:
            await conn.executemany(
                "INSERT INTO training_job_events (job_id, sequence, time, kind, payload)"
                " VALUES ($1, $2, $3, $4, $5::jsonb)",
                records,
            )

    async def list_events(self, job_id: str, *, after_sequence: int) -> list[JobEvent]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT sequence, time, kind, payload FROM training_job_events"
                " WHERE job_id = $1 AND sequence > $2 ORDER BY sequence",
                job_id,
                after_sequence,
            )
        return [JobEvent(r["sequence"], r["time"], decode_payload(r["kind"], r["payload"])) for r in rows]
