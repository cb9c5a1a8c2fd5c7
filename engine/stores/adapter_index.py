"""The registry's index of versions in PostgreSQL (table ``adapters``, migrations 0002/0003).

Version numbers are handed out by inserting a RESERVED row: the primary key
(base_model, major, minor, patch; migration 0017) lets exactly one of several racing publishers (in any process)
have a number, and the loser recomputes. Rows are never removed once published: a deleted
version stays as a DELETED tombstone, so its number is never reused and lineage stays whole.

A reservation records its owner, a random id per index (so per server process), and while the
index has reservations outstanding it holds a PostgreSQL session advisory lock on that id on one
pooled connection. A process killed mid-publish loses its session and so the lock;
``release_stale`` (at start, and when a publish finds its request id held by another's reservation) frees the
RESERVED rows whose owner's lock it can take, and leaves
those of live publishers, in this process or another, alone. A session can also drop under a live
publisher (a PostgreSQL restart, a proxy closing an idle connection); its rows may then be freed
and the numbers handed out again, so every change of a reservation (``publish``, ``release``,
``mark_conflict``) applies only to a row its owner still holds: a publisher whose reservation is
gone gets ABORTED RESERVATION_LOST and never publishes over another's. The owner is a process, so a
row also records the publish attempt that reserved it (``attempt``, migration 0027), and a change
needs both: after its lock session dropped, a process may reserve the same number again for another
publish, and the first attempt, its objects perhaps swept as orphans by then, must not register it.

PostgreSQL out of reach is UNAVAILABLE DATABASE_UNAVAILABLE: connections come through engine.stores.postgres.acquired
(a publication's through holding_rows); the owner's lock connection, held across calls, is taken as advisory_lock takes
its own, and taken again once its session has dropped.

A reservation made by a publish fenced by a job's lease (a training job's result, ``trainingJobs/<id>/result``)
records that lease (``fence_job``, ``fence_token``; migration 0032). Once the job's lease is another's, it can never
be registered (``publish`` checks the lease), though its publisher may live on: a worker frozen mid-publish keeps
its session and so its owner's lock, and the worker that took its job over would find the request id held for as
long (IMPORT_IN_PROGRESS), its job failing after training did. ``supersede`` retires such reservations (SUPERSEDED):
the request id is free again, and the number is never handed out again (the frozen publisher may yet write that
number's manifest, which a new holder of the number would find there).

A version a training job that has not ended continues (``spec.parent_adapter_version`` in table ``jobs``) is not
deleted (``deleting``): the job's worker fetches it when it prepares, resumes or takes the job over. Those versions
(``continued_versions``, one query with ``deleting``'s check) are protected from a prune, its dry run included. The job
is stored with its parent pinned (``pin``: the row checked PUBLISHED and held FOR SHARE in the job's insert
transaction), which a delete's FOR UPDATE waits for: a delete either comes first (the job is then not stored:
NOT_FOUND) or finds the job and refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace

import asyncpg
from pydantic import TypeAdapter

from engine.domain import Pin
from engine.errors import Aborted, FailedPrecondition
from engine.jobs.core import JobState
from engine.jobs.ports import lease_lost
from engine.registry.ports import Cursor
from engine.registry.records import (
    AdapterRecord,
    VersionNumber,
    next_number,
    reservation_lost,
    version_not_found,
)
from engine.stores.postgres import CONNECTION_ERRORS, acquired, dropped, held, holding_rows, unavailable

_RECORD = TypeAdapter(AdapterRecord)
_RESERVE_ATTEMPTS = 50
_KEY = "base_model = $1 AND major = $2 AND minor = $3 AND patch = $4"  # one version's row
# one version's row, while its owner ($5) holds it for the same publish attempt ($6)
_HELD = f"{_KEY} AND state = 'RESERVED' AND reserved_by = $5 AND attempt = $6"


def published_and_held(base_model: str, first: int) -> str:
    """SQL that is true while the version whose base model is the SQL ``base_model`` and whose major, minor and
    patch are the parameters ``$first`` to ``$first + 2`` is PUBLISHED, and that holds its row with a KEY SHARE
    lock until the transaction ends. A delete locks the row FOR UPDATE (``deleting``) before it reads what is
    protected, so a writer that points something at a version through this (an active version, a live alias)
    either commits first, and the delete sees it, or waits for the delete and finds a tombstone."""
    return (f"EXISTS (SELECT 1 FROM adapters a WHERE a.base_model = {base_model} AND a.major = ${first}"
            f" AND a.minor = ${first + 1} AND a.patch = ${first + 2} AND a.state = 'PUBLISHED' FOR KEY SHARE)")


def _decode(doc: str) -> AdapterRecord:
    return _RECORD.validate_json(doc)


class PostgresAdapterIndex:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._owner = secrets.randbits(62) + 1  # this index's reservations; positive, a bigint lock key
        self._alive: asyncpg.pool.PoolConnectionProxy | None = None  # holds the owner's lock
        self._outstanding = 0
        self._guard = asyncio.Lock()

    async def _hold(self) -> None:
        """Count one more reservation; take the owner's lock first if none is outstanding (or its session died)."""
        async with self._guard:
            if self._alive is None or dropped(self._alive):
                if self._alive is not None:
                    await self._pool.release(self._alive)
                    self._alive = None
                try:
                    conn = await self._pool.acquire()
                except CONNECTION_ERRORS as exc:
                    raise unavailable(exc) from exc
                try:
                    with held(conn):
                        await conn.execute("SELECT pg_advisory_lock($1)", self._owner)
                except BaseException:
                    await self._pool.release(conn)
                    raise
                self._alive = conn
            self._outstanding += 1

    async def _let_go(self) -> None:
        """One reservation fewer; with none left, drop the owner's lock and give its connection back."""
        async with self._guard:
            self._outstanding = max(0, self._outstanding - 1)
            if self._outstanding or self._alive is None:
                return
            conn, self._alive = self._alive, None
            try:
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    await conn.execute("SELECT pg_advisory_unlock($1)", self._owner)
            except BaseException:
                conn.terminate()  # cut short (cancelled): its session ends, and the owner's lock with it
                raise
            finally:
                await self._pool.release(conn)

    async def reserve(
        self, base_model: str, under: tuple[int, ...], request_id: str = "", attempt: str = "",
        fence: tuple[str, str] | None = None,
    ) -> VersionNumber:
        """Take the next free number under ``under`` for ``attempt`` (engine.registry.ports.AdapterIndex.reserve),
        recording the lease ``fence`` its publish is fenced by. Counts every row (reserved, deleted, conflicting,
        superseded), so numbers never repeat. The reservation ends with ``publish``, ``release``, ``mark_conflict``
        or another's ``supersede``."""
        await self._hold()
        try:
            return await self._reserve(base_model, under, request_id, attempt, fence)
        except BaseException:
            await self._let_go()
            raise

    async def _reserve(self, base_model: str, under: tuple[int, ...], request_id: str, attempt: str,
                       fence: tuple[str, str] | None) -> VersionNumber:
        part = VersionNumber._fields[len(under)]  # the part that counts up; those before it are ``under``
        same = "".join(f" AND {name} = ${i + 2}" for i, name in enumerate(VersionNumber._fields[: len(under)]))
        for _ in range(_RESERVE_ATTEMPTS):
            async with acquired(self._pool) as conn:
                top = await conn.fetchval(f"SELECT max({part}) FROM adapters WHERE base_model = $1{same}",
                                          base_model, *under)
                number = next_number(under, top)
                try:
                    await conn.execute(
                        "INSERT INTO adapters (base_model, major, minor, patch, state, request_id, reserved_by,"
                        " attempt, fence_job, fence_token) VALUES ($1, $2, $3, $4, 'RESERVED', $5, $6, $7, $8, $9)",
                        base_model, *number, request_id or None, self._owner, attempt, *(fence or (None, None)),
                    )
                    return number
                except asyncpg.UniqueViolationError as exc:
                    if exc.constraint_name == "adapters_request_id_idx":
                        raise Aborted(
                            "IMPORT_IN_PROGRESS", f"request_id {request_id!r} is being imported right now; retry",
                            metadata={"request_id": request_id},
                        ) from exc
                    continue  # another publisher took this number: recompute
        raise Aborted("VERSION_CONTENTION", f"could not assign a version after {_RESERVE_ATTEMPTS} attempts")

    async def publish(self, record: AdapterRecord, *, fence: tuple[str, str] | None = None,
                      pins: Sequence[Pin] = ()) -> AdapterRecord:
        """Turn the reservation into a version (the artifacts are durable by now); with ``fence``, only while the
        job's lease token is still the one given (the job row is locked until the version is registered, so
        no other worker can claim the job in between; engine.stores.postgres.holding_rows); ``pins`` (what the
        version names and needs live) checked in the same transaction."""
        async with holding_rows(self._pool) as conn:
            if fence is not None:
                token = await conn.fetchval("SELECT lease_token FROM jobs WHERE id = $1 FOR SHARE", fence[0])
                if token != fence[1]:
                    raise lease_lost(fence[0])
            for pin in pins:
                await pin.check(conn)
            create_time = await conn.fetchval(
                "UPDATE adapters SET state = 'PUBLISHED', create_time = now(), doc = $7::jsonb, labels = $8::jsonb"
                f" WHERE {_HELD} RETURNING create_time",
                record.base_model, *record.number, self._owner, record.attempt, _RECORD.dump_json(record).decode(),
                _labels_json(record),
            )
            if create_time is None:
                raise reservation_lost(record.base_model, record.version)
            published = replace(record, create_time=create_time)
            await conn.execute(
                f"UPDATE adapters SET doc = $5::jsonb WHERE {_KEY}",
                record.base_model, *record.number, _RECORD.dump_json(published).decode(),
            )
        await self._let_go()
        return published

    async def release(self, base_model: str, number: VersionNumber, attempt: str = "") -> None:
        """Free ``attempt``'s reservation if it still holds it (one that is gone is another's business now)."""
        try:
            async with acquired(self._pool) as conn:
                await conn.execute(f"DELETE FROM adapters WHERE {_HELD}", base_model, *number, self._owner, attempt)
        finally:
            await self._let_go()

    async def mark_conflict(self, base_model: str, number: VersionNumber, attempt: str = "") -> None:
        """Retire the number if ``attempt`` still holds its reservation."""
        try:
            async with acquired(self._pool) as conn:
                await conn.execute(
                    f"UPDATE adapters SET state = 'CONFLICT' WHERE {_HELD}", base_model, *number, self._owner, attempt
                )
        finally:
            await self._let_go()

    async def release_stale(self) -> list[tuple[str, VersionNumber, str]]:
        """Delete the RESERVED rows of publishers that are gone (see the module docstring); return them as
        (base_model, number, attempt)."""
        released: list[tuple[str, VersionNumber, str]] = []
        async with acquired(self._pool) as conn:
            owners = {r["reserved_by"] for r in await conn.fetch(
                "SELECT DISTINCT reserved_by FROM adapters WHERE state = 'RESERVED'")}
            for owner in owners:
                # Rows from before owners were recorded (NULL) have no lock to ask: only a crash leaves them.
                if owner is not None and not await conn.fetchval("SELECT pg_try_advisory_lock($1)", owner):
                    continue  # its publisher is alive
                try:
                    rows = await conn.fetch(
                        "DELETE FROM adapters WHERE state = 'RESERVED' AND reserved_by IS NOT DISTINCT FROM $1"
                        " RETURNING base_model, major, minor, patch, attempt", owner,
                    )
                finally:
                    if owner is not None:
                        await conn.execute("SELECT pg_advisory_unlock($1)", owner)
                released += [(r["base_model"], VersionNumber(r["major"], r["minor"], r["patch"]), r["attempt"])
                             for r in rows]
        return released

    async def supersede(self, base_model: str, request_id: str) -> list[tuple[str, VersionNumber, str]]:
        """Retire the reservations of ``request_id`` made under a job's lease that is no longer the job's (see the
        module docstring); return them as (base_model, number, attempt). A lease token is new at every claim, so
        one replaced is never the job's again: no lock is needed against a claim meanwhile."""
        async with acquired(self._pool) as conn:
            rows = await conn.fetch(
                "UPDATE adapters a SET state = 'SUPERSEDED' WHERE a.base_model = $1 AND a.request_id = $2"
                " AND a.state = 'RESERVED' AND a.fence_job IS NOT NULL"
                " AND a.fence_token IS DISTINCT FROM (SELECT j.lease_token FROM jobs j WHERE j.id = a.fence_job)"
                " RETURNING a.major, a.minor, a.patch, a.attempt", base_model, request_id,
            )
        return [(base_model, VersionNumber(r["major"], r["minor"], r["patch"]), r["attempt"]) for r in rows]

    async def get(self, base_model: str, number: VersionNumber, *, include_deleted: bool = False) -> AdapterRecord:
        states = ["PUBLISHED", "DELETED"] if include_deleted else ["PUBLISHED"]
        async with acquired(self._pool) as conn:
            doc = await conn.fetchval(
                f"SELECT doc FROM adapters WHERE {_KEY} AND state = ANY($5::text[])", base_model, *number, states
            )
        if doc is None:
            raise version_not_found(base_model, str(number))
        return _decode(doc)

    async def by_request_id(self, base_model: str, request_id: str) -> AdapterRecord | None:
        async with acquired(self._pool) as conn:
            doc = await conn.fetchval(
                "SELECT doc FROM adapters WHERE base_model = $1 AND request_id = $2 AND state = 'PUBLISHED'",
                base_model, request_id,
            )
        return None if doc is None else _decode(doc)

    async def list(
        self, *, base_model: str, labels: Mapping[str, str], limit: int, after: Cursor | None
    ) -> list[AdapterRecord]:
        """Published versions, newest first; ``after`` is the cursor of the previous page's last row."""
        clauses = ["state = 'PUBLISHED'"]
        args: list[object] = []  # query parameters
        if base_model:
            args.append(base_model)
            clauses.append(f"base_model = ${len(args)}")
        if labels:
            args.append(_json(dict(labels)))
            clauses.append(f"labels @> ${len(args)}::jsonb")
        if after is not None:
            args.extend(after)
            marks = ", ".join(f"${i}" for i in range(len(args) - len(after) + 1, len(args) + 1))
            clauses.append(f"(create_time, base_model, major, minor, patch) < ({marks})")
        args.append(limit)
        sql = (
            f"SELECT doc FROM adapters WHERE {' AND '.join(clauses)}"
            f" ORDER BY create_time DESC, base_model DESC, major DESC, minor DESC, patch DESC LIMIT ${len(args)}"
        )
        async with acquired(self._pool) as conn:
            rows = await conn.fetch(sql, *args)
        return [_decode(r["doc"]) for r in rows]

    @contextlib.asynccontextmanager
    async def deleting(self, base_model: str, number: VersionNumber) -> AsyncIterator[AdapterRecord]:
        """Lock a published version; if the body succeeds, it becomes a DELETED tombstone.

        The row lock (FOR UPDATE) conflicts with the KEY SHARE lock every serving_state
        writer takes through its foreign key, so a version cannot become active while it
        is being deleted, and a state written before the lock is visible inside the body.
        FAILED_PRECONDITION ADAPTER_PROTECTED while a training job that has not ended continues the version (its
        ``spec.parent_adapter_version``): the worker that prepares it, or resumes it, or takes it over, fetches it.
        """
        async with acquired(self._pool) as conn, conn.transaction():
            doc = await conn.fetchval(
                f"SELECT doc FROM adapters WHERE {_KEY} AND state = 'PUBLISHED' FOR UPDATE", base_model, *number
            )
            if doc is None:
                raise version_not_found(base_model, str(number))
            record = _decode(doc)
            await _refuse_if_continued(conn, record)
            yield record
            deleted_at = await conn.fetchval("SELECT now()")
            tombstone = replace(record, delete_time=deleted_at)
            await conn.execute(
                f"UPDATE adapters SET state = 'DELETED', delete_time = $5, doc = $6::jsonb WHERE {_KEY}",
                base_model, *number, deleted_at, _RECORD.dump_json(tombstone).decode(),
            )

    def pin(self, base_model: str, number: VersionNumber) -> Pin:
        return _Published(base_model, number)

    async def continued_versions(self, base_model: str) -> set[str]:
        """The versions of ``base_model`` a training job that has not ended continues (see ``_continuing``)."""
        async with acquired(self._pool) as conn:
            return set(await _continuing(conn, base_model))

    async def update(self, record: AdapterRecord) -> None:
        """Replace the stored record of a published version (e.g. to add eval results)."""
        async with acquired(self._pool) as conn:
            status = await conn.execute(
                f"UPDATE adapters SET doc = $5::jsonb, labels = $6::jsonb WHERE {_KEY} AND state = 'PUBLISHED'",
                record.base_model, *record.number, _RECORD.dump_json(record).decode(), _labels_json(record),
            )
        if status.endswith(" 0"):
            raise version_not_found(record.base_model, record.version)


class _Published:
    """A published version something being stored names (engine.domain.Pin): its row, PUBLISHED, held FOR SHARE in
    the storing transaction, which ``deleting``'s FOR UPDATE waits for before it reads the jobs that continue it.
    FOR SHARE does not conflict with the KEY SHARE serving state's writers take (``published_and_held``)."""

    def __init__(self, base_model: str, number: VersionNumber) -> None:
        self._base_model, self._number = base_model, number

    async def check(self, conn: asyncpg.pool.PoolConnectionProxy) -> None:
        published = await conn.fetchval(f"SELECT true FROM adapters WHERE {_KEY} AND state = 'PUBLISHED' FOR SHARE",
                                        self._base_model, *self._number)
        if not published:
            raise version_not_found(self._base_model, str(self._number))


async def _continuing(conn: asyncpg.pool.PoolConnectionProxy, base_model: str,
                      version: str | None = None) -> dict[str, str]:
    """The versions of ``base_model`` (``version`` only, if given) that a training job that has not ended (queued,
    preparing, running, paused, stopping) continues (its ``spec.parent_adapter_version``), each with the id of the
    first such job created: the one rule both a delete (``_refuse_if_continued``) and a prune
    (``continued_versions``) apply. Such a job needs its parent until it has ended (engine.stores.dataset_store keeps
    a dataset version for such jobs alike)."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (parent) doc -> 'spec' ->> 'parent_adapter_version' AS parent, id FROM jobs"
        " WHERE kind = 'training' AND NOT (state = ANY($2::text[])) AND doc -> 'spec' ->> 'base_model' = $1"
        " AND doc -> 'spec' ->> 'parent_adapter_version' <> ''"
        " AND ($3::text IS NULL OR doc -> 'spec' ->> 'parent_adapter_version' = $3)"
        " ORDER BY parent, create_time",
        base_model, [s.value for s in JobState if s.terminal], version,
    )
    return {r["parent"]: r["id"] for r in rows}


async def _refuse_if_continued(conn: asyncpg.pool.PoolConnectionProxy, record: AdapterRecord) -> None:
    """ADAPTER_PROTECTED if a training job that has not ended continues ``record`` (``_continuing``)."""
    job = (await _continuing(conn, record.base_model, record.version)).get(record.version)
    if job is not None:
        name = f"trainingJobs/{job}"
        raise FailedPrecondition(
            "ADAPTER_PROTECTED",
            f"{record.base_model} {record.version} is the parent of training job {name}, which has not ended: it is "
            "kept until the job has (cancel the job first to delete it)",
            metadata={"base_model": record.base_model, "version": record.version, "training_job": name},
        )


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _labels_json(record: AdapterRecord) -> str:
    return _json(dict(record.labels))
