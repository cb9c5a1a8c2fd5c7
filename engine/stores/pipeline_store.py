"""Pipelines and their trigger decisions in PostgreSQL (``pipelines``, ``pipeline_trigger_decisions``); the
pipelines' runs are found among the jobs (kind ``pipelineRun``) by the pipeline as their spec records it: its id and
its creation time, since a run (a job) outlives its pipeline, and a pipeline created again under a deleted one's id is
another pipeline, whose runs are its own. Every run records the creation time of its pipeline (runs stored before
this rule too), so no migration is needed; a run that records none is matched by the id alone.

``locked`` holds a session advisory lock per pipeline on its own connection for the block: the replicas that
evaluate a pipeline's triggers at the same moment decide one after the other, so one of them sees the run the
other started. A decision's primary key is (pipeline, occasion): recording one twice keeps the first.
The block's store queries run on that connection, and a process asks the pool for a lock's connection only once no
other of its calls holds or waits for that pipeline's lock and fewer than half the pool's connections hold
pipeline locks: a locked section that needs another connection (to start a run, a job) always finds one, instead of
every connection of the pool held by sections and callers waiting for each other.

PostgreSQL out of reach is UNAVAILABLE DATABASE_UNAVAILABLE: the queries run on a connection of
engine.stores.postgres.acquired, or (``locked``) on the lock's under engine.stores.postgres.held.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from pydantic import TypeAdapter

from engine.errors import Aborted, AlreadyExists, NotFound
from engine.jobs.codec import dump_json
from engine.names import PageScope, decode_page_token, encode_page_token
from engine.pipelines.spec import PIPELINE_RUN, Pipeline, TriggerDecision, TriggerKind
from engine.stores.postgres import Statements, acquired, advisory_lock, held

Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"  # a pooled connection (generic in the stubs only)
_PIPELINE = TypeAdapter(Pipeline)
_LOCK_NAMESPACE = "learning-engine/pipeline/"
_ENDED = ["SUCCEEDED", "FAILED", "CANCELLED"]  # engine.jobs.core.JobState.terminal
# A run (a job) of the pipeline $2 created at $3: the pipeline as the run's spec recorded it, by id (the index
# jobs_pipeline_idx) and creation time (compared as a time, not as the text the JSON holds).
_OF_PIPELINE = ("doc -> 'spec' -> 'pipeline' ->> 'id' = $2 AND ($3::timestamptz IS NULL"
                " OR doc -> 'spec' -> 'pipeline' ->> 'create_time' IS NULL"
                " OR (doc -> 'spec' -> 'pipeline' ->> 'create_time')::timestamptz = $3::timestamptz)")


_PIPELINES = PageScope("pipelines")  # what a ListPipelines page token pages


def _runs_scope(pipeline: Pipeline, active_only: bool) -> PageScope:
    """What a page token of :meth:`PostgresPipelineStore.run_ids` pages: the runs of this pipeline (its id and
    creation time: a token of a deleted predecessor's runs is not this one's), all or the active ones only."""
    created = pipeline.create_time.isoformat() if pipeline.create_time is not None else ""
    return PageScope(PIPELINE_RUN.collection, (pipeline.id, created, active_only))


def not_found(pipeline_id: str) -> NotFound:
    return NotFound("PIPELINE_NOT_FOUND", f"pipeline pipelines/{pipeline_id} does not exist",
                    metadata={"name": f"pipelines/{pipeline_id}"})


def _decision(r: asyncpg.Record) -> TriggerDecision:
    return TriggerDecision(pipeline_id=r["pipeline_id"], kind=TriggerKind(r["kind"]), key=r["key"], fired=r["fired"],
                           reason=r["reason"], time=r["time"], run_id=r["run_id"], count=r["sample_count"])


class PostgresPipelineStore:
    """engine.pipelines.ports.PipelineStore over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._lock_conn: Conn | None = None  # (``locked``) the lock's connection, where the queries run
        self._statements = Statements(self._db)

    @contextlib.asynccontextmanager
    async def _db(self) -> AsyncIterator[Conn]:
        """Where the queries run: a connection of the pool, or (``locked``) the lock's; PostgreSQL out of reach,
        UNAVAILABLE DATABASE_UNAVAILABLE."""
        if self._lock_conn is None:
            async with acquired(self._pool) as conn:
                yield conn
        else:
            with held(self._lock_conn) as conn:
                yield conn

    @staticmethod
    def _decode(doc: str) -> Pipeline:
        return _PIPELINE.validate_json(doc)

    async def insert(self, pipeline: Pipeline) -> Pipeline:
        now = datetime.now(UTC)
        stored = replace(pipeline, create_time=now, update_time=now, etag=uuid.uuid4().hex[:16])
        row = await self._statements.fetchrow(
            "INSERT INTO pipelines (id, base_model, enabled, etag, create_time, update_time, doc)"
            " VALUES ($1, $2, $3, $4, $5, $5, $6::jsonb) ON CONFLICT (id) DO NOTHING RETURNING id",
            stored.id, stored.base_model, stored.enabled, stored.etag, now,
            dump_json(_PIPELINE, stored).decode(),
        )
        if row is None:
            raise AlreadyExists("PIPELINE_EXISTS", f"pipeline {pipeline.name} already exists",
                                metadata={"name": pipeline.name})
        return stored

    async def get(self, pipeline_id: str) -> Pipeline:
        doc = await self._statements.fetchval("SELECT doc FROM pipelines WHERE id = $1", pipeline_id)
        if doc is None:
            raise not_found(pipeline_id)
        return self._decode(doc)

    async def list(self, *, page_size: int, page_token: str) -> tuple[builtins.list[Pipeline], str]:
        before = decode_page_token(page_token, _PIPELINES) if page_token else None
        if before is None:
            rows = await self._statements.fetch(
                "SELECT doc FROM pipelines ORDER BY create_time DESC, id DESC LIMIT $1", page_size + 1)
        else:
            rows = await self._statements.fetch(
                "SELECT doc FROM pipelines WHERE (create_time, id) < ($1, $2)"
                " ORDER BY create_time DESC, id DESC LIMIT $3", before[0], before[1], page_size + 1)
        found = [self._decode(r["doc"]) for r in rows]
        page = found[:page_size]
        more = len(found) > page_size and page
        token = encode_page_token(_PIPELINES, page[-1].create_time or datetime.now(UTC), page[-1].id) if more else ""
        return page, token

    async def replace(self, pipeline: Pipeline, *, etag: str) -> Pipeline:
        stored = replace(pipeline, update_time=datetime.now(UTC), etag=uuid.uuid4().hex[:16])
        row = await self._statements.fetchrow(
            "UPDATE pipelines SET enabled = $2, etag = $3, update_time = $4, doc = $5::jsonb"
            " WHERE id = $1 AND ($6 = '' OR etag = $6) RETURNING id",
            stored.id, stored.enabled, stored.etag, stored.update_time, dump_json(_PIPELINE, stored).decode(),
            etag,
        )
        if row is None:
            exists = await self._statements.fetchval("SELECT 1 FROM pipelines WHERE id = $1", stored.id)
            if not exists:
                raise not_found(stored.id)
            raise Aborted("PIPELINE_CHANGED", f"{pipeline.name} changed since etag {etag!r}; read it again",
                          metadata={"name": pipeline.name})
        return stored

    async def delete(self, pipeline_id: str) -> None:
        if await self._statements.execute("DELETE FROM pipelines WHERE id = $1", pipeline_id) == "DELETE 0":
            raise not_found(pipeline_id)

    @contextlib.asynccontextmanager
    async def locked(self, pipeline_id: str) -> AsyncIterator[PostgresPipelineStore]:
        async with advisory_lock(self._pool, _LOCK_NAMESPACE + pipeline_id, another_connection=True) as conn:
            on_lock = copy.copy(self)  # shares the pool: only the queries move to the lock's connection
            on_lock._lock_conn = conn
            on_lock._statements = Statements(on_lock._db)
            yield on_lock

    async def record(self, decision: TriggerDecision) -> bool:
        row = await self._statements.fetchrow(
            "INSERT INTO pipeline_trigger_decisions (pipeline_id, key, kind, fired, reason, run_id,"
            " sample_count, time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (pipeline_id, key) DO NOTHING RETURNING key",
            decision.pipeline_id, decision.key, decision.kind.value, decision.fired, decision.reason,
            decision.run_id, decision.count, decision.time,
        )
        return row is not None

    async def decision(self, pipeline_id: str, key: str) -> TriggerDecision | None:
        row = await self._statements.fetchrow(
            "SELECT * FROM pipeline_trigger_decisions WHERE pipeline_id = $1 AND key = $2", pipeline_id, key)
        return None if row is None else _decision(row)

    async def decisions(self, pipeline_id: str, *, page_size: int,
                        page_token: str = "") -> tuple[builtins.list[TriggerDecision], str]:
        scope = PageScope("pipelineTriggerDecisions", (pipeline_id,))
        args: builtins.list[object] = [pipeline_id, page_size + 1]
        after = ""
        if page_token:
            args += decode_page_token(page_token, scope)
            after = " AND (time, key) < ($3, $4)"
        rows = await self._statements.fetch(
            f"SELECT * FROM pipeline_trigger_decisions WHERE pipeline_id = $1{after}"
            " ORDER BY time DESC, key DESC LIMIT $2", *args)
        page = rows[:page_size]
        token = encode_page_token(scope, page[-1]["time"], page[-1]["key"]) if len(rows) > page_size else ""
        return [_decision(r) for r in page], token

    async def run_ids(self, pipeline: Pipeline, *, active_only: bool, page_size: int,
                      page_token: str) -> tuple[builtins.list[str], str]:
        scope = _runs_scope(pipeline, active_only)
        before = decode_page_token(page_token, scope) if page_token else None
        clauses = ["kind = $1", _OF_PIPELINE]
        args: builtins.list[object] = [PIPELINE_RUN.name, pipeline.id, pipeline.create_time]
        if active_only:
            args.append(_ENDED)
            clauses.append(f"NOT state = ANY(${len(args)}::text[])")
        if before is not None:
            args += [before[0], before[1]]
            clauses.append(f"(create_time, id) < (${len(args) - 1}, ${len(args)})")
        args.append(page_size + 1)
        sql = (f"SELECT id, create_time FROM jobs WHERE {' AND '.join(clauses)}"
               f" ORDER BY create_time DESC, id DESC LIMIT ${len(args)}")
        rows = await self._statements.fetch(sql, *args)
        page = rows[:page_size]
        token = encode_page_token(scope, page[-1]["create_time"], page[-1]["id"]) if len(rows) > page_size else ""
        return [r["id"] for r in page], token

    async def last_run_start(self, pipeline: Pipeline) -> datetime | None:
        value: datetime | None = await self._statements.fetchval(
            f"SELECT max(create_time) FROM jobs WHERE kind = $1 AND {_OF_PIPELINE}",
            PIPELINE_RUN.name, pipeline.id, pipeline.create_time)
        return value

    async def feedback_count(self, *, base_model: str, since: datetime, labels: Sequence[tuple[str, str]],
                             negative_only: bool, rating_negative_max: int) -> int:
        # Events that recorded no base model ('', stored before migration 0020) count for every base model.
        count: int = await self._statements.fetchval(
            "SELECT count(*) FROM feedback_events WHERE base_model IN ($5, '') AND received_time >= $1"
            " AND labels @> $2::jsonb AND (NOT $3 OR kind = 'THUMBS_DOWN' OR (kind = 'RATING' AND rating <= $4))",
            since, json.dumps(dict(labels)), negative_only, rating_negative_max, base_model)
        return count
