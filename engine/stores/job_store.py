"""The jobs of every kind and their event logs in PostgreSQL (asyncpg): ``jobs`` and ``job_events``.

A job is stored whole as JSON (``doc``, a ``Job[Spec, Output]``) beside the columns that are queried; a store
serves one kind (its rows only). Events are append-only rows keyed by (job, sequence), their payload's type
name in ``type``: the core events and the kind's own (``JobKind.event_types``).

Leases: a worker claims a job by writing a new ``lease_token``; every write it makes afterwards is checked
against that token in the same transaction, so a worker whose job was taken over writes nothing. A client's
cancel or pause of a claimed job is a ``requested`` flag the holding worker reads (and a worker taking the job
over, should the holder stop first). Every write notifies the channel ``learning_engine_jobs`` with the job id,
which wakes watchers on every replica; the stored log stays the source of truth (a lost notification only delays
a watcher until its next poll).

A write, a claim, a release and a request lock the job's row for the few statements of one transaction, which
PostgreSQL ends if it is left idle (engine.stores.postgres.holding_rows): a worker frozen inside one does not block
the takeover of its job. Its write fails and is retried, and the retry finds its lease lost.

Connections come through engine.stores.postgres.acquired (holding_rows too): PostgreSQL out of reach is UNAVAILABLE
DATABASE_UNAVAILABLE, as in every store. The LISTEN connection of :class:`JobNotifications` is not: a wait on it falls
back to polling while the database is away, and listens again once it is back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Generic, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from pydantic import TypeAdapter

from engine.domain import Pin
from engine.errors import Aborted
from engine.jobs.codec import EventCodec, dump_json
from engine.jobs.core import CORE_EVENTS, Control, Job, JobEvent, JobKind, JobState, shown_state
from engine.jobs.ports import Claim, Lease, lease_lost
from engine.stores.postgres import acquired, holding_rows

S = TypeVar("S")
O = TypeVar("O")  # noqa: E741 - as in engine.jobs.core

CHANNEL = "learning_engine_jobs"
RECENT_NOTIFICATIONS = 1024  # the job ids of the last notifications, for the waiters that took a token before them
Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"  # a pooled connection (generic in the stubs only)


def _shown_state_sql() -> str:
    """engine.jobs.core.shown_state over a ``jobs`` row's ``state`` and ``requested`` columns (what ``_decode``
    shows), built from the same definitions so that a list filters on the state it shows."""
    claimed = ", ".join(f"'{s.value}'" for s in JobState if s.claimed)
    stopping = " ".join(f"WHEN '{c.value}' THEN '{c.stopping.value}'" for c in Control)
    return (f"(CASE WHEN requested IS NOT NULL AND state IN ({claimed})"
            f" THEN (CASE requested {stopping} ELSE state END) ELSE state END)")


SHOWN_STATE_SQL = _shown_state_sql()


async def count_jobs(pool: asyncpg.Pool) -> dict[tuple[str, str], int]:
    """How many jobs the database holds, by (kind, state)."""
    async with acquired(pool) as conn:
        rows = await conn.fetch("SELECT kind, state, count(*) AS n FROM jobs GROUP BY kind, state")
    return {(row["kind"], row["state"]): row["n"] for row in rows}


class JobNotifications:
    """One LISTEN connection per pool, waking the waiters of each job when its rows change (any replica)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: Conn | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._lock = asyncio.Lock()
        self._closed = False
        self._count = 0  # notifications so far, of every job, and connections lost: the token of ``notified``
        self._recent: collections.deque[str | None] = collections.deque(maxlen=RECENT_NOTIFICATIONS)

    async def notified(self) -> int:
        """The token for ``wait``, listening from now on (a notification sent before LISTEN reaches no one)."""
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await self._listen()  # else ``wait`` polls
        return self._count

    async def wait(self, job_id: str, timeout: float, since: int | None = None) -> None:
        since = self._count if since is None else since
        try:
            await self._listen()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await asyncio.sleep(timeout)  # the database restarting: poll instead
            return
        if self._moved(job_id, since):
            return
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await event.wait()
        finally:
            waiting = self._waiters.get(job_id, set())
            waiting.discard(event)
            if not waiting:
                self._waiters.pop(job_id, None)

    def _moved(self, job_id: str, since: int) -> bool:
        """Whether the job was notified (or the connection lost) after the token ``since``; also when more came
        after it than are remembered, which costs its waiter only a read."""
        missed = self._count - since
        if missed > len(self._recent):
            return True
        return any(notified in (job_id, None) for notified in itertools.islice(reversed(self._recent), missed))

    def _note(self, job_id: str | None) -> None:
        self._count += 1
        self._recent.append(job_id)

    async def _listen(self) -> None:
        """Hold the LISTEN connection. One taken is either kept as it or given back (a caller cancelled while it
        listened, a close meanwhile): a connection lost on the way would keep the pool from closing."""
        async with self._lock:
            if self._closed:
                raise asyncpg.InterfaceError("the job notifications are closed")
            if self._conn is not None and not self._conn.is_closed():
                return
            conn = await self._pool.acquire()
            try:
                await conn.add_listener(CHANNEL, self._notified)
                conn.add_termination_listener(self._lost)
            except BaseException:
                await self._pool.release(conn)  # asyncpg shields it from the cancel
                raise
            self._conn = conn

    def _notified(self, _conn: Conn | asyncpg.Connection, _pid: int, _channel: str, job_id: object) -> None:
        self._note(str(job_id))
        for event in self._waiters.get(str(job_id), ()):
            event.set()

    def _lost(self, _conn: Conn | asyncpg.Connection) -> None:
        self._conn = None
        self._note(None)  # what was notified until it is listening again is lost: any job may have changed
        for waiting in self._waiters.values():  # wake everyone to read the store again
            for event in waiting:
                event.set()

    async def close(self) -> None:
        """Give the LISTEN connection back; later waits poll (``_listen`` refuses), so none is taken again."""
        async with self._lock:
            self._closed = True
            if self._conn is not None and not self._conn.is_closed():
                with contextlib.suppress(Exception):
                    await self._conn.remove_listener(CHANNEL, self._notified)
                    await self._pool.release(self._conn)
            self._conn = None


class PostgresJobStore(Generic[S, O]):
    """engine.jobs.ports.JobStore over an asyncpg pool, for the jobs of one ``kind``."""

    def __init__(self, pool: asyncpg.Pool, kind: JobKind[S, O], notifications: JobNotifications | None = None) -> None:
        self._pool = pool
        self._kind = kind.name
        # pydantic needs the kind's types at run time: a type parametrised by values, which no checker can follow
        self._job: TypeAdapter[Job[S, O]] = TypeAdapter(Job[kind.spec_type, kind.output_type])  # type: ignore[name-defined]
        self._events = EventCodec((*CORE_EVENTS, *kind.event_types))
        self._notifications = notifications or JobNotifications(pool)

    def _decode(self, doc: str, requested: str | None = None) -> Job[S, O]:
        """The stored job as it is shown: in its stopping state while a request waits for its worker
        (engine.jobs.core.shown_state; SHOWN_STATE_SQL, which lists filter on, says the same)."""
        job = self._job.validate_json(doc)
        state = shown_state(job.state, Control(requested) if requested else None)
        return job if state is job.state else replace(job, state=state)

    def _dump(self, job: Job[S, O]) -> str:
        """The job as JSON, a number JSON cannot hold written so that it reads back (engine.jobs.codec.dump_json). A
        request holding one is refused (server.convert_jobs.check_finite), but a number a run measures (a diverged
        loss) may be one: a stored job always reads back."""
        return dump_json(self._job, job).decode()

    async def insert_job(self, job: Job[S, O], events: Sequence[JobEvent] = (), *,
                         pins: Sequence[Pin] = ()) -> Job[S, O]:
        async with acquired(self._pool) as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO jobs (id, kind, request_id, state, create_time, priority, doc)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)"
                " ON CONFLICT (kind, request_id) WHERE request_id IS NOT NULL DO NOTHING RETURNING id",
                job.id, self._kind, job.request_id or None, job.state.value, job.create_time, job.priority,
                self._dump(job),
            )
            if row is None:
                existing = await conn.fetchval(
                    "SELECT doc FROM jobs WHERE kind = $1 AND request_id = $2", self._kind, job.request_id
                )
                return self._decode(existing)
            for pin in pins:  # inside the insert's transaction: what the job names is live, and kept by the job
                await pin.check(conn)
            await self._append(conn, job.id, events)
        return job

    async def job_for_request(self, request_id: str) -> Job[S, O] | None:
        if not request_id:
            return None
        async with acquired(self._pool) as conn:
            row = await conn.fetchrow("SELECT doc, requested FROM jobs WHERE kind = $1 AND request_id = $2",
                                      self._kind, request_id)
        return None if row is None else self._decode(row["doc"], row["requested"])

    async def get_job(self, job_id: str) -> Job[S, O] | None:
        async with acquired(self._pool) as conn:
            row = await conn.fetchrow("SELECT doc, requested FROM jobs WHERE id = $1 AND kind = $2", job_id, self._kind)
        return None if row is None else self._decode(row["doc"], row["requested"])

    async def list_jobs(
        self, *, states: Sequence[JobState], limit: int, before: tuple[datetime, str] | None
    ) -> list[Job[S, O]]:
        clauses: list[str] = ["kind = $1"]
        args: list[object] = [self._kind]
        if states:
            args.append([s.value for s in states])
            clauses.append(f"{SHOWN_STATE_SQL} = ANY(${len(args)}::text[])")  # as listed: as _decode shows it
        if before is not None:
            args.extend(before)
            clauses.append(f"(create_time, id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit)
        sql = (f"SELECT doc, requested FROM jobs WHERE {' AND '.join(clauses)}"
               f" ORDER BY create_time DESC, id DESC LIMIT ${len(args)}")
        async with acquired(self._pool) as conn:
            rows = await conn.fetch(sql, *args)
        return [self._decode(r["doc"], r["requested"]) for r in rows]

    async def jobs_in_states(self, states: Sequence[JobState]) -> list[Job[S, O]]:
        async with acquired(self._pool) as conn:
            rows = await conn.fetch(
                "SELECT doc FROM jobs WHERE kind = $1 AND state = ANY($2::text[]) ORDER BY create_time",
                self._kind, [s.value for s in states],
            )
        return [self._decode(r["doc"]) for r in rows]

    async def list_events(self, job_id: str, *, after_sequence: int) -> list[JobEvent]:
        async with acquired(self._pool) as conn:
            rows = await conn.fetch(
                "SELECT sequence, time, type, payload FROM job_events"
                " WHERE job_id = $1 AND sequence > $2 ORDER BY sequence",
                job_id, after_sequence,
            )
        return [JobEvent(r["sequence"], r["time"], self._events.decode(r["type"], r["payload"])) for r in rows]

    async def claim(self, job_id: str, owner: str) -> Claim[S, O] | None:
        async with holding_rows(self._pool) as conn:
            row = await conn.fetchrow(
                "SELECT doc, lease_owner, requested FROM jobs WHERE id = $1 AND kind = $2 FOR UPDATE",
                job_id, self._kind,
            )
            if row is None:
                return None
            job = self._decode(row["doc"])
            if job.state.terminal or job.state is JobState.PAUSED:
                return None
            lease = Lease(owner, uuid.uuid4().hex)
            claimed = replace(job, worker=owner)
            await conn.execute("UPDATE jobs SET lease_owner = $2, lease_token = $3, doc = $4::jsonb WHERE id = $1",
                               job_id, lease.owner, lease.token, self._dump(claimed))
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, job_id)
        requested = Control(row["requested"]) if row["requested"] else None
        return Claim(claimed, lease, row["lease_owner"] or "", requested)

    async def write(self, job: Job[S, O], events: Sequence[JobEvent], lease: Lease | None) -> None:
        async with holding_rows(self._pool) as conn:
            await self._fence(conn, job, events, lease)
            await self._append(conn, job.id, events)
            ended = "NULL" if job.state.terminal else "requested"
            await conn.execute(  # never back to an earlier log (a worker's late flush after an ended job's note)
                f"UPDATE jobs SET state = $2, doc = $3::jsonb, requested = {ended} WHERE id = $1"
                " AND (doc ->> 'last_sequence')::bigint <= $4",
                job.id, job.state.value, self._dump(job), job.last_sequence,
            )

    async def release(self, job: Job[S, O], events: Sequence[JobEvent], lease: Lease) -> Control | None:
        async with holding_rows(self._pool) as conn:
            await self._fence(conn, job, events, lease)  # locks the row
            pending = await conn.fetchval("SELECT requested FROM jobs WHERE id = $1", job.id)
            await self._append(conn, job.id, events)
            await conn.execute(
                "UPDATE jobs SET state = $2, doc = $3::jsonb, requested = NULL, lease_owner = NULL,"
                " lease_token = NULL WHERE id = $1",
                job.id, job.state.value, self._dump(job),
            )
        return Control(pending) if pending else None

    async def control(self, job_id: str, lease: Lease) -> Control | None:
        async with acquired(self._pool) as conn:
            row = await conn.fetchrow("SELECT lease_token, requested FROM jobs WHERE id = $1", job_id)
        if row is None or row["lease_token"] != lease.token:
            raise lease_lost(job_id)
        return Control(row["requested"]) if row["requested"] else None

    async def request(self, job_id: str, control: Control) -> Job[S, O] | None:
        async with holding_rows(self._pool) as conn:
            row = await conn.fetchrow(
                "UPDATE jobs SET requested = CASE WHEN $2 = 'CANCEL' THEN $2 ELSE COALESCE(requested, $2) END"
                " WHERE id = $1 AND kind = $3 AND lease_token IS NOT NULL RETURNING doc, requested",
                job_id, control.value, self._kind,
            )
            if row is None:
                return None
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, job_id)
        return self._decode(row["doc"], row["requested"])

    async def notified(self, job_id: str) -> int:
        return await self._notifications.notified()

    async def wait_for_events(self, job_id: str, timeout: float, since: int | None = None) -> None:
        await self._notifications.wait(job_id, timeout, since)

    async def _fence(
        self, conn: Conn, job: Job[S, O], events: Sequence[JobEvent], lease: Lease | None
    ) -> None:
        row = await conn.fetchrow("SELECT lease_token, doc FROM jobs WHERE id = $1 FOR UPDATE", job.id)
        if row is None:
            raise Aborted("JOB_GONE", f"job {job.id} is not stored", metadata={"job": job.id})
        if lease is not None:
            if row["lease_token"] != lease.token:
                raise lease_lost(job.id)
            return
        stored = self._job.validate_json(row["doc"])
        if row["lease_token"] is not None and not stored.state.terminal:  # an ended job's worker let go of it
            raise Aborted("JOB_CLAIMED", f"job {job.id} was claimed by a worker", metadata={"job": job.id})
        if stored.last_sequence != job.last_sequence - len(events):
            raise Aborted("JOB_CHANGED", f"job {job.id} changed meanwhile", metadata={"job": job.id})

    async def _append(self, conn: Conn, job_id: str, events: Sequence[JobEvent]) -> None:
        records = []
        for ev in events:
            kind, data = self._events.encode(ev.payload)
            records.append((job_id, ev.sequence, ev.time, kind, data.decode()))
        if records:
            await conn.executemany(
                "INSERT INTO job_events (job_id, sequence, time, type, payload)"
                " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (job_id, sequence) DO NOTHING",
                records,
            )
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, job_id)
