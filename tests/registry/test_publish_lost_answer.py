"""A registration whose answer is lost (the connection drops as its transaction commits), against real PostgreSQL
and both artifact stores: the version was registered, so its files stay and the publish returns it; removing them,
as a failed publish does, left a listed version with no archive (DATA_LOSS on every download). A registration that
did not commit is abandoned as before: its files go, its number is handed out again."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.registry.archive import sha256_file
from engine.stores.adapter_index import PostgresAdapterIndex
from tests.registry.conftest import TINY
from tests.registry.test_publish_keys import V10, req


class _LostAnswer(PostgresAdapterIndex):
    """``publish`` raises what a dropped connection raises, after its transaction committed (``committed``) or
    before it ran."""

    def __init__(self, pool, *, committed: bool) -> None:
        super().__init__(pool)
        self.committed = committed

    async def publish(self, record, *, fence=None, pins=()):
        if self.committed:
            await super().publish(record, fence=fence, pins=pins)
        raise ConnectionResetError("the connection was lost")


async def test_a_registration_that_committed_with_its_answer_lost_is_the_version(
    make_registry, store, make_peft, pool, tmp_path: Path  # noqa: F811 - fixtures
) -> None:
    registry = make_registry(store)
    registry._index = _LostAnswer(pool, committed=True)  # noqa: SLF001
    record = await registry.publish(req(make_peft(0)))
    assert record.version == "v1.0"
    got = await registry.download(TINY, "v1.0", tmp_path / "v1.0.tar.gz")
    assert got.attempt == record.attempt and sha256_file(tmp_path / "v1.0.tar.gz") == record.sha256
    assert await store.list_keys(V10) == sorted([record.archive_key, record.manifest_key])


async def test_a_registration_that_did_not_commit_is_abandoned(
    make_registry, store, make_peft, pool  # noqa: F811 - fixtures
) -> None:
    registry = make_registry(store)
    registry._index = _LostAnswer(pool, committed=False)  # noqa: SLF001
    with pytest.raises(ConnectionResetError):
        await registry.publish(req(make_peft(0)))
    assert await store.list_keys(V10) == []
    registry._index = PostgresAdapterIndex(pool)  # noqa: SLF001 - the database answers again
    assert (await registry.publish(req(make_peft(1)))).version == "v1.0"


class _Away(_LostAnswer):
    """As ``_LostAnswer`` (committed), and the database stays away for the question that follows."""

    async def get(self, base_model, number, *, include_deleted=False):
        raise ConnectionRefusedError("the database is away")


async def test_a_registration_no_one_can_say_anything_of_keeps_its_files(
    make_registry, store, make_peft, pool  # noqa: F811 - fixtures
) -> None:
    registry = make_registry(store)
    registry._index = _Away(pool, committed=True)  # noqa: SLF001
    with pytest.raises(ConnectionResetError):
        await registry.publish(req(make_peft(0)))
    registry._index = PostgresAdapterIndex(pool)  # noqa: SLF001 - the database answers again: it was registered
    record = await registry.get(TINY, "v1.0")
    assert await store.list_keys(V10) == sorted([record.archive_key, record.manifest_key])
