"""The feedback store and the drift source answer PostgreSQL out of reach UNAVAILABLE DATABASE_UNAVAILABLE, whatever
the driver's error for it, through one shared mechanism (engine.stores.postgres.acquired, over CONNECTION_ERRORS).

With the real driver a connection lost inside a transaction (an ingestion's, an erasure's, the read-only one of a
dataset's rows) does not end as the ConnectionDoesNotExistError of the statement that was running: the transaction's
exit, on the dead connection, raises the driver's InterfaceError ("the underlying connection is closed"), and so does
any call on a connection the server ended just as the pool handed it over (the pool takes a dead connection back at
once). The feedback store's own clause for it asked ``conn.is_closed()``, which raises InterfaceError itself on a
connection the pool took back, and its dataset rows and the drift source had none: all of them answered INTERNAL.
A statement's own error and an InterfaceError on a live connection (a misuse) stay what they are."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from engine.errors import Unavailable
from engine.feedback.events import UserErasure
from engine.stores import postgres
from engine.stores.drift_store import PostgresDriftSource
from engine.stores.feedback_store import PostgresFeedbackStore, encode_rows
from tests.fixtures.unreachable_postgres import RefusingPool, Restarting, until

NOW = datetime.now(UTC)
START, END = NOW - timedelta(days=1), NOW + timedelta(days=1)

Call = Callable[[PostgresFeedbackStore, PostgresDriftSource], Awaitable[object]]
Database = tuple[asyncpg.Pool, asyncpg.Connection, asyncpg.Connection]


async def _judgements(feedback: PostgresFeedbackStore) -> list[object]:
    return [j async for j in feedback.judgements(adapter_version="", labels={}, start=START, end=END)]


def _rows() -> Any:
    return encode_rows([("t1", "e1", "THUMBS_UP", None, None, None, "", True, None, "What?", "That.", "", "u1", NOW,
                         NOW, "{}", [], "base-a")])


# Every method of the two stores that reads or writes; the first three run in a transaction.
CALLS: dict[str, Call] = {
    "feedback.insert": lambda f, d: f.insert(_rows()),
    "feedback.delete_user": lambda f, d: f.delete_user("u1"),
    "feedback.judgements": lambda f, d: _judgements(f),
    "feedback.stats": lambda f, d: f.stats(adapter_version="", tenant_id="", rating_positive_min=4,
                                           rating_negative_max=2, start=START, end=END),
    "drift.incoming": lambda f, d: d.incoming("base-a", limit=10, start=START, end=END),
    "drift.feedback_buckets": lambda f, d: d.feedback_buckets("base-a", buckets=4, rating_positive_min=4,
                                                              rating_negative_max=2, start=START, end=END),
    "drift.evaluations": lambda f, d: d.evaluations("base-a", limit=10, start=START, end=END),
}
IN_A_TRANSACTION = ("feedback.insert", "feedback.delete_user", "feedback.judgements")


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A migrated database: a pool for the stores, a connection that locks their tables, one that watches."""
    pool = await postgres.connect(database_url, min_size=1, max_size=2)
    await postgres.migrate(pool)
    locker = await asyncpg.connect(database_url)
    watcher = await asyncpg.connect(database_url)
    try:
        yield pool, locker, watcher
    finally:
        await locker.close()
        await watcher.close()
        pool.terminate()


@pytest.mark.parametrize("name", list(CALLS))
async def test_a_connection_lost_in_the_middle_of_a_statement_is_unavailable(database: Database, name: str) -> None:
    """The server ends the session (a restart, an administrator) while the store's statement waits for a lock."""
    pool, locker, watcher = database
    locker_tx = locker.transaction()
    await locker_tx.start()
    await locker.execute("LOCK TABLE feedback_events, feedback_erasures, lora_evals IN ACCESS EXCLUSIVE MODE")
    call = asyncio.ensure_future(CALLS[name](PostgresFeedbackStore(pool), PostgresDriftSource(pool)))
    try:
        waiting: list[int] = []

        async def a_statement_waits() -> bool:
            waiting[:] = [r["pid"] for r in await watcher.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")]
            return bool(waiting) or call.done()

        await until(a_statement_waits, "waited for the lock")
        assert waiting, f"{name} ended without waiting: {call.exception() if call.done() else ''}"
        await watcher.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", waiting)
        with pytest.raises(Unavailable) as lost:
            await asyncio.wait_for(call, 30)
        assert lost.value.reason == "DATABASE_UNAVAILABLE", lost.value
    finally:
        call.cancel()
        await locker_tx.rollback()
    # the pool serves again
    assert await PostgresDriftSource(pool).evaluations("base-a", limit=1, start=START, end=END) == []


@pytest.mark.parametrize("name", list(CALLS))
async def test_a_connection_the_server_ended_before_its_first_statement_is_unavailable(database: Database,
                                                                                      name: str) -> None:
    pool, _, watcher = database
    gone = Restarting(pool, watcher)  # (tests/fixtures/unreachable_postgres.py)
    with pytest.raises(Unavailable) as lost:
        await asyncio.wait_for(CALLS[name](PostgresFeedbackStore(gone), PostgresDriftSource(gone)), 30)  # type: ignore[arg-type]
    assert lost.value.reason == "DATABASE_UNAVAILABLE", lost.value


@pytest.mark.parametrize("name", list(CALLS))
async def test_a_refused_connection_is_unavailable(name: str) -> None:
    """As the online store's (tests/engine/test_online_transient_errors.py) and advisory_lock's."""
    gone = RefusingPool()
    with pytest.raises(Unavailable) as lost:
        await CALLS[name](PostgresFeedbackStore(gone), PostgresDriftSource(gone))  # type: ignore[arg-type]
    assert lost.value.reason == "DATABASE_UNAVAILABLE" and "ConnectionRefusedError" in lost.value.message


async def test_a_statements_own_error_and_a_misuse_of_a_live_connection_stay_what_they_are(database: Database) -> None:
    pool, _, _ = database
    with pytest.raises(asyncpg.UndefinedTableError):
        async with postgres.acquired(pool) as conn:
            await conn.fetch("SELECT * FROM no_such_table")
    with pytest.raises(asyncpg.InterfaceError):
        async with postgres.acquired(pool) as conn, conn.transaction():
            async with conn.transaction(isolation="serializable"):  # a nested one of another isolation: a misuse
                pass
    assert await PostgresFeedbackStore(pool).delete_user("u1") == UserErasure(0, 0)  # the pool serves on

