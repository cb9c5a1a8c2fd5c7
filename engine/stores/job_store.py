"""The jobs of every kind and their event logs in PostgreSQL (asyncpg): ``jobs`` and ``job_events``.

A job is stored whole as JSON (``doc``, a ``Job[Spec, Output]``) beside the columns that are queried; a store
serves one kind (its rows only). Events are append-only rows keyed by (job, sequence), their payload's type
name in ``type``: the core events and the kind's own (``JobKind.event_types``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import asyncpg
from pydantic import TypeAdapter

from engine.jobs.core import CORE_EVENTS, Job, JobEvent, JobKind, JobState

S = TypeVar("S")
O = TypeVar("O")  # noqa: E741 - as in engine.jobs.core


class EventCodec:
    """Event payloads to and from (type name, JSON)."""

    def __init__(self, types: Sequence[type]) -> None:
        self._adapters: dict[str, TypeAdapter[Any]] = {cls.__name__: TypeAdapter(cls) for cls in types}

    def encode(self, payload: object) -> tuple[str, bytes]:
        kind = type(payload).__name__
        return kind, self._adapters[kind].dump_json(payload)

    def decode(self, kind: str, data: str | bytes) -> object:
        return self._adapters[kind].validate_json(data)


class PostgresJobStore(Generic[S, O]):
    """engine.jobs.ports.JobStore over an asyncpg pool, for the jobs of one ``kind``."""

    def __init__(self, pool: asyncpg.Pool, kind: JobKind[S, O]) -> None:
        self._pool = pool
        self._kind = kind.name
        self._job: TypeAdapter[Job[S, O]] = TypeAdapter(Job[kind.spec_type, kind.output_type])  # type: ignore[name-defined]
        self._events = EventCodec((*CORE_EVENTS, *kind.event_types))

    def _decode(self, doc: str) -> Job[S, O]:
        return self._job.validate_json(doc)

    async def insert_job(self, job: Job[S, O]) -> Job[S, O]:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "INSERT INTO jobs (id, kind, request_id, state, create_time, doc)"
                " VALUES ($1, $2, $3, $4, $5, $6::jsonb)"
                " ON CONFLICT (kind, request_id) WHERE request_id IS NOT NULL DO NOTHING RETURNING id",
                job.id, self._kind, job.request_id or None, job.state.value, job.create_time,
                self._job.dump_json(job).decode(),
            )
            if row is not None:
                return job
            existing = await conn.fetchval(
                "SELECT doc FROM jobs WHERE kind = $1 AND request_id = $2", self._kind, job.request_id
            )
            return self._decode(existing)

    async def update_job(self, job: Job[S, O]) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE jobs SET state = $3, doc = $4::jsonb WHERE id = $1 AND kind = $2",
                job.id, self._kind, job.state.value, self._job.dump_json(job).decode(),
            )

    async def get_job(self, job_id: str) -> Job[S, O] | None:
        async with self._pool.acquire() as conn:
            doc = await conn.fetchval("SELECT doc FROM jobs WHERE id = $1 AND kind = $2", job_id, self._kind)
        return None if doc is None else self._decode(doc)

    async def list_jobs(
        self, *, states: Sequence[JobState], limit: int, before: tuple[datetime, str] | None
    ) -> list[Job[S, O]]:
        clauses, args = ["kind = $1"], [self._kind]
        if states:
            args.append([s.value for s in states])
            clauses.append(f"state = ANY(${len(args)}::text[])")
        if before is not None:
            args.extend(before)
            clauses.append(f"(create_time, id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit)
        sql = (f"SELECT doc FROM jobs WHERE {' AND '.join(clauses)}"
               f" ORDER BY create_time DESC, id DESC LIMIT ${len(args)}")
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(sql, *args)
        return [self._decode(r["doc"]) for r in rows]

    async def jobs_in_states(self, states: Sequence[JobState]) -> list[Job[S, O]]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT doc FROM jobs WHERE kind = $1 AND state = ANY($2::text[]) ORDER BY create_time",
                self._kind, [s.value for s in states],
            )
        return [self._decode(r["doc"]) for r in rows]

    async def append_events(self, job_id: str, events: Sequence[JobEvent]) -> None:
        records = []
        for ev in events:
            kind, data = self._events.encode(ev.payload)
            records.append((job_id, ev.sequence, ev.time, kind, data.decode()))
        async with self._pool.acquire() as conn:
            await conn.executemany(
                "INSERT INTO job_events (job_id, sequence, time, type, payload)"
                " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (job_id, sequence) DO NOTHING",
                records,
            )

    async def list_events(self, job_id: str, *, after_sequence: int) -> list[JobEvent]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT sequence, time, type, payload FROM job_events"
                " WHERE job_id = $1 AND sequence > $2 ORDER BY sequence",
                job_id, after_sequence,
            )
        return [JobEvent(r["sequence"], r["time"], self._events.decode(r["type"], r["payload"])) for r in rows]
