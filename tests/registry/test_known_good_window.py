"""An activation that makes the outgoing active version the known-good one must never leave it unprotected, and a
save that fails must change nothing (PostgresLoraStore.save: the roles and the target row in one transaction)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from engine.errors import FailedPrecondition, NotFound
from engine.lora.state import TargetState
from engine.registry import PublishRequest
from engine.registry.ports import ServingRole
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.lora_store import PostgresLoraStore
from engine.stores.serving_state import PostgresServingState
from tests.registry.conftest import TINY


class _Pool:
    """The pool the LoRA store and its serving state write through: ``next_to_active`` runs once, before the first
    statement (on whichever connection, in whichever transaction) that follows the write of the ACTIVE
    ``serving_state`` row: between that write and the next."""

    def __init__(self, pool, next_to_active: Callable[[], Awaitable[None]]) -> None:
        self._pool = pool
        self._next_to_active = next_to_active
        self._active_written = False

    def acquire(self) -> _Acquired:
        return _Acquired(self._pool.acquire(), self)

    async def run(self, method, query: str, *args):
        if self._active_written:
            self._active_written = False
            await self._next_to_active()
        result = await method(query, *args)
        if "INSERT INTO serving_state" in query and ServingRole.ACTIVE.value in args:
            self._active_written = True
        return result


class _Acquired:
    def __init__(self, acquiring, pool: _Pool) -> None:
        self._acquiring = acquiring
        self._pool = pool

    async def __aenter__(self) -> _Conn:
        return _Conn(await self._acquiring.__aenter__(), self._pool)

    async def __aexit__(self, *exc) -> None:
        await self._acquiring.__aexit__(*exc)


class _Conn:
    def __init__(self, conn, pool: _Pool) -> None:
        self._conn = conn
        self._pool = pool

    def __getattr__(self, name: str):
        return getattr(self._conn, name)

    async def execute(self, query: str, *args):
        return await self._pool.run(self._conn.execute, query, *args)

    async def fetchval(self, query: str, *args):
        return await self._pool.run(self._conn.fetchval, query, *args)

    async def fetch(self, query: str, *args):
        return await self._pool.run(self._conn.fetch, query, *args)

    async def fetchrow(self, query: str, *args):
        return await self._pool.run(self._conn.fetchrow, query, *args)


async def _blocked_or_done(pool, task: asyncio.Task, seconds: float = 10.0) -> None:
    """Wait until ``task`` has ended, or another session of this database waits for a lock (the delete, behind the
    save's transaction)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while not task.done() and loop.time() < until:
        async with pool.acquire() as conn:
            waiting = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                          " AND wait_event_type = 'Lock'")
        if waiting:
            return
        await asyncio.sleep(0.02)


async def test_the_version_becoming_known_good_stays_protected_while_the_state_is_saved(
        make_registry, make_peft, pool, tmp_path):
    registry = make_registry(LocalArtifactStore(tmp_path / "artifacts"))
    v1 = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(0)))
    v2 = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(1)))
    deleting: list[asyncio.Task] = []
    armed = False

    async def delete_v1() -> None:
        """Another caller's DeleteAdapter (or retention) of v1, after the ACTIVE row was written and before the next
        write: it either ends, or waits for a lock (the save's transaction), before the save goes on."""
        nonlocal armed
        if armed:
            armed = False
            deleting.append(asyncio.create_task(registry.delete(TINY, v1.version)))
            await _blocked_or_done(pool, deleting[0])

    hooked = _Pool(pool, delete_v1)
    store = PostgresLoraStore(hooked, PostgresServingState(hooked))
    await store.save(TargetState(target="t", base_model=TINY, active_version=v1.version))  # v1 active
    armed = True
    # activating v2 (no known-good yet): v1, the old active version, becomes the known-good rollback target
    try:
        await store.save(TargetState(target="t", base_model=TINY, active_version=v2.version,
                                     previous_version=v1.version, known_good_version=v1.version))
        saved: object = "saved"
    except Exception as exc:  # noqa: BLE001
        saved = exc
    assert deleting, "the save wrote nothing after the ACTIVE serving_state row: the test's hook never ran"
    try:
        outcome: object = await asyncio.wait_for(deleting[0], 30)
    except Exception as exc:  # noqa: BLE001
        outcome = exc
    ended = f"it deleted {outcome.version}" if hasattr(outcome, "version") else f"it ended {outcome!r}"
    assert isinstance(outcome, FailedPrecondition) and outcome.reason == "ADAPTER_PROTECTED", (
        f"the delete of {v1.version} (active until now, known-good from now on) was not refused: {ended}; "
        f"the activation's save then ended {saved!r}, "
        f"target row active={(await store.load('t', TINY)).active_version}, "
        f"serving_state={await PostgresServingState(pool).versions(TINY)}")
    assert saved == "saved"
    assert await PostgresServingState(pool).versions(TINY) == {ServingRole.ACTIVE: v2.version,
                                                              ServingRole.KNOWN_GOOD: v1.version}


async def test_a_save_naming_a_deleted_version_changes_nothing(make_registry, make_peft, pool, tmp_path):
    registry = make_registry(LocalArtifactStore(tmp_path / "artifacts"))
    v1 = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(0)))
    v2 = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(1)))
    v3 = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(2)))
    serving = PostgresServingState(pool)
    store = PostgresLoraStore(pool, serving)
    before = TargetState(target="t", base_model=TINY, active_version=v1.version)
    await store.save(before)
    await registry.delete(TINY, v3.version)
    with pytest.raises(NotFound):  # v2 active, v3 (deleted) known-good: refused as a whole
        await store.save(TargetState(target="t", base_model=TINY, active_version=v2.version,
                                     previous_version=v1.version, known_good_version=v3.version))
    assert (await store.load("t", TINY), await serving.versions(TINY)) == (before, {ServingRole.ACTIVE: v1.version}), (
        "a save refused for its deleted known-good version still changed the stored state (split between the "
        "target row and serving_state)")
