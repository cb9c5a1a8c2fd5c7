"""Active and known-good adapter versions per base model, in PostgreSQL (table ``serving_state``).

LoraControl writes it (engine.stores.lora_store's ``save``, through :meth:`PostgresServingState.hold` and
:meth:`PostgresServingState.write_roles` in its own transaction, or :meth:`PostgresServingState.set_version`); the
registry reads it through the ``ServingState`` port to refuse deleting or pruning those versions, those LoraControl
serves besides (an activation's pending version and a traffic split's candidate, from ``lora_targets`` and
``lora_traffic_splits``), and those online sessions rely on (``sessions``: engine.stores.online_store's
``protected_versions``, the versions their live aliases serve and a running session's start version and latest
publication). Connections come through engine.stores.postgres.acquired: PostgreSQL out of reach is UNAVAILABLE
DATABASE_UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from engine.registry.ports import ROLE_PROTECTION, ServingRole
from engine.registry.records import VersionNumber, parse_version, version_not_found
from engine.stores.adapter_index import published_and_held
from engine.stores.postgres import acquired

# What LoraControl serves besides the roles: an activation under way (its pending version, loaded and being checked)
# and a traffic split in force (its candidate takes a share of the traffic; a canary's may become active).
_SERVED_BESIDES = (
    "SELECT pending_version AS version, 'being activated; wait for the activation to end first' AS what"
    " FROM lora_targets WHERE base_model = $1 AND pending_version <> ''"
    " UNION SELECT s.candidate_version, 'the candidate of a traffic split in force (a canary); end the split first'"
    " FROM lora_traffic_splits s JOIN lora_targets t ON t.target = s.target"
    " WHERE t.base_model = $1 AND s.end_time IS NULL"
)


class SessionVersions(Protocol):
    """The versions online sessions rely on (engine.stores.online_store.PostgresOnlineStore)."""

    async def protected_versions(self, base_model: str) -> dict[str, str]: ...


class PostgresServingState:
    """ServingState (see engine.registry.ports) plus the writers LoraControl uses."""

    def __init__(self, pool: asyncpg.Pool, sessions: SessionVersions | None = None) -> None:
        self._pool = pool
        self._sessions = sessions  # what online sessions rely on: protected too

    async def protected_versions(self, base_model: str) -> dict[str, str]:
        """(engine.registry.ports.ServingState) A version with several of these is said by its role first, then by
        what LoraControl serves it as, then by the session relying on it."""
        protected = dict(await self._sessions.protected_versions(base_model)) if self._sessions is not None else {}
        async with acquired(self._pool) as conn:
            protected |= {r["version"]: r["what"] for r in await conn.fetch(_SERVED_BESIDES, base_model)}
        roles = await self.versions(base_model)
        return protected | {version: ROLE_PROTECTION[role] for role, version in roles.items()}

    async def versions(self, base_model: str) -> dict[ServingRole, str]:
        async with acquired(self._pool) as conn:
            rows = await conn.fetch(
                "SELECT role, major, minor, patch FROM serving_state WHERE base_model = $1", base_model
            )
        return {ServingRole(r["role"]): str(VersionNumber(r["major"], r["minor"], r["patch"])) for r in rows}

    async def set_version(self, base_model: str, role: ServingRole, version: str) -> None:
        """Point ``role`` at a published version (NOT_FOUND otherwise), in a transaction of its own."""
        async with acquired(self._pool) as conn, conn.transaction():
            await self.hold(conn, base_model, [version])
            await self.write_roles(conn, base_model, {role: version})

    @staticmethod
    async def hold(conn: PoolConnectionProxy, base_model: str, versions: Iterable[str]) -> None:
        """Hold the rows of ``versions`` (KEY SHARE, ``published_and_held``) until ``conn``'s transaction ends;
        NOT_FOUND unless each is published (the caller's transaction then rolls back, changing nothing).
        A delete locks the row before it reads what is protected, so a transaction that holds a version's row
        before it makes the version protected either commits first, and the delete sees it, or waits for the
        delete and finds a tombstone."""
        for version in sorted({v for v in versions if v}, key=parse_version):
            if not await conn.fetchval(f"SELECT {published_and_held('$1', 2)}", base_model, *parse_version(version)):
                raise version_not_found(base_model, version)

    @staticmethod
    async def write_roles(conn: PoolConnectionProxy, base_model: str, roles: Mapping[ServingRole, str]) -> None:
        """Point each role at its version ("": the role is cleared) on ``conn``: inside the caller's transaction,
        after it has ``hold``-ed every version named."""
        for role, version in roles.items():
            if version:
                await conn.execute(
                    "INSERT INTO serving_state (base_model, role, major, minor, patch) VALUES ($1, $2, $3, $4, $5)"
                    " ON CONFLICT (base_model, role) DO UPDATE SET major = EXCLUDED.major, minor = EXCLUDED.minor,"
                    " patch = EXCLUDED.patch, update_time = now()",
                    base_model, role.value, *parse_version(version),
                )
            else:
                await conn.execute(
                    "DELETE FROM serving_state WHERE base_model = $1 AND role = $2", base_model, role.value
                )
