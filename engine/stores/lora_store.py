"""PostgreSQL storage of LoraControl state, operation history, eval results and traffic splits (migration 0013:
at most one split per target in force, a canary's decision kept with it; migration 0019: what each serving
process's gateway counted for a split, and which process decides a canary, under a lease; migration 0030: the
versions being retired, each with the time its retirement is due, by the database's clock, which every serving
process shares).

``save`` also writes the registry's ``serving_state`` rows (ACTIVE / KNOWN_GOOD, migration
0003) through ``PostgresServingState``, with the target row, in one transaction that first holds the row of each
version it names (active, known-good, pending), so DeleteAdapter and pruning never remove a version the serving side
relies on, not even between two of the writes, and a failed save changes nothing. ``start_split`` holds its candidate
the same way (a split's candidate and a pending version are protected too: ``PostgresServingState``).
``serialised`` holds a session-level advisory lock per target, so operations from two server processes run one after
the other. Connections come through engine.stores.postgres.acquired (the lock's through advisory_lock): PostgreSQL out
of reach is UNAVAILABLE DATABASE_UNAVAILABLE.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

import asyncpg
from pydantic import TypeAdapter

from engine.jobs.codec import dump_json
from engine.jobs.core import JobFailure
from engine.lora.canary import (
    CanaryDecision,
    CanaryOutcome,
    CanaryPolicy,
    SplitKind,
    TrafficFigures,
    TrafficSplitState,
)
from engine.lora.state import EvalSummary, OperationKind, OperationRecord, Retirement, TargetState
from engine.registry.ports import ServingRole
from engine.serving.traffic import Tally, sum_tallies
from engine.stores.postgres import acquired, advisory_lock
from engine.stores.serving_state import PostgresServingState

_FAILURE = TypeAdapter(JobFailure)
_EVAL = TypeAdapter(EvalSummary)
_FIGURES = TypeAdapter(TrafficFigures)
_POLICY = TypeAdapter(CanaryPolicy)
_TALLY = TypeAdapter(Tally)
_LOCK_NAMESPACE = "learning-engine/lora-control/"


class PostgresLoraStore:
    def __init__(self, pool: asyncpg.Pool, serving: PostgresServingState) -> None:
        self._pool = pool
        self._serving = serving

    async def load(self, target: str, base_model: str) -> TargetState:
        async with acquired(self._pool) as conn:
            row = await conn.fetchrow("SELECT * FROM lora_targets WHERE target = $1", target)
        if row is None:
            return TargetState(target=target, base_model=base_model)
        return TargetState(
            target=row["target"], base_model=row["base_model"], enabled=row["enabled"],
            active_version=row["active_version"], previous_version=row["previous_version"],
            known_good_version=row["known_good_version"], pending_version=row["pending_version"],
        )

    async def save(self, state: TargetState) -> None:
        """Persist the target state and the registry's ``serving_state`` roles in one transaction, which first holds
        every version the state names (NOT_FOUND, and nothing changed, if one is not published): a delete of one of
        them waits for the commit and then finds it protected, even the outgoing active version becoming the
        known-good one."""
        async with acquired(self._pool) as conn, conn.transaction():
            await self._serving.hold(conn, state.base_model,
                                     (state.active_version, state.known_good_version, state.pending_version))
            await self._serving.write_roles(conn, state.base_model, {ServingRole.ACTIVE: state.active_version,
                                                                     ServingRole.KNOWN_GOOD: state.known_good_version})
            await conn.execute(
                "INSERT INTO lora_targets (target, base_model, enabled, active_version, previous_version,"
                " known_good_version, pending_version, update_time) VALUES ($1, $2, $3, $4, $5, $6, $7, now())"
                " ON CONFLICT (target) DO UPDATE SET base_model = $2, enabled = $3, active_version = $4,"
                " previous_version = $5, known_good_version = $6, pending_version = $7, update_time = now()",
                state.target, state.base_model, state.enabled, state.active_version, state.previous_version,
                state.known_good_version, state.pending_version,
            )

    async def record(self, target: str, op: OperationRecord) -> None:
        error = dump_json(_FAILURE, op.error).decode() if op.error else None
        gate = dump_json(_EVAL, op.gate).decode() if op.gate else None
        async with acquired(self._pool) as conn:
            await conn.execute(
                "INSERT INTO lora_operations (target, kind, version, actor, reason, start_time,"
                " duration_seconds, phases, error, gate, traffic)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10::jsonb, $11::jsonb)",
                target, op.kind.value, op.version, op.actor, op.reason, op.start_time, op.duration_seconds,
                json.dumps([list(p) for p in op.phases]), error, gate, _json(_FIGURES, op.traffic),
            )

    async def history(self, target: str, limit: int) -> list[OperationRecord]:
        async with acquired(self._pool) as conn:
            rows = await conn.fetch(
                "SELECT * FROM lora_operations WHERE target = $1 ORDER BY id DESC LIMIT $2", target, limit
            )
        return [
            OperationRecord(
                kind=OperationKind(r["kind"]), version=r["version"], actor=r["actor"], reason=r["reason"],
                start_time=r["start_time"], duration_seconds=r["duration_seconds"],
                phases=tuple((str(n), float(s)) for n, s in json.loads(r["phases"])),
                error=_FAILURE.validate_json(r["error"]) if r["error"] else None,
                gate=_EVAL.validate_json(r["gate"]) if r["gate"] else None,
                traffic=_FIGURES.validate_json(r["traffic"]) if r["traffic"] else None,
            )
            for r in rows
        ]

    async def last_operation(self, target: str) -> OperationRecord | None:
        found = await self.history(target, 1)
        return found[0] if found else None

    async def save_eval(self, base_model: str, summary: EvalSummary) -> None:
        async with acquired(self._pool) as conn:
            await conn.execute(
                "INSERT INTO lora_evals (base_model, version, baseline_version, doc) VALUES ($1, $2, $3, $4::jsonb)",
                base_model, summary.version, summary.baseline_version, dump_json(_EVAL, summary).decode(),
            )

    async def latest_eval(self, base_model: str, version: str, evaluation: str = "") -> EvalSummary | None:
        """The version's latest evaluation, or the one of id ``evaluation``."""
        async with acquired(self._pool) as conn:
            doc = await conn.fetchval(
                "SELECT doc FROM lora_evals WHERE base_model = $1 AND version = $2"
                " AND ($3 = '' OR doc->>'id' = $3) ORDER BY id DESC LIMIT 1",
                base_model, version, evaluation,
            )
        return _EVAL.validate_json(doc) if doc else None

    async def evaluations(self, base_model: str, versions: Sequence[str], *, per_version: int) -> list[EvalSummary]:
        async with acquired(self._pool) as conn:
            docs = await conn.fetch(
                "SELECT doc FROM (SELECT id, doc, row_number() OVER (PARTITION BY version ORDER BY id DESC) AS n"
                " FROM lora_evals WHERE base_model = $1 AND version = ANY($2::text[])) newest"
                " WHERE n <= $3 ORDER BY id DESC",
                base_model, list(versions), per_version,
            )
        return [_EVAL.validate_json(row["doc"]) for row in docs]

    async def start_split(self, target: str, split: TrafficSplitState) -> TrafficSplitState:
        """Store a split in force; NOT_FOUND (and nothing stored) unless its candidate is a published version of the
        target's base model, whose row is held until the split is stored: from then on it is protected."""
        async with acquired(self._pool) as conn, conn.transaction():
            base_model = await conn.fetchval("SELECT base_model FROM lora_targets WHERE target = $1", target)
            await self._serving.hold(conn, base_model or "", [split.candidate_version])
            split_id = await conn.fetchval(
                "INSERT INTO lora_traffic_splits (target, kind, active_version, candidate_version, share, policy,"
                " actor, reason, start_time, figures) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10::jsonb)"
                " RETURNING id",
                target, split.kind.value, split.active_version, split.candidate_version, split.share,
                _json(_POLICY, split.policy), split.actor, split.reason, split.start_time,
                _json(_FIGURES, split.figures),
            )
        return replace(split, id=split_id)

    async def save_split_figures(self, split_id: int, figures: TrafficFigures) -> None:
        async with acquired(self._pool) as conn:
            await conn.execute("UPDATE lora_traffic_splits SET figures = $2::jsonb WHERE id = $1 AND end_time IS NULL",
                               split_id, _json(_FIGURES, figures))

    async def save_split_tally(self, split_id: int, process: str, active: Tally, candidate: Tally) -> None:
        async with acquired(self._pool) as conn:
            await conn.execute(
                "INSERT INTO lora_split_tallies (split_id, process, active, candidate) VALUES ($1, $2, $3::jsonb,"
                " $4::jsonb) ON CONFLICT (split_id, process) DO UPDATE SET active = EXCLUDED.active,"
                " candidate = EXCLUDED.candidate, update_time = now()",
                split_id, process, _json(_TALLY, active), _json(_TALLY, candidate),
            )

    async def split_tallies(self, split_id: int, *, besides: str) -> tuple[Tally, Tally]:
        async with acquired(self._pool) as conn:
            rows = await conn.fetch("SELECT active, candidate FROM lora_split_tallies WHERE split_id = $1"
                                    " AND process <> $2", split_id, besides)
        return (sum_tallies(_TALLY.validate_json(r["active"]) for r in rows),
                sum_tallies(_TALLY.validate_json(r["candidate"]) for r in rows))

    async def claim_decider(self, split_id: int, process: str, lease_seconds: float) -> bool:
        async with acquired(self._pool) as conn:
            claimed = await conn.fetchval(
                "UPDATE lora_traffic_splits SET decider = $2, decider_until = now() + make_interval(secs => $3)"
                " WHERE id = $1 AND end_time IS NULL AND kind = $4"
                " AND (decider IN ('', $2) OR decider_until IS NULL OR decider_until < now()) RETURNING id",
                split_id, process, lease_seconds, SplitKind.CANARY.value,
            )
        return claimed is not None

    async def release_decider(self, split_id: int, process: str) -> None:
        async with acquired(self._pool) as conn:
            await conn.execute(
                "UPDATE lora_traffic_splits SET decider = '', decider_until = NULL WHERE id = $1 AND decider = $2"
                " AND end_time IS NULL",
                split_id, process,
            )

    async def end_split(self, split_id: int, figures: TrafficFigures, decision: CanaryDecision | None,
                        reason: str) -> None:
        async with acquired(self._pool) as conn:
            await conn.execute(
                "UPDATE lora_traffic_splits SET end_time = now(), figures = $2::jsonb, decision = $3, end_reason = $4"
                " WHERE id = $1 AND end_time IS NULL",
                split_id, _json(_FIGURES, figures), decision.value if decision else None, reason,
            )

    async def running_split(self, target: str) -> TrafficSplitState | None:
        async with acquired(self._pool) as conn:
            row = await conn.fetchrow("SELECT * FROM lora_traffic_splits WHERE target = $1 AND end_time IS NULL",
                                      target)
        return _split(row) if row else None

    async def canary_outcome(self, target: str, version: str = "") -> CanaryOutcome | None:
        async with acquired(self._pool) as conn:
            row = await conn.fetchrow(
                "SELECT * FROM lora_traffic_splits WHERE target = $1 AND ($2 = '' OR candidate_version = $2)"
                " AND kind = $3 AND decision IS NOT NULL ORDER BY id DESC LIMIT 1",
                target, version, SplitKind.CANARY.value,
            )
        if row is None:
            return None
        return CanaryOutcome(version=row["candidate_version"], decision=CanaryDecision(row["decision"]),
                             reason=row["end_reason"], figures=_FIGURES.validate_json(row["figures"]),
                             time=row["end_time"])

    async def retire(self, target: str, version: str, grace_seconds: float) -> None:
        """Retire ``version``: due ``grace_seconds`` from now. The latest retirement wins, even over a later due
        time: the version served again since the earlier one, so its grace starts over from now."""
        async with acquired(self._pool) as conn:
            await conn.execute(
                "INSERT INTO lora_retirements (target, version, due_time)"
                " VALUES ($1, $2, now() + make_interval(secs => $3))"
                " ON CONFLICT (target, version) DO UPDATE SET due_time = EXCLUDED.due_time",
                target, version, grace_seconds,
            )

    async def postpone(self, target: str, versions: Sequence[str], grace_seconds: float) -> None:
        """Make the retirements of ``versions`` due no sooner than ``grace_seconds`` from now (a due time already
        later stays: another process may need it)."""
        async with acquired(self._pool) as conn:
            await conn.execute(
                "UPDATE lora_retirements SET due_time = greatest(due_time, now() + make_interval(secs => $3))"
                " WHERE target = $1 AND version = ANY($2::text[])",
                target, list(versions), grace_seconds,
            )

    async def retirements(self, target: str) -> list[Retirement]:
        async with acquired(self._pool) as conn:
            rows = await conn.fetch(
                "SELECT version, due_time, due_time <= now() AS due FROM lora_retirements WHERE target = $1"
                " ORDER BY due_time, version",
                target,
            )
        return [Retirement(version=r["version"], due_time=r["due_time"], due=r["due"]) for r in rows]

    async def retired(self, target: str, version: str) -> None:
        async with acquired(self._pool) as conn:
            await conn.execute("DELETE FROM lora_retirements WHERE target = $1 AND version = $2", target, version)

    @contextlib.asynccontextmanager
    async def serialised(self, target: str) -> AsyncIterator[None]:
        """Hold ``pg_advisory_lock`` on the target for the block (a dedicated connection)."""
        async with advisory_lock(self._pool, _LOCK_NAMESPACE + target):
            yield


def _json(adapter: TypeAdapter[Any], value: object | None) -> str | None:
    return dump_json(adapter, value).decode() if value is not None else None


def _split(row: asyncpg.Record) -> TrafficSplitState:
    return TrafficSplitState(
        id=row["id"], kind=SplitKind(row["kind"]), active_version=row["active_version"],
        candidate_version=row["candidate_version"], share=row["share"], start_time=row["start_time"],
        actor=row["actor"], reason=row["reason"],
        policy=_POLICY.validate_json(row["policy"]) if row["policy"] else None,
        figures=_FIGURES.validate_json(row["figures"]) if row["figures"] else None,
    )
