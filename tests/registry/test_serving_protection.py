"""What LoraControl serves beyond the active and known-good versions is protected from deletes and retention too: a
running traffic split's candidate (a canary's) and an activation's pending version. The protection comes from the
registry's ServingState (engine.stores.serving_state), as the active and known-good versions' does."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.errors import FailedPrecondition, NotFound
from engine.lora.canary import CanaryDecision, SplitKind, TrafficFigures, TrafficSplitState, VersionFigures
from engine.lora.state import TargetState
from engine.registry import PublishRequest
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.lora_store import PostgresLoraStore
from engine.stores.serving_state import PostgresServingState
from tests.registry.conftest import TINY


@pytest.fixture
async def two_versions(make_registry, make_peft, pool, tmp_path: Path):
    """A registry (retention off for now) with v1 and v2, and a target serving v1."""
    registry = make_registry(LocalArtifactStore(tmp_path / "artifacts"))
    v1 = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(0)))
    v2 = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(1)))
    store = PostgresLoraStore(pool, PostgresServingState(pool))
    await store.save(TargetState(target="t", base_model=TINY, active_version=v1.version))
    return registry, store, v1.version, v2.version


def _split(active: str, candidate: str) -> TrafficSplitState:
    return TrafficSplitState(id=0, kind=SplitKind.CANARY, active_version=active, candidate_version=candidate,
                             share=0.1, start_time=datetime.now(UTC), actor="test", reason="canary")


async def _refused(registry, version: str) -> str:
    """Why deleting ``version`` failed, or what went wrong instead."""
    try:
        deleted = await registry.delete(TINY, version)
    except FailedPrecondition as exc:
        return exc.reason
    return f"deleted {deleted.version}"


async def test_retention_keeps_a_running_canarys_candidate(two_versions, make_peft):
    registry, store, v1, v2 = two_versions
    split = await store.start_split("t", _split(v1, v2))
    registry.retention_keep = 1
    v3 = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(2)))  # prunes after it
    listed = {r.version for r in (await registry.list(base_model=TINY, page_size=10))[0]}
    assert v2 in listed, (f"retention after publishing {v3.version} deleted {v2}, the candidate of the canary in force "
                          f"(still serving its share of traffic); left {sorted(listed)}")
    assert await _refused(registry, v2) == "ADAPTER_PROTECTED", f"a delete of the canary candidate {v2} was allowed"

    figures = TrafficFigures(VersionFigures(v1), VersionFigures(v2))
    await store.end_split(split.id, figures, CanaryDecision.ROLLED_BACK, "done")
    await registry.delete(TINY, v2)  # an ended canary's candidate is no longer protected
    with pytest.raises(NotFound):
        await registry.get(TINY, v2)


async def test_an_activations_pending_version_is_protected_until_it_ends(two_versions):
    registry, store, v1, v2 = two_versions
    await store.save(TargetState(target="t", base_model=TINY, active_version=v1, pending_version=v2))
    assert await _refused(registry, v2) == "ADAPTER_PROTECTED", (
        f"a delete of {v2}, which an activation in progress is loading (pending), was allowed")

    await store.save(TargetState(target="t", base_model=TINY, active_version=v1))  # the activation gave up
    await registry.delete(TINY, v2)
    with pytest.raises(NotFound):
        await registry.get(TINY, v2)


async def test_a_split_to_a_deleted_version_is_refused_and_stores_nothing(two_versions):
    registry, store, v1, v2 = two_versions
    await registry.delete(TINY, v2)
    with pytest.raises(NotFound) as missing:
        await store.start_split("t", _split(v1, v2))
    assert missing.value.reason == "ADAPTER_NOT_FOUND"
    assert await store.running_split("t") is None
