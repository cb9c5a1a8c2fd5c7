"""Feedback events in PostgreSQL (asyncpg): bulk ingestion, stats, erasure, and the rows datasets are built from.

Ingestion of one batch is one transaction, stored whole or not at all, and idempotent on
(tenant_id, client_event_id). The records are first laid out as COPY text-format data
(``encode_rows``, plain CPU work the ingestor does off the event loop, so that the loop only
streams bytes to PostgreSQL); then one of two paths:

- fast (the common case: new events of users never erased): COPY straight into ``feedback_events``;
- staged (when the fast COPY hits a key already stored, i.e. a resend, or the batch may hold erased
  events: a user of the batch was erased, or an event of it was): COPY into a per-connection
  temporary staging table, then ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` leaving out erased
  events. A failed fast attempt rolls back whole, so nothing is stored twice.

Erased events are those of an erased user timed at or before the erasure (``feedback_erasures``), and
those whose identity (tenant_id, client_event_id) an erasure deleted (``feedback_erased_events``,
migration 0028: a digest of each), whatever their time: a resent event may carry a later one (none, so
it is stamped with its arrival; or a client clock running ahead). Ingestion holds a shared
transaction-level advisory lock and erasure an exclusive one, so a user's erasure never interleaves
with a batch that is being stored: once DeleteUserFeedback returns, no event of that user timed before
it, and none of the events it deleted, can be (or become) stored.

Connection-level failures (the server restarting, refusing connections, a dropped socket, a connection lost inside
a transaction) become ``engine.errors.Unavailable`` (``engine.stores.postgres.acquired``, as for drift reports); SQL
errors stay what they are (bugs surface as INTERNAL).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from datetime import datetime
from typing import Final, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from engine.feedback.events import (
    AdapterStats,
    CopyRows,
    FeedbackKind,
    FeedbackRow,
    FeedbackStats,
    Judgement,
    StoreOutcome,
    Turn,
    UserErasure,
)
from engine.jobs.core import JobState
from engine.names import version_of
from engine.stores.postgres import acquired

T = TypeVar("T")

COLUMNS = (
    "tenant_id", "client_event_id", "kind", "rating", "correction", "dwell_seconds", "interaction_id",
    "has_content", "messages", "prompt", "response", "adapter_version", "user_id", "event_time",
    "received_time", "labels", "scrubbed_rules", "base_model",
)
Record = FeedbackRow  # one row in COLUMNS order; built by engine.feedback.ingest
_NULL = "\\N"
_DELIMITERS_PER_ROW = len(COLUMNS) - 1
# The columns whose text comes from the client (ids, free text, JSON): the only ones that may need escaping.
_TEXTS = tuple(COLUMNS.index(c) for c in (
    "tenant_id", "client_event_id", "correction", "interaction_id", "messages", "prompt", "response",
    "adapter_version", "user_id", "labels", "base_model",
))

_EXPLICIT = (FeedbackKind.THUMBS_UP, FeedbackKind.THUMBS_DOWN, FeedbackKind.RATING, FeedbackKind.CORRECTION)
ERASURE_LOCK = 0x4C45_0004  # "LE" + migration 4: shared by ingestion, exclusive for erasure

_STAGE = (
    f"SELECT pg_advisory_xact_lock_shared({ERASURE_LOCK});"
    " CREATE TEMP TABLE IF NOT EXISTS feedback_staging"
    " (LIKE feedback_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)

_USER: Final = 12  # a literal index, so that a row's field there is typed (str)
assert COLUMNS[_USER] == "user_id"


def event_digest(alias: str) -> str:
    """SQL: the digest an erasure keeps of the identity of the event (row) ``alias`` (migration 0028)."""
    return (f"sha256(convert_to(length({alias}.tenant_id) || ':' || {alias}.tenant_id || ':' || "
            f"{alias}.client_event_id, 'UTF8'))")


# SQL: the key events of ``feedback_events e`` are grouped into interactions by: the tenant and the interaction id,
# or, for an event that names none, the tenant and the event id. The tenant's length comes first, so that ids
# holding ':' cannot make two tenants' keys one (tenant "acme:eu" and interaction "42" against tenant "acme" and
# interaction "eu:42"). Datasets (``judgements``) and drift (engine/stores/drift_store.py) use it.
INTERACTION_KEY = (
    "CASE WHEN e.interaction_id <> '' THEN 'i:' || length(e.tenant_id) || ':' || e.tenant_id || ':' || e.interaction_id"
    " ELSE 'e:' || length(e.tenant_id) || ':' || e.tenant_id || ':' || e.client_event_id END"
)

# The fast path's first statement, run once the lock is taken (a statement of its own, so that this one sees the
# erasures committed while it waited): whether any user of the batch was ever erased, and whether any event was.
_CHECK_ERASED = """
SELECT CASE
    WHEN NOT EXISTS (SELECT 1 FROM feedback_erasures) THEN false
    ELSE EXISTS (
        SELECT 1 FROM feedback_erasures
        WHERE user_hash = ANY (SELECT encode(sha256(convert_to(u, 'UTF8')), 'hex') FROM unnest($1::text[]) AS u))
    END AS users, EXISTS (SELECT 1 FROM feedback_erased_events) AS events
"""

# Then, when some event was ever erased: whether one of the batch's (its tenants and event ids) was.
_CHECK_ERASED_EVENTS = f"""
SELECT EXISTS (
    SELECT 1 FROM unnest($1::text[], $2::text[]) AS b (tenant_id, client_event_id)
    JOIN feedback_erased_events x ON x.event_digest = {event_digest("b")})
"""

_MOVE = f"""
WITH erased AS (
    SELECT s.tenant_id, s.client_event_id
    FROM feedback_staging s
    WHERE EXISTS (
        SELECT 1 FROM feedback_erasures e
        WHERE e.user_hash = encode(sha256(convert_to(s.user_id, 'UTF8')), 'hex') AND s.event_time <= e.erased_at)
       OR EXISTS (SELECT 1 FROM feedback_erased_events x WHERE x.event_digest = {event_digest("s")})
), moved AS (
    INSERT INTO feedback_events
    SELECT s.* FROM feedback_staging s
    WHERE NOT EXISTS (
        SELECT 1 FROM erased x WHERE x.tenant_id = s.tenant_id AND x.client_event_id = s.client_event_id)
    ON CONFLICT (tenant_id, client_event_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved) AS stored, (SELECT count(*) FROM erased) AS forgotten
"""

# DeleteUserFeedback's deletion of the user's events: it keeps the digest of each, and counts them.
_DELETE_EVENTS = f"""
WITH gone AS (
    DELETE FROM feedback_events WHERE user_id = $1 RETURNING tenant_id, client_event_id
), kept AS (
    INSERT INTO feedback_erased_events (event_digest) SELECT {event_digest("g")} FROM gone g
    ON CONFLICT (event_digest) DO NOTHING
)
SELECT count(*) FROM gone
"""

# DeleteUserFeedback's word to the sessions that have not ended (a session whose job is not stored yet is being
# created): one more erasure each, whether or not it made the examples deleted. A session holds in memory, besides
# its own examples, its start version's lineage's data to replay (engine.continual), which may be other sessions'
# examples or feedback events: on the word, its worker reads what it holds again (engine.online.session). The
# controls' update_time stays: it says when a client or the serving side last changed them.
_TELL_SESSIONS = """
UPDATE online_controls c SET erasures = c.erasures + 1
WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = c.session_id AND j.state = ANY($1::text[]))
"""



def _escape(value: str) -> str:
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\t" in value:
        value = value.replace("\t", "\\t")
    if "\n" in value:
        value = value.replace("\n", "\\n")
    if "\r" in value:
        value = value.replace("\r", "\\r")
    return value


def _lines(records: Sequence[Record]) -> list[str]:
    """The COPY lines of the records, each checked and, if a text needs it, laid out again escaped."""
    lines: list[str] = []
    add = lines.append
    received: datetime | None = None
    received_text = ""  # set by the first record
    for record in records:
        (tenant, event_id, kind, rating, correction, dwell, interaction_id, has_content, messages, prompt, response,
         adapter_version, user_id, event_time, received_time, labels, rules, base_model) = record
        if received_time is not received:
            received, received_text = received_time, received_time.isoformat()
        fields = (
            tenant, event_id, kind, _NULL if rating is None else str(rating),
            _NULL if correction is None else correction, _NULL if dwell is None else repr(dwell), interaction_id,
            "t" if has_content else "f", _NULL if messages is None else messages, _NULL if prompt is None else prompt,
            _NULL if response is None else response, adapter_version, user_id,
            received_text if event_time is received_time else event_time.isoformat(), received_text, labels,
            "{" + ",".join(rules) + "}" if rules else "{}", base_model,
        )
        line = "\t".join(fields)
        nulls = ((rating is None) + (correction is None) + (dwell is None) + (messages is None) + (prompt is None)
                 + (response is None))
        # As laid out, the line is right unless a text holds a backslash (beyond the NULL markers), a tab, a
        # newline or a carriage return; then it is laid out again with every field but the NULL markers escaped.
        if line.count("\\") != nulls or line.count("\t") != _DELIMITERS_PER_ROW or "\n" in line or "\r" in line:
            escaped = list(fields)
            for i in _TEXTS:
                if record[i] is not None:
                    escaped[i] = _escape(escaped[i])
            line = "\t".join(escaped)
        add(line)
    add("")  # the data ends with a newline
    return lines


_ESCAPED = re.compile(rb"\\(.)")
_UNESCAPED = {b"\\": b"\\", b"t": b"\t", b"n": b"\n", b"r": b"\r"}


def _unescape(field: bytes) -> str:
    if b"\\" in field:
        field = _ESCAPED.sub(lambda m: _UNESCAPED.get(m.group(1), m.group(1)), field)
    return field.decode()


def identities(rows: CopyRows) -> tuple[list[str], list[str]]:
    """The tenants and event ids of the rows, read back from their COPY data (``_lines``: the first two fields)."""
    tenants: list[str] = []
    event_ids: list[str] = []
    for line in rows.data.split(b"\n"):
        if line:
            tenant, event_id, _ = line.split(b"\t", 2)
            tenants.append(_unescape(tenant))
            event_ids.append(_unescape(event_id))
    return tenants, event_ids


def encode_rows(records: Sequence[Record]) -> CopyRows:
    """Lay records out as COPY text-format data: one line per record, tab-separated, NULL as \\N.

    Texts need escaping only when they hold a backslash, tab, newline or carriage return; rather than
    look at every field, each line is laid out as is and counted (a few C-level scans), and laid out
    again with every text escaped only when the counts say a text needs it. Times are timezone-aware
    (validation compares them with an aware clock), so their ISO form carries the offset.
    """
    return CopyRows("\n".join(_lines(records)).encode(), len(records), tuple({r[_USER] for r in records}))


def user_hash(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


class PostgresFeedbackStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _run(self, work: Callable[[PoolConnectionProxy], Awaitable[T]]) -> T:
        async with acquired(self._pool) as conn:
            return await work(conn)

    encode = staticmethod(encode_rows)

    async def insert(self, rows: CopyRows) -> StoreOutcome:
        """Store the rows that are new and not erased, all in one transaction (see the module docstring)."""
        if not rows.count:
            return StoreOutcome(0, 0, 0)
        users = list(rows.users)

        async def copy(conn: PoolConnectionProxy, table: str) -> None:
            source = memoryview(rows.data)  # asyncpg copies from any buffer (documented); its stubs omit buffers
            await conn.copy_to_table(table, source=source, columns=COLUMNS, format="text")  # type: ignore[arg-type]

        async def fast(conn: PoolConnectionProxy) -> StoreOutcome | None:
            async with conn.transaction():
                await conn.execute(f"SELECT pg_advisory_xact_lock_shared({ERASURE_LOCK})")
                erased = await conn.fetchrow(_CHECK_ERASED, users)
                assert erased is not None  # one row
                if erased["users"]:
                    return None
                if erased["events"] and await conn.fetchval(_CHECK_ERASED_EVENTS, *identities(rows)):
                    return None
                await copy(conn, "feedback_events")
            return StoreOutcome(rows.count, 0, 0)

        async def staged(conn: PoolConnectionProxy) -> StoreOutcome:
            async with conn.transaction():
                await conn.execute(_STAGE)
                await copy(conn, "feedback_staging")
                [row] = await conn.fetch(_MOVE)  # one row of counts
            stored, forgotten = int(row["stored"]), int(row["forgotten"])
            return StoreOutcome(stored, rows.count - stored - forgotten, forgotten)

        async def work(conn: PoolConnectionProxy) -> StoreOutcome:
            try:
                outcome = await fast(conn)
            except asyncpg.UniqueViolationError:  # a resend: the transaction rolled back, take the staged path
                outcome = None
            return outcome if outcome is not None else await staged(conn)

        return await self._run(work)

    async def delete_user(self, user_id: str) -> UserErasure:
        """Delete the user's events and the online examples made from them (migration 0021), and record the
        erasure: the user's (a hash of the id, with its time) and each deleted event's (a digest of its tenant
        and id, migration 0028), so that ingestion refuses the events again when resent, whatever their time.
        When anything was deleted, every session that has not ended counts an erasure (``_TELL_SESSIONS``): any
        of them may hold the deleted data in memory, its own examples or its lineage's, and its worker drops it."""

        async def work(conn: PoolConnectionProxy) -> UserErasure:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", ERASURE_LOCK)
                events = await conn.fetchval(_DELETE_EVENTS, user_id)
                examples = await conn.fetchval("WITH gone AS (DELETE FROM online_examples"
                                               " WHERE users @> ARRAY[$1]::text[] RETURNING 1)"
                                               " SELECT count(*) FROM gone", user_id)
                if events or examples:
                    await conn.execute(_TELL_SESSIONS, [s.value for s in JobState if s.terminal])
                await conn.execute(
                    "INSERT INTO feedback_erasures (user_hash, erased_at) VALUES ($1, now())"
                    " ON CONFLICT (user_hash) DO UPDATE SET erased_at = excluded.erased_at",
                    user_hash(user_id),
                )
            return UserErasure(int(events), int(examples))

        return await self._run(work)

    async def stats(
        self, *, start: datetime, end: datetime, adapter_version: str, tenant_id: str,
        rating_positive_min: int, rating_negative_max: int, base_model: str = "",
    ) -> FeedbackStats:
        """Counts of the events in [start, end) matching the filters ("" matches all); ``base_model`` also matches
        the events that recorded none (stored before events had one: they count for every base model). An
        ``adapter_version`` that is a version's serving name is that version of its base model (``_as_stored``)."""
        adapter_version, base_model = _as_stored(adapter_version, base_model)
        sql = (
            "SELECT base_model, adapter_version, kind, count(*) AS n,"
            " count(*) FILTER (WHERE kind = 'RATING' AND rating >= $5) AS high,"
            " count(*) FILTER (WHERE kind = 'RATING' AND rating <= $6) AS low"
            " FROM feedback_events WHERE event_time >= $1 AND event_time < $2"
            " AND ($3 = '' OR adapter_version = $3) AND ($4 = '' OR tenant_id = $4)"
            " AND ($7 = '' OR base_model = $7 OR base_model = '')"
            " GROUP BY base_model, adapter_version, kind"
        )
        args = (start, end, adapter_version, tenant_id, rating_positive_min, rating_negative_max, base_model)
        rows = await self._run(lambda conn: conn.fetch(sql, *args))
        by_kind: dict[FeedbackKind, int] = {}
        votes: dict[tuple[str, str], list[int]] = {}  # (version, base model): a v1.2 of each base model is its own
        for r in rows:
            kind = FeedbackKind(r["kind"])
            by_kind[kind] = by_kind.get(kind, 0) + r["n"]
            pos_neg = votes.setdefault((r["adapter_version"], r["base_model"]), [0, 0])
            pos_neg[0] += r["n"] if kind is FeedbackKind.THUMBS_UP else r["high"]
            pos_neg[1] += r["n"] if kind is FeedbackKind.THUMBS_DOWN else r["low"]
        return FeedbackStats(
            start_time=start,
            end_time=end,
            by_kind=tuple(sorted(by_kind.items())),
            by_adapter=tuple(AdapterStats(v, p, n, base) for (v, base), (p, n) in sorted(votes.items())),
        )

    async def judgements(
        self, *, start: datetime, end: datetime, adapter_version: str, labels: dict[str, str],
        kinds: Collection[FeedbackKind] = _EXPLICIT, base_model: str = "", batch: int = 2000,
    ) -> AsyncIterator[Judgement]:
        """Events of ``kinds`` (default: the explicit ones) in [start, end) matching the filters, with referenced
        interactions resolved. ``base_model`` ("" for all) keeps that base model's events and those that recorded
        none (stored before events had one), as stats does.

        Events whose interaction cannot be resolved (e.g. its carrier was erased) are left out, and so
        are events of erased users (belt and braces: erasure deletes them too). ``adapter_version`` as for ``stats``.
        """
        adapter_version, base_model = _as_stored(adapter_version, base_model)
        sql = f"""
            SELECT {INTERACTION_KEY} AS key,
                   e.kind, e.rating, e.correction, e.event_time, e.dwell_seconds, e.user_id,
                   c.user_id AS carrier_user_id, COALESCE(c.messages, e.messages) AS messages,
                   COALESCE(c.prompt, e.prompt) AS prompt, COALESCE(c.response, e.response) AS response
            FROM feedback_events e
            LEFT JOIN LATERAL (
                SELECT x.messages, x.prompt, x.response, x.user_id FROM feedback_events x
                WHERE x.tenant_id = e.tenant_id AND x.interaction_id = e.interaction_id
                  AND x.has_content AND x.interaction_id <> ''
                ORDER BY x.event_time LIMIT 1
            ) c ON NOT e.has_content
            WHERE e.event_time >= $1 AND e.event_time < $2
              AND e.kind = ANY ($5::text[])
              AND ($3 = '' OR e.adapter_version = $3)
              AND e.labels @> $4::jsonb
              AND ($6 = '' OR e.base_model = $6 OR e.base_model = '')
              AND NOT EXISTS (
                  SELECT 1 FROM feedback_erasures f
                  WHERE f.user_hash = encode(sha256(convert_to(e.user_id, 'UTF8')), 'hex')
                    AND e.event_time <= f.erased_at)
            ORDER BY e.event_time, e.tenant_id, e.client_event_id
        """
        args = (start, end, adapter_version, json.dumps(labels), [FeedbackKind(k).value for k in kinds], base_model)
        async with acquired(self._pool) as conn, conn.transaction(readonly=True):
            async for r in conn.cursor(sql, *args, prefetch=batch):
                if r["response"] is None and r["kind"] != FeedbackKind.CORRECTION:
                    continue
                if r["prompt"] is None and r["messages"] is None:
                    continue
                messages = tuple(Turn(m["role"], m["content"]) for m in json.loads(r["messages"] or "[]"))
                yield Judgement(
                    interaction_key=r["key"], kind=FeedbackKind(r["kind"]), rating=r["rating"] or 0,
                    correction=r["correction"] or "", time=r["event_time"], messages=messages,
                    prompt=r["prompt"] or "", response=r["response"] or "", dwell_seconds=r["dwell_seconds"] or 0.0,
                    users=tuple(u for u in {r["user_id"], r["carrier_user_id"] or ""} if u),
                )


def _as_stored(adapter_version: str, base_model: str) -> tuple[str, str]:
    """Filters on the version events name and their base model, as events are stored (engine.feedback.ingest): a
    serving name ``<base>@v1.2`` is the version ``v1.2`` of ``<base>``, unless ``base_model`` names another base
    model (then it stays as it is, and matches nothing, as a version of another base model should not)."""
    base = adapter_version.rpartition("@")[0]
    version = version_of(base, adapter_version) if base else ""
    if not version or base_model not in ("", base):
        return adapter_version, base_model
    return version, base
