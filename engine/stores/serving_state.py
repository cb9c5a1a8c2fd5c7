"""Active and known-good adapter versions per base model, in PostgreSQL (table ``serving_state``).

LoraControl writes it with :meth:`PostgresServingState.set_version`; the registry
reads it through the ``ServingState`` port to refuse deleting or pruning those versions, and those
online sessions rely on (``sessions``: engine.stores.online_store's ``protected_versions``, the versions their
live aliases serve and a running session's start version and latest publication).
"""

from __future__ import annotations

from typing import Protocol

import asyncpg

from engine.registry.ports import ServingRole
from engine.registry.records import VersionNumber, parse_version, version_not_found
from engine.stores.adapter_index import published_and_held


class SessionVersions(Protocol):
    """The versions online sessions rely on (engine.stores.online_store.PostgresOnlineStore)."""

    async def protected_versions(self, base_model: str) -> set[str]: ...


class PostgresServingState:
    """ServingState (see engine.registry.ports) plus the writer LoraControl uses."""

    def __init__(self, pool: asyncpg.Pool, sessions: SessionVersions | None = None) -> None:
        self._pool = pool
        self._sessions = sessions  # what online sessions rely on: protected too

    async def protected_versions(self, base_model: str) -> set[str]:
        relied_on = await self._sessions.protected_versions(base_model) if self._sessions is not None else set()
        return set((await self.versions(base_model)).values()) | relied_on

    async def versions(self, base_model: str) -> dict[ServingRole, str]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT role, major, minor, patch FROM serving_state WHERE base_model = $1", base_model
            )
        return {ServingRole(r["role"]): str(VersionNumber(r["major"], r["minor"], r["patch"])) for r in rows}

    async def set_version(self, base_model: str, role: ServingRole, version: str) -> None:
        """Point ``role`` at a published version. Holds the adapter row (``published_and_held``) so this cannot
        interleave with a delete of that version."""
        number = parse_version(version)
        async with self._pool.acquire() as conn, conn.transaction():
            published = await conn.fetchval(f"SELECT {published_and_held('$1', 2)}", base_model, *number)
            if not published:
                raise version_not_found(base_model, version)
            await conn.execute(
                "INSERT INTO serving_state (base_model, role, major, minor, patch) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (base_model, role) DO UPDATE"
                " SET major = EXCLUDED.major, minor = EXCLUDED.minor, patch = EXCLUDED.patch, update_time = now()",
                base_model, role.value, *number,
            )

    async def clear(self, base_model: str, role: ServingRole) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "DELETE FROM serving_state WHERE base_model = $1 AND role = $2", base_model, role.value
            )
