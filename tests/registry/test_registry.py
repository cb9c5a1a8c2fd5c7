"""The registry against real PostgreSQL and both artifact stores (a directory, SeaweedFS S3)."""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
from pathlib import Path

import pytest

from engine.errors import AlreadyExists, DataLoss, FailedPrecondition, NotFound, Unavailable
from engine.registry import AdapterRegistry, AdapterSource, PublishRequest, ServingRole
from engine.registry.archive import sha256_file
from engine.stores import postgres
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.artifacts_s3 import S3ArtifactStore
from engine.stores.serving_state import PostgresServingState
from tests.fixtures.seaweedfs import SeaweedFS
from tests.registry.conftest import TINY, s3_store


def req(adapter_dir, **fields) -> PublishRequest:
    """What the tests publish: ``adapter_dir`` as a version of the tiny model."""
    return PublishRequest(base_model=TINY, adapter_dir=adapter_dir, **fields)


async def test_versions_follow_parents_shapes_and_requests(registry: AdapterRegistry, make_peft):
    v10 = await registry.publish(req(make_peft(0)))
    v11 = await registry.publish(req(make_peft(1), parent=v10, training_job="trainingJobs/a"))
    v12 = await registry.publish(req(make_peft(2), parent=v11))
    sibling = await registry.publish(req(make_peft(3), parent=v10))
    reshaped = await registry.publish(req(make_peft(4, rank=8), parent=v12))
    retargeted = await registry.publish(req(make_peft(5, targets=("q_proj",)), parent=v10))
    bumped = await registry.publish(req(make_peft(6), parent=v10, major_bump=True))
    fresh = await registry.publish(req(make_peft(7)))
    child_of_v2 = await registry.publish(req(make_peft(8, rank=8), parent=reshaped))
    assert [r.version for r in (v10, v11, v12, sibling, reshaped, retargeted, bumped, fresh, child_of_v2)] == [
        "v1.0", "v1.1", "v1.2", "v1.3", "v2.0", "v3.0", "v4.0", "v5.0", "v2.1",
    ]
    assert v11.parent_version == "v1.0" and v11.training_job == "trainingJobs/a"
    assert v10.lora.rank == 4 and v10.lora.target_modules == ("q_proj", "v_proj") and v10.lora.alpha == 8.0
    assert len(v10.sha256) == 64 and v10.size_bytes > 0 and len(v10.base_model_digest) == 64
    assert [r.version for r in await registry.lineage(TINY, "v1.2")] == ["v1.2", "v1.1", "v1.0"]
    assert [r.version for r in await registry.lineage(TINY, "v2.1")] == ["v2.1", "v2.0", "v1.2", "v1.1", "v1.0"]


async def test_layout_and_manifest(registry: AdapterRegistry, store, make_peft):
    record = await registry.publish(req(make_peft(0), labels=(("team", "a"),)))
    # The archive's key is its publish attempt's own; the manifest's is the version's, and names the archive's.
    assert record.archive_key == f"adapters/tiny-llama/v1.0/{record.attempt}.adapter.tar.gz"
    assert await store.list_keys("adapters/tiny-llama/v1.0/") == [record.archive_key,
                                                                  "adapters/tiny-llama/v1.0/metadata.json"]
    manifest = json.loads(await store.get_bytes("adapters/tiny-llama/v1.0/metadata.json"))
    assert manifest["sha256"] == record.sha256 and manifest["version"] == "v1.0"
    assert manifest["attempt"] == record.attempt
    assert manifest["labels"] == [["team", "a"]]
    assert record.artifact_uri.startswith("s3://" if isinstance(store, S3ArtifactStore) else "file://")
    # Packing is canonical: the same PEFT directory always gives the same digest.
    again = await registry.publish(req(make_peft(0)))
    assert again.sha256 == record.sha256 and again.version == "v2.0"


async def test_concurrent_publishes_from_two_processes_get_distinct_versions(
    make_registry, store, make_peft, database_url
):
    other_pool = await postgres.connect(database_url, max_size=20)  # a second "process": no shared lock
    try:
        first = make_registry(store)
        second = make_registry(store, db_pool=other_pool)
        root = await first.publish(req(make_peft(0)))
        registries = [first, second] * 4
        children = await asyncio.gather(*(
            r.publish(req(make_peft(i + 1), parent=root)) for i, r in enumerate(registries)
        ))
        fresh = await asyncio.gather(*(
            r.publish(req(make_peft(20 + i))) for i, r in enumerate(registries[:4])
        ))
    finally:
        await other_pool.close()
    assert sorted(c.version for c in children) == [f"v1.{i}" for i in range(1, 9)]
    assert sorted(f.version for f in fresh) == ["v2.0", "v3.0", "v4.0", "v5.0"]
    listed, _ = await first.list(base_model=TINY, page_size=100)
    assert len(listed) == 13
    for record in children:  # every version holds its own artifact
        with tempfile.TemporaryDirectory() as tmp:
            got = await first.download(TINY, record.version, Path(tmp) / "a.tar.gz")
            assert got.sha256 == record.sha256


async def test_the_store_refuses_to_overwrite(store, tmp_path: Path):
    await store.ensure_ready()
    await store.put_bytes("adapters/m/v1.0/metadata.json", b"original")
    with pytest.raises(AlreadyExists) as err:
        await store.put_bytes("adapters/m/v1.0/metadata.json", b"replacement")
    assert err.value.reason == "ARTIFACT_EXISTS"
    source = tmp_path / "file"
    source.write_bytes(b"archive")
    await store.put_file("adapters/m/v1.0/adapter.tar.gz", source)
    source.write_bytes(b"other archive")
    with pytest.raises(AlreadyExists):
        await store.put_file("adapters/m/v1.0/adapter.tar.gz", source)
    assert await store.get_bytes("adapters/m/v1.0/metadata.json") == b"original"
    assert await store.get_bytes("adapters/m/v1.0/adapter.tar.gz") == b"archive"


async def test_the_store_lists_the_keys_under_a_prefix(store):
    await store.ensure_ready()
    for key in ("online/live/a/000000002-x.tar", "online/live/a/000000001-x.tar", "online/live/b/000000001-y.tar",
                "online/livestock.tar", "online/checkpoints/a/000000001-x.tar"):
        await store.put_bytes(key, b"archive")
    assert await store.list_keys("online/live/") == [
        "online/live/a/000000001-x.tar", "online/live/a/000000002-x.tar", "online/live/b/000000001-y.tar"]
    assert await store.list_keys("online/live/b") == ["online/live/b/000000001-y.tar"]
    assert await store.list_keys("nothing/here/") == []
    await store.delete(["online/live/b/000000001-y.tar"])
    assert await store.list_keys("online/live/b/") == []


async def test_a_version_already_in_the_store_is_never_overwritten(registry: AdapterRegistry, store, make_peft):
    await store.ensure_ready()
    planted = b'{"planted": true}'
    await store.put_bytes("adapters/tiny-llama/v1.0/metadata.json", planted)
    with pytest.raises(AlreadyExists) as err:
        await registry.publish(req(make_peft(0)))
    assert err.value.reason == "ARTIFACT_EXISTS"
    assert await store.get_bytes("adapters/tiny-llama/v1.0/metadata.json") == planted
    assert await store.list_keys("adapters/tiny-llama/v1.0/") == ["adapters/tiny-llama/v1.0/metadata.json"]
    assert (await registry.list(base_model=TINY, page_size=10))[0] == []
    retried = await registry.publish(req(make_peft(0)))
    assert retried.version == "v2.0"  # v1.0 is retired, never reused


async def _tamper(store, key: str) -> None:
    if isinstance(store, LocalArtifactStore):
        path = store._path(key)  # noqa: SLF001 - the test plays an attacker with disk access
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        data = bytearray(await store.get_bytes(key))
        data[len(data) // 2] ^= 0xFF
        client = store._client  # noqa: SLF001 - overwrite behind the registry's back
        await asyncio.to_thread(client.put_object, store.bucket, key, io.BytesIO(bytes(data)), len(data))


async def test_a_tampered_archive_is_data_loss_and_never_handed_out(registry, store, make_peft, tmp_path: Path):
    record = await registry.publish(req(make_peft(0)))
    ok = tmp_path / "ok.tar.gz"
    await registry.download(TINY, "v1.0", ok)
    assert sha256_file(ok) == record.sha256
    await _tamper(store, record.archive_key)
    dest = tmp_path / "bad.tar.gz"
    with pytest.raises(DataLoss) as err:
        await registry.download(TINY, "v1.0", dest)
    assert err.value.reason == "ARTIFACT_CHECKSUM_MISMATCH"
    assert err.value.metadata["expected_sha256"] == record.sha256
    assert not dest.exists()
    with pytest.raises(DataLoss):
        await registry.fetch(record, tmp_path / "unpacked")
    assert not (tmp_path / "unpacked").exists()


async def test_delete_is_refused_for_protected_versions_and_leaves_a_tombstone(registry, store, make_peft, pool):
    v10 = await registry.publish(req(make_peft(0)))
    v11 = await registry.publish(req(make_peft(1), parent=v10))
    v12 = await registry.publish(req(make_peft(2), parent=v11))
    serving = PostgresServingState(pool)
    await serving.set_version(TINY, ServingRole.ACTIVE, "v1.2")
    await serving.set_version(TINY, ServingRole.KNOWN_GOOD, "v1.0")
    for version, what in (("v1.0", "the known-good rollback target"), ("v1.2", "active")):
        with pytest.raises(FailedPrecondition) as err:
            await registry.delete(TINY, version)
        assert err.value.reason == "ADAPTER_PROTECTED"
        assert f"{TINY} {version} cannot be deleted: it is {what};" in err.value.message  # and what frees it
    await registry.delete(TINY, "v1.1")
    assert not await store.exists(v11.archive_key) and not await store.exists(v11.manifest_key)
    with pytest.raises(NotFound):
        await registry.get(TINY, "v1.1")
    with pytest.raises(NotFound):
        await registry.delete(TINY, "v1.1")
    with pytest.raises(NotFound):
        await serving.set_version(TINY, ServingRole.ACTIVE, "v1.1")
    chain = await registry.lineage(TINY, "v1.2")
    assert [r.version for r in chain] == ["v1.2", "v1.1", "v1.0"]
    assert chain[1].delete_time is not None and chain[0].delete_time is None
    again = await registry.publish(req(make_peft(3), parent=v10))
    assert again.version == "v1.3"  # the deleted number stays retired
    assert v12.version == "v1.2"


async def test_retention_keeps_the_newest_and_the_protected(make_registry, store, make_peft, pool):
    registry = make_registry(store, retention_keep=2)
    root = await registry.publish(req(make_peft(0)))
    await PostgresServingState(pool).set_version(TINY, ServingRole.KNOWN_GOOD, "v1.0")
    parent = root
    for seed in range(1, 5):
        parent = await registry.publish(req(make_peft(seed), parent=parent))
    listed = [r.version for r in (await registry.list(base_model=TINY, page_size=10))[0]]
    assert listed == ["v1.4", "v1.3", "v1.0"]
    deleted, kept = await registry.prune(TINY, keep=1, dry_run=True)
    assert deleted == ["v1.3"] and kept == ["v1.4", "v1.0"]
    assert len((await registry.list(base_model=TINY, page_size=10))[0]) == 3


async def test_list_pages_and_filters(registry, make_peft):
    for seed, team in enumerate(["a", "b", "a", "a"]):
        await registry.publish(req(make_peft(seed), labels=(("team", team),)))
    page1, token = await registry.list(labels={"team": "a"}, page_size=2)
    page2, last = await registry.list(labels={"team": "a"}, page_size=2, page_token=token)
    assert [r.version for r in page1 + page2] == ["v4.0", "v3.0", "v1.0"] and not last
    assert (await registry.list(base_model="other", page_size=5))[0] == []


class _DiesBeforeManifest:
    """Delegates to the real S3 store and SIGKILLs SeaweedFS right before the manifest is written."""

    def __init__(self, inner: S3ArtifactStore, server: SeaweedFS) -> None:
        self._inner, self._server = inner, server

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def put_bytes(self, key: str, data: bytes) -> None:
        self._server.kill()
        await self._inner.put_bytes(key, data)


async def test_s3_dying_mid_publish_registers_nothing_and_a_retry_succeeds(make_registry, make_peft, tmp_path):
    server = SeaweedFS(tmp_path / "weed").start()
    try:
        inner = s3_store(server.endpoint, "le-mid-publish")
        registry = make_registry(_DiesBeforeManifest(inner, server))
        with pytest.raises(Unavailable) as err:
            await registry.publish(req(make_peft(0)))
        assert err.value.reason == "ARTIFACT_STORE_UNAVAILABLE"
        assert (await registry.list(page_size=10))[0] == []
        with pytest.raises(NotFound):
            await registry.get(TINY, "v1.0")
        server.start()
        # The archive went up before the outage and could not be cleaned up; without a manifest
        # it is garbage, not a version, and the retry (holding the number) removes it.
        [orphan] = await inner.list_keys("adapters/tiny-llama/v1.0/")
        assert orphan.endswith(".adapter.tar.gz")
        retry = make_registry(inner)
        record = await retry.publish(req(make_peft(0), source=AdapterSource.TRAINED))
        assert record.version == "v1.0"
        assert await inner.list_keys("adapters/tiny-llama/v1.0/") == [record.archive_key, record.manifest_key]
        got = await retry.download(TINY, "v1.0", tmp_path / "a.tar.gz")
        assert sha256_file(tmp_path / "a.tar.gz") == got.sha256
    finally:
        server.kill()
