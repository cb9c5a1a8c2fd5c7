"""A migration that alters a table in use (a rolling upgrade: the old replicas still run on the database) gives way to
their transactions instead of stopping every query of the table behind it; it is applied once they end, and a
start that never gets the lock fails with what it waited for, having applied nothing of it."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from engine.errors import Unavailable
from engine.stores import postgres
from server.startup import describe

PROBE = (9999, "9999_probe_column", "ALTER TABLE jobs ADD COLUMN probe_column integer")


@pytest.fixture
async def migrated(database_url: str, monkeypatch: pytest.MonkeyPatch):
    pool = await postgres.connect(database_url, max_size=3)
    await postgres.migrate(pool)
    files = postgres._migration_files()
    monkeypatch.setattr(postgres, "_migration_files", lambda: [*files, PROBE])  # a newer version's migration
    monkeypatch.setattr(postgres, "MIGRATION_LOCK_TIMEOUT", 0.3, raising=False)
    monkeypatch.setattr(postgres, "MIGRATION_ATTEMPTS", 4, raising=False)
    try:
        yield pool
    finally:
        pool.terminate()


async def _holding_the_table(url: str) -> asyncpg.Connection:
    """Another session inside a transaction that has read the table (a running replica's long transaction)."""
    holder = await asyncpg.connect(url)
    await holder.execute("BEGIN")
    await holder.fetch("SELECT id FROM jobs LIMIT 1")
    return holder


async def _applied(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM schema_migrations WHERE version = $1", PROBE[0]))


async def test_a_waiting_migration_lets_the_tables_queries_through_and_applies_once_they_end(
        migrated: asyncpg.Pool, database_url: str) -> None:
    holder = await _holding_the_table(database_url)
    migration = asyncio.create_task(postgres.migrate(migrated))
    try:
        await asyncio.sleep(0.1)  # the migration waits for the holder
        reader = await asyncpg.connect(database_url)
        try:
            began = time.monotonic()
            # a replica's query of the table, coming after the migration: it waited behind it for as long as the
            # holder held on (for ever here)
            await asyncio.wait_for(reader.fetch("SELECT id FROM jobs LIMIT 1"), 10)
            assert time.monotonic() - began < 5
        finally:
            await reader.close()
        await asyncio.sleep(0.4)
        assert not migration.done()  # still trying
        await holder.execute("COMMIT")
        assert await asyncio.wait_for(migration, 30) == [PROBE[1]]
        assert await _applied(migrated)
    finally:
        migration.cancel()
        await holder.close()


@pytest.mark.slow
async def test_a_migration_that_never_gets_its_lock_fails_the_start_having_applied_nothing_of_it(
        migrated: asyncpg.Pool, database_url: str) -> None:
    holder = await _holding_the_table(database_url)
    try:
        with pytest.raises(Unavailable) as raised:
            await asyncio.wait_for(postgres.migrate(migrated), 60)
        assert raised.value.reason == "MIGRATION_LOCK_TIMEOUT"
        assert raised.value.metadata == {"migration": PROBE[1]}
        assert PROBE[1] in describe(raised.value)
    finally:
        await holder.close()
    assert not await _applied(migrated)
    columns = await migrated.fetchval(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'jobs'"
        " AND column_name = 'probe_column'")
    assert columns == 0
    assert await postgres.migrate(migrated) == [PROBE[1]]  # the next start applies it
