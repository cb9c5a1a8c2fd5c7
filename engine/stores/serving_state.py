"""Active and known-good adapter versions per base model, in PostgreSQL (table ``serving_state``).

LoraControl writes it with :meth:`PostgresServingState.set_version`; the registry
reads it through the ``ServingState`` port to refuse deleting those versions, and those
the live aliases of online sessions serve (``aliases``: engine.stores.online_store).
"""

from __future__ import annotations

import asyncpg

from engine.lora.state import RoutedElsewhere
from engine.registry.ports import ServingRole
from engine.registry.records import VersionNumber, parse_version, version_not_found
from engine.stores.adapter_index import published_and_held


class PostgresServingState:
    """ServingState (see engine.registry.ports) plus the writer LoraControl uses."""

    def __init__(self, pool: asyncpg.Pool, aliases: RoutedElsewhere | None = None) -> None:
        self._pool = pool
        self._aliases = aliases  # what online sessions' live aliases serve: protected too

    async def protected_versions(self, base_model: str) -> set[str]:
        aliased = await self._aliases.routed_versions(base_model) if self._aliases is not None else set()
        return set((await self.versions(base_model)).values()) | aliased

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
