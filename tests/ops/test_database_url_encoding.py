"""database_url is read by two drivers: asyncpg (the stores) and libpq through psycopg (the job queue, procrastinate).
asyncpg percent-decodes leniently; libpq refuses a '%' not followed by two hex digits. A password holding a literal
'%' (valid for PostgreSQL, not valid percent-encoding in a URL) passed the settings and asyncpg, then libpq refused it
once a second for 30 s, quoting the password in WARNING logs, and the start failed with a PoolTimeout. The settings
must refuse such a URL at once (exit 2, naming database_url, the password masked) and accept it percent-encoded."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import psycopg
import pytest

from server.__main__ import main
from server.settings import Settings, SettingsError, load_settings

SECRET = "p%zzHunter2"  # a literal '%': valid as a PostgreSQL password, not percent-encoded in the URL
ENCODED = "p%25zzHunter2"  # the same password, its '%' percent-encoded


@pytest.fixture
def no_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEARNING_ENGINE_CONFIG", raising=False)
    monkeypatch.delenv("LEARNING_ENGINE_SECRETS_DIR", raising=False)


@pytest.fixture
async def role(database_url: str) -> AsyncIterator[str]:
    """A login role whose password is ``SECRET``, dropped again after the test."""
    name = f"pct_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{SECRET}'")
        yield name
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.close()


def _with_user(database_url: str, user: str, password: str) -> str:
    """``database_url`` with its user information replaced by ``user:password`` (taken as written)."""
    scheme, rest = database_url.split("://", 1)
    return f"{scheme}://{user}:{password}@{rest.rpartition('@')[2]}"


def test_a_password_libpq_cannot_read_is_refused_by_the_settings(monkeypatch: pytest.MonkeyPatch, no_files,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql://learning:{SECRET}@db.internal:5432/learning"
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "database_url" in message.lower(), message
    assert "postgresql://learning:***@db.internal:5432/learning" in message, message
    assert SECRET not in message, f"the settings error shows the password: {message!r}"
    assert main([]) == 2  # refused before anything starts
    printed = capsys.readouterr()
    assert "database_url" in printed.err.lower() and SECRET not in printed.out + printed.err, printed


async def test_the_password_percent_encoded_connects_with_both_drivers(database_url: str, role: str) -> None:
    """Both drivers connect and send the password as created (the test server may trust local connections without
    a password: each driver's own record of the password it sent is compared too)."""
    url = Settings(database_url=_with_user(database_url, role, ENCODED)).database_url
    assert url is not None
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT current_user") == role
        assert conn._params.password == SECRET  # asyncpg has no public accessor for it
    finally:
        await conn.close()
    async with await psycopg.AsyncConnection.connect(url) as pconn:
        cursor = await pconn.execute("SELECT current_user")
        assert await cursor.fetchone() == (role,)
        assert pconn.info.password == SECRET
