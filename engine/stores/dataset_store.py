"""Dataset versions' records in PostgreSQL (``datasets``): the index of engine.training.stored_datasets.

A row is a version, its record whole as JSON (``doc``) beside the columns that are queried. Creating and deleting
the versions of one dataset hold a session advisory lock on it for the whole step, the artifact store's write or
removal included, so a version's bytes and its row appear and disappear together as seen by every other writer:
two uploads of the same bytes never make two versions, and a delete never removes bytes a version being created
has just found in the store. A training job is stored with its version pinned (``pin``: the version's row checked
READY and held FOR SHARE in the job's insert transaction), and a delete locks the rows FOR UPDATE before it reads
their users: a delete either comes first (the job is then not stored: NOT_FOUND) or finds the job and refuses.

PostgreSQL out of reach is UNAVAILABLE DATABASE_UNAVAILABLE: connections come through engine.stores.postgres.acquired,
and the statements on a lock's connection run under engine.stores.postgres.held (not the artifact store's step
between them, whose errors are its own).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from pydantic import TypeAdapter

from engine.domain import Pin
from engine.errors import EngineError, FailedPrecondition, NotFound
from engine.splits import SplitRule
from engine.stores.postgres import acquired, advisory_lock, held
from engine.training.dataset_records import Cursor, DatasetName, StoredDataset

log = logging.getLogger(__name__)

Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
_RECORD = TypeAdapter(StoredDataset)
_LOCK_NAMESPACE = "learning-engine/dataset/"
_ENDED = ["SUCCEEDED", "FAILED", "CANCELLED"]  # engine.jobs.core.JobState.terminal


def _decode(doc: str) -> StoredDataset:
    return _RECORD.validate_json(doc)


def _split_json(rule: SplitRule) -> str:
    return json.dumps(asdict(rule), sort_keys=True)


def _not_found(dataset_id: str, version: int | None) -> NotFound:
    name = str(DatasetName(dataset_id, version))
    what = f"dataset {name} has no version" if version is None else f"dataset version {name} does not exist"
    return NotFound("STORED_DATASET_NOT_FOUND", what, metadata={"name": name})


class PostgresDatasetIndex:
    """DatasetIndex (see engine.training.dataset_records) over the ``datasets`` table."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    def _locked(self, dataset_id: str) -> contextlib.AbstractAsyncContextManager[Conn]:
        """A connection holding the dataset's advisory lock for the block."""
        return advisory_lock(self._pool, _LOCK_NAMESPACE + dataset_id)

    async def register(self, draft: StoredDataset,
                       store: Callable[[], Awaitable[None]]) -> tuple[StoredDataset, bool]:
        split = _split_json(draft.content.split)
        async with self._locked(draft.dataset_id) as conn:
            with held(conn):
                doc = await conn.fetchval(
                    "SELECT doc FROM datasets WHERE dataset = $1 AND state = 'READY' AND sha256 = $2"
                    " AND split = $3::jsonb AND kind = $4 ORDER BY version LIMIT 1",
                    draft.dataset_id, draft.content.sha256, split, draft.content.kind.value,
                )
            if doc is not None:
                return _decode(doc), False
            await store()
            with held(conn):
                return await self._insert(conn, draft, split), True

    @staticmethod
    async def _insert(conn: Conn, draft: StoredDataset, split: str) -> StoredDataset:
        """Store ``draft`` as the dataset's next version (its lock held on ``conn``)."""
        async with conn.transaction():
            version = await conn.fetchval(
                "SELECT COALESCE(max(version), 0) + 1 FROM datasets WHERE dataset = $1", draft.dataset_id)
            record = replace(draft, version=version, create_time=await conn.fetchval("SELECT now()"))
            await conn.execute(
                "INSERT INTO datasets (dataset, version, name, state, sha256, split, kind, object_key, create_time,"
                " doc) VALUES ($1, $2, $3, 'READY', $4, $5::jsonb, $6, $7, $8, $9::jsonb)",
                record.dataset_id, record.version, record.name, record.content.sha256, split,
                record.content.kind.value, record.key, record.create_time, _RECORD.dump_json(record).decode(),
            )
        return record

    def pin(self, dataset_id: str, version: int) -> Pin:
        return _LiveVersion(dataset_id, version)

    async def get(self, dataset_id: str, version: int | None) -> StoredDataset:
        async with acquired(self._pool) as conn:
            if version is None:
                doc = await conn.fetchval(
                    "SELECT doc FROM datasets WHERE dataset = $1 AND state = 'READY' ORDER BY version DESC LIMIT 1",
                    dataset_id)
            else:
                doc = await conn.fetchval(
                    "SELECT doc FROM datasets WHERE dataset = $1 AND version = $2 AND state = 'READY'",
                    dataset_id, version)
        if doc is None:
            raise _not_found(dataset_id, version)
        return _decode(doc)

    async def list(self, *, dataset_id: str, limit: int, after: Cursor | None) -> list[StoredDataset]:
        clauses = ["state = 'READY'"]
        args: list[object] = []  # query parameters
        if dataset_id:
            args.append(dataset_id)
            clauses.append(f"dataset = ${len(args)}")
        if after is not None:
            args.extend(after)
            clauses.append(f"(create_time, name) < (${len(args) - 1}, ${len(args)})")
        args.append(limit)
        sql = (f"SELECT doc FROM datasets WHERE {' AND '.join(clauses)}"
               f" ORDER BY create_time DESC, name DESC LIMIT ${len(args)}")
        async with acquired(self._pool) as conn:
            rows = await conn.fetch(sql, *args)
        return [_decode(r["doc"]) for r in rows]

    async def delete(self, dataset_id: str, version: int | None,
                     remove: Callable[[builtins.list[str]], Awaitable[None]]) -> builtins.list[StoredDataset]:
        async with self._locked(dataset_id) as conn:
            with held(conn):
                records, shared = await self._mark_deleted(conn, dataset_id, version)
            keys = sorted({r.key for r in records} - shared)
            try:
                await remove(keys)
            except (EngineError, OSError) as exc:  # deleted all the same; the bytes stay behind, listed by nothing
                log.warning("a deleted dataset version's bytes could not be removed",
                            extra={"keys": keys, "error": str(exc)})
        return records

    async def _mark_deleted(self, conn: Conn, dataset_id: str,
                            version: int | None) -> tuple[builtins.list[StoredDataset], set[str]]:
        """Mark the versions deleted (the dataset's lock held on ``conn``), refused while one is in use; return them,
        and the objects the dataset's other versions still use."""
        async with conn.transaction():
            # the rows locked before their users are read: a job being stored on one (its pin holds the row, FOR
            # SHARE) is waited for, and then read
            docs = await conn.fetch(
                "SELECT doc FROM datasets WHERE dataset = $1 AND state = 'READY' AND ($2::integer IS NULL"
                " OR version = $2) ORDER BY version FOR UPDATE", dataset_id, version)
            if not docs:
                raise _not_found(dataset_id, version)
            records = [_decode(r["doc"]) for r in docs]
            names = [r.name for r in records]
            users = await self._users(conn, names)
            if users:
                shown = ", ".join(users[:5]) + (f" (+{len(users) - 5} more)" if len(users) > 5 else "")
                raise FailedPrecondition(
                    "DATASET_IN_USE", f"{', '.join(names)} cannot be deleted: {shown} trained on it; a dataset "
                    "version is kept while a training job that has not ended or a published adapter version names "
                    "it", metadata={"name": str(DatasetName(dataset_id, version)), "used_by": ",".join(users[:20])})
            await conn.execute(
                "UPDATE datasets SET state = 'DELETED', delete_time = now()"
                " WHERE dataset = $1 AND version = ANY($2::integer[])",
                dataset_id, [r.version for r in records])
            shared = {row["object_key"] for row in await conn.fetch(
                "SELECT object_key FROM datasets WHERE dataset = $1 AND state = 'READY'", dataset_id)}
        return records, shared

    @staticmethod
    async def _users(conn: Conn, names: builtins.list[str]) -> builtins.list[str]:
        """The training jobs that have not ended and the published adapter versions trained on ``names``."""
        jobs = await conn.fetch(
            "SELECT id FROM jobs WHERE kind = 'training' AND NOT (state = ANY($2::text[]))"
            " AND (doc -> 'output' -> 'dataset' -> 'source' ->> 'name' = ANY($1::text[])"
            " OR doc -> 'spec' -> 'dataset' ->> 'name' = ANY($1::text[])) ORDER BY create_time",
            names, _ENDED)
        adapters = await conn.fetch(
            "SELECT base_model, version FROM adapters WHERE state = 'PUBLISHED'"
            " AND doc -> 'dataset' -> 'source' ->> 'name' = ANY($1::text[]) ORDER BY create_time",
            names)
        return [f"trainingJobs/{r['id']}" for r in jobs] + [
            f"adapter {r['base_model']} {r['version']}" for r in adapters]


class _LiveVersion:
    """A dataset version something being stored names (engine.domain.Pin): its row, READY, held FOR SHARE in the
    storing transaction, which a delete's FOR UPDATE waits for before it reads the version's users."""

    def __init__(self, dataset_id: str, version: int) -> None:
        self._dataset_id, self._version = dataset_id, version

    async def check(self, conn: Conn) -> None:
        live = await conn.fetchval(
            "SELECT true FROM datasets WHERE dataset = $1 AND version = $2 AND state = 'READY' FOR SHARE",
            self._dataset_id, self._version)
        if not live:
            raise _not_found(self._dataset_id, self._version)
