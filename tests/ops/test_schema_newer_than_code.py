"""A server older than its database's schema (started after a newer replica migrated it) refuses to start: it
names the migrations it does not know, in the one line a failed start prints."""

from __future__ import annotations

import pytest

from engine.errors import FailedPrecondition
from engine.stores import postgres
from server.startup import describe


async def test_older_server_refuses_a_schema_newer_than_its_migrations(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = await postgres.connect(database_url, max_size=2)
    try:
        await postgres.migrate(pool)  # a newer server migrated the database (every migration of this checkout)
        files = postgres._migration_files()
        # the older server: the same code without the last migration file
        monkeypatch.setattr(postgres, "_migration_files", lambda: files[:-1])
        with pytest.raises(FailedPrecondition) as raised:
            applied = await postgres.migrate(pool)  # what the older server's start runs
            pytest.fail(f"migrate() accepted a schema newer than the code (applied {applied})")
        assert raised.value.reason == "SCHEMA_TOO_NEW"
        line = describe(raised.value)  # what `learning-engine: cannot start: ...` says
        assert "schema is newer than this server" in line and files[-1][1] in line, line
        assert raised.value.metadata == {"versions": str(files[-1][0])}
    finally:
        await pool.close()
