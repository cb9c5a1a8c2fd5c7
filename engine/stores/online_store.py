"""Online sessions' examples and controls in PostgreSQL (``online_examples``, ``online_controls``).

The sessions themselves are jobs (kind ``onlineSession``). Examples get a sequence number as they are stored;
the worker reads them in order from the last one it read, so a session taken over by another worker goes on
from its checkpoint without losing or repeating any. A control that asks for something once (an update now, a
publication) is a counter: the worker acts on each increment it has not seen.

The controls also hold the session's live alias (migration 0024): its name, and its state, which outlives the
session (``AliasState``). A name is held by one session at a time per base model (FOLLOWING or KEPT).

And the session's feedback watermark (migration 0026): how far the feedback on its live model has become examples.
It moves in the transaction that stores the examples a window of feedback made (``add_feedback``), so a window is
made into examples once, whatever happens to the worker between that and storing its job.

A client's examples are idempotent per (session, client_example_id) (migration 0029): one whose id the session holds
is not stored again, and is counted as a duplicate. They are stored under the session's lock, which the count of a
stop's untrained examples (``count_after``) takes too, and only while the session is neither stopping nor ended
(``add``): an example a client is told was stored is one that count sees.
"""

from __future__ import annotations

import builtins
import contextlib
import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from engine.domain import OnlineExamples
from engine.errors import FailedPrecondition
from engine.jobs.core import JobState
from engine.online.spec import (
    ONLINE_SESSION,
    AliasState,
    Controls,
    GateVerdict,
    NewExample,
    StoredExample,
    StoredRows,
    not_found,
    session_ended,
    session_exists,
    session_id_in_use,
)
from engine.registry.records import parse_version, version_not_found
from engine.stores.adapter_index import published_and_held
from engine.stores.feedback_store import ERASURE_LOCK, user_hash
from engine.stores.job_store import SHOWN_STATE_SQL
from engine.stores.postgres import Statements, acquired, advisory_lock

_COUNTERS = ("force_updates", "publish_requests")
_LOCK_NAMESPACE = "learning-engine/online/"
Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"  # a pooled connection (generic in the stubs only)


def _controls(r: asyncpg.Record) -> Controls:
    gates = json.loads(r["gates"])
    return Controls(
        session_id=r["session_id"], enabled=r["enabled"], learning_rate=r["learning_rate"],
        disabled_reason=r["disabled_reason"], force_updates=r["force_updates"],
        publish_requests=r["publish_requests"], refused_examples=r["refused_examples"],
        alias_version=r["alias_version"], erasures=r["erasures"],
        gates=tuple((v, GateVerdict(g["passed"], tuple(g["failed_checks"]), g["gated"]))
                    for v, g in sorted(gates.items())),
        base_model=r["base_model"], start_version=r["start_version"], live_alias=r["live_alias"],
        alias_state=AliasState(r["alias_state"]),
    )


def _verdict(verdict: GateVerdict) -> dict[str, Any]:
    return {"passed": verdict.passed, "failed_checks": list(verdict.failed_checks), "gated": verdict.gated}


_ROUTED = "alias_state IN ('FOLLOWING', 'KEPT')"


def _published(version: str, first: int, base_model: str = "online_controls.base_model") -> tuple[str, list[int]]:
    """SQL true while ``version`` of ``base_model`` (SQL: the row's, by default) is published, holding it against
    a delete until the statement's transaction ends (engine.stores.adapter_index.published_and_held: what a live
    alias serves is protected, so the delete either sees the alias or the alias does not move), and its
    parameters from ``$first``. An empty version (none named) is always true."""
    if not version:
        return "TRUE", []
    return published_and_held(base_model, first), list(parse_version(version))


_COLUMNS = "seq, prompt, target, weight, desirable"


def _example(r: asyncpg.Record) -> StoredExample:
    return StoredExample(seq=r["seq"], prompt=r["prompt"], target=r["target"], weight=r["weight"],
                         desirable=r["desirable"])


async def _lock(conn: Conn, session_id: str) -> None:
    """The session's transaction lock, which every insert of its examples takes first, so that its sequence
    numbers are committed in order: a worker that read up to one never finds a smaller one committed later."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", _LOCK_NAMESPACE + session_id)


async def _insert(conn: Conn, session_id: str, rows: Sequence[NewExample],
                  users: Sequence[Collection[str]]) -> list[int]:
    """Insert ``rows`` in order (``users`` per row when given: whose feedback it was made from), in the caller's
    transaction, which holds the session's lock (``_lock``); the sequence numbers of those stored. A row whose
    client_example_id the session holds already (stored before, or earlier in ``rows``) is not stored."""
    if not rows:
        return []
    owners = [json.dumps(sorted(u)) for u in users] if users else ["[]"] * len(rows)
    assert len(owners) == len(rows)
    seqs = await conn.fetch(
        "INSERT INTO online_examples (session_id, prompt, target, weight, desirable, users, client_example_id)"
        " SELECT $1, p, t, w, d, ARRAY(SELECT jsonb_array_elements_text(u::jsonb)), c"
        " FROM unnest($2::text[], $3::text[], $4::float8[], $5::bool[], $6::text[], $7::text[])"
        " WITH ORDINALITY AS x(p, t, w, d, u, c, n) ORDER BY n"
        " ON CONFLICT (session_id, client_example_id) WHERE client_example_id <> '' DO NOTHING RETURNING seq",
        session_id, [r.prompt for r in rows], [r.target for r in rows], [r.weight for r in rows],
        [r.desirable for r in rows], owners, [r.client_example_id for r in rows])
    return [r["seq"] for r in seqs]


async def _check_open(conn: Conn, session_id: str) -> None:
    """FAILED_PRECONDITION (ONLINE_SESSION_ENDED) when the session is stopping or has ended, as it is shown
    (engine.jobs.core.shown_state: a stop asked of the worker holding it counts); NOT_FOUND without its job."""
    state = await conn.fetchval(f"SELECT {SHOWN_STATE_SQL} FROM jobs WHERE id = $1 AND kind = $2", session_id,
                                ONLINE_SESSION.name)
    if state is None:
        raise not_found(session_id)
    shown = JobState(state)
    if shown.terminal or shown is JobState.CANCELLING:
        raise session_ended(session_id, shown)


class PostgresOnlineStore:
    """engine.online.ports.OnlineStore over an asyncpg pool. Every call reaches PostgreSQL through ``acquired``
    (transactions) or ``Statements`` (one statement): out of reach, it raises Unavailable DATABASE_UNAVAILABLE, on
    which a running session stops for another worker (engine.online.session)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool  # transactions: acquired(self._pool)
        self._statements = Statements.on(pool)  # one-statement calls

    def creating(self, session_id: str) -> contextlib.AbstractAsyncContextManager[object]:
        """The creates of ``session_id`` take turns, in every process on the database, for the block: from the look
        for an earlier create to the job's insert (engine.online.service)."""
        return advisory_lock(self._pool, f"{_LOCK_NAMESPACE}create/{session_id}", another_connection=True)

    # ---- controls ------------------------------------------------------------------------------

    async def create(self, session_id: str, learning_rate: float, *, base_model: str = "", start_version: str = "",
                     live_alias: str = "", request_id: str = "") -> None:
        """The session's controls, under :meth:`creating`: controls of the id without a job are a create's that
        stopped before its job was stored (a server stopped between the two), and are replaced; ALREADY_EXISTS
        (ONLINE_SESSION_EXISTS) if the session has controls and a job. A ``live_alias``
        is taken for the session, under a lock on the name: FAILED_PRECONDITION (ONLINE_ALIAS_IN_USE) while another
        session of ``base_model`` holds it, unless that session was created by the same ``request_id`` (this create
        is its retry, and the controls made here are the caller's to discard). NOT_FOUND (ADAPTER_NOT_FOUND)
        when ``start_version``, which the alias serves until it moves, is no longer published. ALREADY_EXISTS
        (ONLINE_SESSION_ID_IN_USE), storing nothing, when a job of another kind has the id."""
        async with acquired(self._pool) as conn, conn.transaction():
            # Sessions are jobs: the id of a job of another kind is taken (the session's insert would fail on it).
            kind = await conn.fetchval("SELECT kind FROM jobs WHERE id = $1", session_id)
            if kind is not None and kind != ONLINE_SESSION.name:
                raise session_id_in_use(session_id, kind)
            await conn.execute("DELETE FROM online_controls WHERE session_id = $1"
                               " AND NOT EXISTS (SELECT 1 FROM jobs WHERE id = $1)", session_id)
            if start_version:  # an empty one names nothing to hold
                published, number = _published(start_version, 2, "$1::text")
                if not await conn.fetchval(f"SELECT {published}", base_model, *number):
                    raise version_not_found(base_model, start_version)
            state = AliasState.NONE
            if live_alias:
                await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                                   f"{_LOCK_NAMESPACE}alias/{base_model}/{live_alias}")
                holder = await conn.fetchrow(
                    f"SELECT c.session_id, j.request_id FROM online_controls c LEFT JOIN jobs j ON j.id = c.session_id"
                    f" WHERE c.base_model = $1 AND c.live_alias = $2 AND c.{_ROUTED} AND c.session_id <> $3",
                    base_model, live_alias, session_id)
                if holder is None:
                    state = AliasState.FOLLOWING
                elif not request_id or holder["request_id"] != request_id:
                    held = f"onlineSessions/{holder['session_id']}"
                    raise FailedPrecondition(
                        "ONLINE_ALIAS_IN_USE", f"the live alias {live_alias!r} is held by {held}; remove it there "
                        "first (RemoveLiveAlias), or name another",
                        metadata={"live_alias": live_alias, "held_by": held})
            inserted = await conn.fetchval(
                "INSERT INTO online_controls (session_id, learning_rate, base_model, start_version, live_alias,"
                " alias_state) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (session_id) DO NOTHING RETURNING true",
                session_id, learning_rate, base_model, start_version, live_alias, state.value)
            if not inserted:  # the session has its job: a create of it that did not take its turn (creating)
                raise session_exists(session_id)

    async def discard(self, session_id: str) -> None:
        """The controls of a session that was never stored (its create failed, or returned another by its
        request_id): only ever those the caller's own ``create`` stored."""
        await self._statements.execute("DELETE FROM online_controls WHERE session_id = $1", session_id)

    async def controls(self, session_id: str) -> Controls:
        row = await self._statements.fetchrow("SELECT * FROM online_controls WHERE session_id = $1", session_id)
        if row is None:
            raise not_found(session_id)
        return _controls(row)

    async def controls_of(self, session_ids: Sequence[str]) -> dict[str, Controls]:
        rows = await self._statements.fetch("SELECT * FROM online_controls WHERE session_id = ANY($1::text[])",
                                            list(session_ids))
        return {r["session_id"]: _controls(r) for r in rows}

    async def set(self, session_id: str, *, verdicts: Mapping[str, GateVerdict] | None = None,
                  **changes: Any) -> Controls:
        """Set ``enabled``, ``disabled_reason``, ``learning_rate`` or ``alias_version`` (only while the alias
        follows the session, or it has none: a kept or removed alias keeps what it serves, or served; and only
        to a version still published: the returned controls say where the alias is). ``verdicts``: gate verdicts
        recorded, in the same statement, on those of their versions the gate has not judged (a verdict recorded
        already stays; a serving process judging one now finds it judged when it records its own)."""
        allowed = {"enabled", "disabled_reason", "learning_rate", "alias_version"}
        assert (changes or verdicts) and set(changes) <= allowed, changes
        columns = list(changes)
        values: list[Any] = [changes[c] for c in columns]
        assignments = [f"{c} = ${i + 2}" for i, c in enumerate(columns) if c != "alias_version"]
        if verdicts:
            values += [json.dumps({v: _verdict(g) for v, g in verdicts.items()}), list(verdicts)]
            # jsonb ||: the right-hand side's key wins, so a verdict already recorded stays
            assignments.append(f"gates = ${len(values)}::jsonb || gates, gate_claims = gate_claims - "
                               f"${len(values) + 1}::text[]")
        if "alias_version" in changes:
            published, number = _published(changes["alias_version"], len(values) + 2)
            values += number
            assignments.append(f"alias_version = CASE WHEN alias_state IN ('', 'FOLLOWING') AND {published}"
                               f" THEN ${columns.index('alias_version') + 2} ELSE alias_version END")
        row = await self._statements.fetchrow(
            f"UPDATE online_controls SET {', '.join(assignments)}, update_time = now() WHERE session_id = $1"
            " RETURNING *", session_id, *values)
        if row is None:
            raise not_found(session_id)
        return _controls(row)

    async def request(self, session_id: str, counter: str, *, while_enabled: bool = False) -> tuple[Controls, bool]:
        """One more request of ``counter`` (``force_updates`` or ``publish_requests``), only while learning is
        enabled if ``while_enabled``: the controls as they are after it, and whether it was requested. One
        statement, which locks the row and judges its latest version: a disable committed between a check and the
        request cannot leave a request no one acts on, and the controls returned are those it was judged on."""
        assert counter in _COUNTERS
        row = await self._statements.fetchrow(
            f"UPDATE online_controls SET {counter} = {counter} + (enabled OR NOT $2)::int,"
            " update_time = CASE WHEN enabled OR NOT $2 THEN now() ELSE update_time END"
            " WHERE session_id = $1 RETURNING *, enabled OR NOT $2 AS requested", session_id, while_enabled)
        if row is None:
            raise not_found(session_id)
        return _controls(row), row["requested"]

    # ---- live aliases ----------------------------------------------------------------------------

    async def aliases(self, base_model: str) -> list[Controls]:
        """The sessions of ``base_model`` whose live alias is routed (FOLLOWING or KEPT)."""
        rows = await self._statements.fetch(f"SELECT * FROM online_controls WHERE base_model = $1 AND {_ROUTED}",
                                            base_model)
        return [_controls(r) for r in rows]

    async def routed_versions(self, base_model: str) -> builtins.set[str]:
        """The versions the live aliases of ``base_model`` serve (engine.lora.state.RoutedElsewhere)."""
        rows = await self._statements.fetch(
            f"SELECT DISTINCT CASE WHEN alias_version = '' THEN start_version ELSE alias_version END AS version"
            f" FROM online_controls WHERE base_model = $1 AND {_ROUTED}", base_model)
        return {r["version"] for r in rows if r["version"]}

    async def protected_versions(self, base_model: str) -> dict[str, str]:
        """The versions of ``base_model`` online sessions rely on, which must stay published, each with what it is
        to which session: those their live aliases serve (``routed_versions``), and, for each session that has not
        ended, its start version (a worker that takes it over or resumes it loads that version) and its latest
        publication (its next one's parent). Controls whose job is not stored yet are a session being created: its
        start version counts."""
        rows = await self._statements.fetch(
            "SELECT c.session_id, c.start_version, j.doc -> 'output' -> 'publications' -> -1 ->> 'version' AS latest"
            " FROM online_controls c LEFT JOIN jobs j ON j.id = c.session_id"
            " WHERE c.base_model = $1 AND (j.id IS NULL OR j.state <> ALL($2::text[]))",
            base_model, [s.value for s in JobState if s.terminal])
        routed = await self._statements.fetch(
            f"SELECT session_id, live_alias, CASE WHEN alias_version = '' THEN start_version ELSE alias_version END"
            f" AS version FROM online_controls WHERE base_model = $1 AND {_ROUTED}", base_model)
        protected: dict[str, str] = {}
        for r in rows:
            session = f"online session onlineSessions/{r['session_id']}"
            if r["start_version"]:
                protected[r["start_version"]] = f"the start version of {session}, which has not ended; stop it first"
            if r["latest"]:
                protected[r["latest"]] = f"the latest publication of {session}, which has not ended; stop it first"
        for r in routed:
            if r["version"]:
                protected[r["version"]] = (f"served by the live alias {r['live_alias']!r} of online session "
                                           f"onlineSessions/{r['session_id']}; move or remove the alias first")
        return protected

    async def end_alias(self, session_id: str, *, untouched_for: float = 0.0) -> Controls | None:
        """Settle the alias of a session that ended: KEPT on the version it serves when one was chosen for it (a
        publication that passed the gate, an operator's, a feedback spike's start version), ENDED when it still
        serves the start version by default. None when it no longer follows the session (settled already, by
        another serving process too), or its controls changed within the last ``untouched_for`` seconds."""
        row = await self._statements.fetchrow(
            "UPDATE online_controls SET alias_state = CASE WHEN alias_version = '' THEN 'ENDED' ELSE 'KEPT' END,"
            " update_time = now() WHERE session_id = $1 AND alias_state = 'FOLLOWING'"
            " AND update_time <= now() - make_interval(secs => $2) RETURNING *", session_id, untouched_for)
        return _controls(row) if row is not None else None

    async def move_alias(self, session_id: str, version: str) -> Controls | None:
        """Point a routed alias at ``version`` if it is still published (the returned controls say where the alias
        is); None when the session's alias is not routed."""
        published, number = _published(version, 3)
        row = await self._statements.fetchrow(
            f"UPDATE online_controls SET alias_version = CASE WHEN {published} THEN $2 ELSE alias_version END,"
            f" update_time = now() WHERE session_id = $1 AND {_ROUTED} RETURNING *", session_id, version, *number)
        return _controls(row) if row is not None else None

    async def remove_alias(self, session_id: str) -> Controls | None:
        """REMOVED, for a routed alias; None when the session's alias is not routed."""
        row = await self._statements.fetchrow(
            f"UPDATE online_controls SET alias_state = 'REMOVED', update_time = now() WHERE session_id = $1"
            f" AND {_ROUTED} RETURNING *", session_id)
        return _controls(row) if row is not None else None

    async def claim_gate(self, session_id: str, version: str, owner: str, lease_seconds: float) -> bool:
        """Whether ``owner`` may run the gate on ``version`` now: no verdict yet, and no other owner's claim whose
        lease still runs. The claim is taken (or renewed) in the same statement, so of several serving processes
        asking at once exactly one gets it."""
        claimed = await self._statements.fetchval(
            "UPDATE online_controls SET gate_claims = gate_claims || jsonb_build_object($2::text,"
            " jsonb_build_object('owner', $3::text, 'until', now() + make_interval(secs => $4)))"
            " WHERE session_id = $1 AND NOT gates ? $2 AND (NOT gate_claims ? $2"
            " OR gate_claims -> $2 ->> 'owner' = $3 OR (gate_claims -> $2 ->> 'until')::timestamptz < now())"
            " RETURNING true", session_id, version, owner, lease_seconds)
        return bool(claimed)

    async def record_gate(self, session_id: str, version: str, verdict: GateVerdict) -> Controls:
        """Record the gate's ``verdict`` on ``version`` unless one is recorded already (a negative-feedback spike
        records a failed one on the publications the gate had not judged), and, in the same statement, move the
        alias to it when this verdict, recorded, passed (only while the alias follows the session or it has
        none, and only to a version still published, as ``set``). The controls after."""
        published, number = _published(version, 5)
        row = await self._statements.fetchrow(
            "UPDATE online_controls SET"
            f" alias_version = CASE WHEN $4 AND NOT gates ? $2 AND alias_state IN ('', 'FOLLOWING') AND {published}"
            " THEN $2 ELSE alias_version END,"
            " gates = CASE WHEN gates ? $2 THEN gates ELSE gates || jsonb_build_object($2::text, $3::jsonb) END,"
            " gate_claims = gate_claims - $2::text, update_time = now() WHERE session_id = $1 RETURNING *",
            session_id, version, json.dumps(_verdict(verdict)), verdict.passed, *number)
        if row is None:
            raise not_found(session_id)
        return _controls(row)

    # ---- examples ------------------------------------------------------------------------------

    async def add(self, session_id: str, rows: Sequence[NewExample], refused: int = 0,
                  users: Sequence[Collection[str]] = ()) -> StoredRows:
        """Store ``rows`` in order and count ``refused`` ones. The rows whose client_example_id the session holds
        already are duplicates, not stored; the last sequence number is that of the last row the session holds
        (stored now, or before, for a duplicate; 0 when none). ``users``, per row when given: whose feedback it was
        made from. FAILED_PRECONDITION (ONLINE_SESSION_ENDED), storing nothing, once the session is stopping or has
        ended, looked at under the session's lock, which the count of a stop's untrained examples takes too
        (``count_after``): a row stored is one that count sees."""
        async with acquired(self._pool) as conn, conn.transaction():
            await _lock(conn, session_id)
            await _check_open(conn, session_id)
            seqs = await _insert(conn, session_id, rows, users)
            last = max(seqs, default=0)
            duplicates = len(rows) - len(seqs)
            if duplicates:
                held = await conn.fetchval(
                    "SELECT max(seq) FROM online_examples WHERE session_id = $1 AND client_example_id <> ''"
                    " AND client_example_id = ANY($2::text[])", session_id, [r.client_example_id for r in rows])
                last = max(last, held or 0)
            if refused:
                await conn.execute("UPDATE online_controls SET refused_examples = refused_examples + $2"
                                   " WHERE session_id = $1", session_id, refused)
        return StoredRows(last_sequence=last, duplicates=duplicates)

    async def feedback_through(self, session_id: str) -> datetime | None:
        """How far (by event time) the feedback on the session's live model has become examples; None before its
        first read."""
        row = await self._statements.fetchrow("SELECT feedback_through FROM online_controls WHERE session_id = $1",
                                              session_id)
        if row is None:
            raise not_found(session_id)
        through: datetime | None = row["feedback_through"]
        return through

    async def add_feedback(self, session_id: str, rows: Sequence[NewExample], users: Sequence[Collection[str]],
                           *, since: datetime | None, through: datetime) -> int | None:
        """Store ``rows``, made from the feedback timed from the session's watermark (``since``) to ``through``,
        and move the watermark to ``through``, in one transaction: a window's examples are stored if and only if
        the watermark passes it, so a worker that dies before it stores the job still finds the window read.
        None, storing nothing, when the watermark is no longer ``since``: the window was read already (by a
        worker that held the session before this one and had not stopped yet). Else how many rows were stored:
        a row made from the feedback of a user erased since the window's end is not (DeleteUserFeedback ran
        between the read and this write: it found none of that user's examples here to delete, and the events the
        row was made from are gone)."""
        async with acquired(self._pool) as conn, conn.transaction():
            # The erasures' lock first, shared (as feedback ingestion takes it), so that no DeleteUserFeedback runs
            # between the check below and the insert; before the session's: an erasure holds it exclusively while it
            # updates the controls' rows this takes.
            await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", ERASURE_LOCK)
            # the session's lock, as every insert of its examples takes it, then its controls' row
            await _lock(conn, session_id)
            row = await conn.fetchrow("SELECT feedback_through FROM online_controls WHERE session_id = $1"
                                      " FOR UPDATE", session_id)
            if row is None:
                raise not_found(session_id)
            if row["feedback_through"] != since:
                return None
            hashes = {u: user_hash(u) for owners in users for u in owners}
            erased = {r["user_hash"] for r in await conn.fetch(
                "SELECT user_hash FROM feedback_erasures WHERE erased_at > $1 AND user_hash = ANY($2::text[])",
                through, sorted(set(hashes.values())))} if hashes else set()
            kept = [i for i, owners in enumerate(users) if not any(hashes[u] in erased for u in owners)]
            await _insert(conn, session_id, [rows[i] for i in kept], [users[i] for i in kept])
            # update_time stays: it says when a client or the serving side last changed the controls
            await conn.execute("UPDATE online_controls SET feedback_through = $2 WHERE session_id = $1",
                               session_id, through)
        return len(kept)

    async def after(self, session_id: str, seq: int, limit: int) -> list[StoredExample]:
        rows = await self._statements.fetch(
            f"SELECT {_COLUMNS} FROM online_examples WHERE session_id = $1 AND seq > $2"
            " ORDER BY seq LIMIT $3", session_id, seq, limit)
        return [_example(r) for r in rows]

    async def present(self, session_id: str, seqs: Sequence[int]) -> frozenset[int]:
        rows = await self._statements.fetch(
            "SELECT seq FROM online_examples WHERE session_id = $1 AND seq = ANY($2::int8[])", session_id, list(seqs))
        return frozenset(r["seq"] for r in rows)

    async def by_sequence(self, session_id: str, seqs: Sequence[int]) -> list[StoredExample]:
        rows = await self._statements.fetch(
            f"SELECT {_COLUMNS} FROM online_examples WHERE session_id = $1 AND seq = ANY($2::int8[])"
            " ORDER BY seq", session_id, list(seqs))
        return [_example(r) for r in rows]

    async def window(self, session_id: str, first: int, last: int) -> OnlineExamples:
        """The examples ``first``..``last``; with their labels when any has one (a KTO session's examples all
        have)."""
        rows = [_example(r) for r in await self._statements.fetch(
            f"SELECT {_COLUMNS} FROM online_examples WHERE session_id = $1 AND seq BETWEEN $2 AND $3"
            " ORDER BY seq", session_id, first, last)]
        labelled = any(r.desirable is not None for r in rows)
        return OnlineExamples([r.example() for r in rows],
                              tuple(r.desirable is not False for r in rows) if labelled else None)

    async def delete_examples(self, session_id: str, keep: Sequence[tuple[int, int]] = ()) -> int:
        """Delete the session's examples but those in the ``keep`` windows (first, last); how many went."""
        firsts, lasts = [first for first, _ in keep], [last for _, last in keep]
        return int(await self._statements.fetchval(
            "WITH gone AS (DELETE FROM online_examples e WHERE session_id = $1 AND NOT EXISTS (SELECT 1 FROM"
            " unnest($2::int8[], $3::int8[]) AS w(first, last) WHERE e.seq BETWEEN w.first AND w.last) RETURNING 1)"
            " SELECT count(*) FROM gone", session_id, firsts, lasts))

    async def count_after(self, session_id: str, seq: int) -> int:
        """Counted under the session's lock, which every insert of its examples holds until it commits: an insert
        under way when the count starts is counted, and one after it looks at the session's state first (``add``)."""
        async with acquired(self._pool) as conn, conn.transaction():
            await _lock(conn, session_id)
            return int(await conn.fetchval(
                "SELECT count(*) FROM online_examples WHERE session_id = $1 AND seq > $2", session_id, seq))

    async def unread(self, after: Mapping[str, int]) -> dict[str, int]:
        rows = await self._statements.fetch(
            "SELECT w.id, count(e.seq) AS n FROM unnest($1::text[], $2::int8[]) AS w(id, after)"
            " LEFT JOIN online_examples e ON e.session_id = w.id AND e.seq > w.after GROUP BY w.id",
            list(after), list(after.values()))
        return {r["id"]: int(r["n"]) for r in rows}

    async def last_sequence(self, session_id: str) -> int:
        return int(await self._statements.fetchval(
            "SELECT coalesce(max(seq), 0) FROM online_examples WHERE session_id = $1", session_id))
