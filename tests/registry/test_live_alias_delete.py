"""A live alias and a delete of the version it moves to, against real PostgreSQL: the alias never ends up on a
deleted version. A delete locks the version's row before it reads what is protected; an alias moves only to a
version still published, holding its row, so the two cannot interleave (the race a check before the move left)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.errors import FailedPrecondition, NotFound
from engine.registry import PublishRequest
from engine.registry.records import parse_version
from engine.stores.adapter_index import PostgresAdapterIndex
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.online_store import PostgresOnlineStore
from tests.registry.conftest import TINY


@pytest.fixture
async def published(make_registry, make_peft, pool, tmp_path: Path):
    """A registry whose deletes see the live aliases, with v1.0 and its child v1.1, and a session that follows
    the live alias ``live`` from v1.0."""
    aliases = PostgresOnlineStore(pool)
    registry = make_registry(LocalArtifactStore(tmp_path / "artifacts"), aliases=aliases)
    start = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(0)))
    child = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(1), parent=start))
    await aliases.create("s1", 1e-3, base_model=TINY, start_version=start.version, live_alias="live")
    return registry, aliases, start.version, child.version


async def test_an_alias_waits_for_a_delete_under_way_and_stays_where_it_was(published, pool):
    registry, aliases, start, child = published
    async with PostgresAdapterIndex(pool).deleting(TINY, parse_version(child)):
        moving = asyncio.create_task(aliases.move_alias("s1", child))
        await asyncio.sleep(0.5)
        assert not moving.done()  # it waits for the delete's lock on the row
    controls = await moving
    assert controls is not None and controls.alias_version == ""  # not moved: still the start version
    assert await aliases.routed_versions(TINY) == {start}


async def test_a_moved_alias_protects_its_version_and_a_deleted_one_is_not_moved_to(published):
    registry, aliases, start, child = published
    moved = await aliases.move_alias("s1", child)
    assert moved is not None and moved.alias_version == child
    with pytest.raises(FailedPrecondition) as refused:
        await registry.delete(TINY, child)
    assert refused.value.reason == "ADAPTER_PROTECTED"

    back = await aliases.set("s1", alias_version=start)
    assert back.alias_version == start
    await registry.delete(TINY, child)
    again = await aliases.move_alias("s1", child)
    assert again is not None and again.alias_version == start
    kept = await aliases.set("s1", alias_version=child, enabled=False)  # the other changes still apply
    assert (kept.alias_version, kept.enabled) == (start, False)


async def test_a_session_cannot_start_from_a_deleted_version(published):
    registry, aliases, start, child = published
    await registry.delete(TINY, child)
    with pytest.raises(NotFound) as missing:
        await aliases.create("s2", 1e-3, base_model=TINY, start_version=child, live_alias="other")
    assert missing.value.reason == "ADAPTER_NOT_FOUND"
    assert await aliases.controls_of(["s2"]) == {}
