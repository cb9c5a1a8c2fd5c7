"""The keys a publish writes, against real PostgreSQL and both artifact stores: every object but the manifest has a key
of its publish attempt's own, so an attempt that lost its number to another and then fails cleans up only what it
wrote, never the other's version; what dead or failed attempts left is removed at recovery or by the number's next
holder; versions stored before attempts keep their keys."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.domain import LoraSpec
from engine.errors import Aborted, AlreadyExists, Unavailable
from engine.registry import AdapterRegistry, PublishRequest
from engine.registry.archive import sha256_file
from engine.registry.records import AdapterRecord, VersionNumber
from engine.stores import postgres
from engine.stores.adapter_index import PostgresAdapterIndex
from tests.registry.conftest import TINY
from tests.registry.test_publish_races import _GatedManifest

V10 = f"adapters/{TINY}/v1.0/"


def req(adapter_dir, **fields) -> PublishRequest:
    """What the tests publish: ``adapter_dir`` as a version of the tiny model."""
    return PublishRequest(base_model=TINY, adapter_dir=adapter_dir, **fields)


class _GatedRegistration(PostgresAdapterIndex):
    """Registers a version only once ``go`` is set (``registering`` is set when a publish gets there)."""

    def __init__(self, pool) -> None:
        super().__init__(pool)
        self.registering, self.go = asyncio.Event(), asyncio.Event()

    async def publish(self, record, *, fence=None, pins=()):
        self.registering.set()
        await self.go.wait()
        return await super().publish(record, fence=fence, pins=pins)


async def _lose_reservation(registry: AdapterRegistry, pool_b) -> None:
    """End the session holding ``registry``'s owner's lock (a PostgreSQL restart, a proxy closing it, a process
    frozen long enough), so another process starting frees its reservations."""
    pid = registry._index._alive.get_server_pid()  # noqa: SLF001 - the session holding the owner's lock
    assert await pool_b.fetchval("SELECT pg_terminate_backend($1, 10000)", pid)  # waits until it is gone


@pytest.mark.parametrize("failure", ["store error", "cancel"])
async def test_a_publisher_that_lost_its_number_and_then_fails_leaves_the_next_holders_version_whole(
    make_registry, store, make_peft, database_url, tmp_path: Path, failure: str
):
    """A has stored its archive of v1.0 and freezes; meanwhile its reservation is freed as stale and B publishes
    v1.0. A then fails before it learns its reservation is gone (the store errs at its manifest write, or it is
    cancelled) and removes what it wrote: B's v1.0 still downloads intact (it was DATA_LOSS when both archives had
    one key), nothing of A's is left, and retries of both requests get their versions."""
    gated = _GatedManifest(store)
    registry_a = make_registry(gated)
    pool_b = await postgres.connect(database_url, max_size=5)  # another process
    a: asyncio.Task[AdapterRecord] | None = None
    try:
        registry_b = make_registry(store, db_pool=pool_b)
        a = asyncio.create_task(registry_a.publish(req(make_peft(0), request_id="a")))
        await gated.at_manifest.wait()  # A has stored its archive of v1.0
        await _lose_reservation(registry_a, pool_b)
        assert await registry_b.recover() == ["tiny-llama v1.0"]
        record_b = await registry_b.publish(req(make_peft(1), request_id="b"))
        assert record_b.version == "v1.0"

        if failure == "cancel":
            a.cancel()
        else:
            gated.fail = Unavailable("ARTIFACT_STORE_UNAVAILABLE", "the object store cannot be reached")
        gated.go.set()
        with pytest.raises(asyncio.CancelledError if failure == "cancel" else Unavailable):
            await a
        gated.fail = None  # the store is back

        got = await registry_b.download(TINY, "v1.0", tmp_path / "v1.0.tar.gz")
        assert got == record_b and sha256_file(tmp_path / "v1.0.tar.gz") == record_b.sha256
        assert await store.list_keys(V10) == sorted([record_b.archive_key, record_b.manifest_key])
        assert await registry_b.publish(req(make_peft(1), request_id="b")) == record_b  # B's retry: its version
        retried = await registry_a.publish(req(make_peft(0), request_id="a"))  # A's retry: a new one
        assert retried.version == "v2.0"
        assert await registry_a.download(TINY, "v1.0", tmp_path / "again.tar.gz") == record_b
    finally:
        gated.go.set()
        if a is not None:
            await asyncio.gather(a, return_exceptions=True)
        await pool_b.close()


async def test_the_loser_of_a_manifest_race_removes_its_own_archive_and_the_winner_that_lost_its_number_its_own(
    make_registry, store, make_peft, database_url, pool
):
    """A lost its reservation of v1.0 to B; A's manifest is written first and B's write of it is refused
    (ARTIFACT_EXISTS: v1.0 is retired), then A learns it lost its number (RESERVATION_LOST). Each removes what it
    wrote, and only that: nothing is left under v1.0 (B's archive stayed, an orphan, when both had one key)."""
    gated_a, gated_b = _GatedManifest(store), _GatedManifest(store)
    registry_a = make_registry(gated_a)
    index_a = registry_a._index = _GatedRegistration(pool)  # noqa: SLF001
    pool_b = await postgres.connect(database_url, max_size=5)
    tasks: list[asyncio.Task[AdapterRecord]] = []
    try:
        registry_b = make_registry(gated_b, db_pool=pool_b)
        tasks.append(a := asyncio.create_task(registry_a.publish(req(make_peft(0)))))
        await gated_a.at_manifest.wait()
        await _lose_reservation(registry_a, pool_b)
        assert await registry_b.recover() == ["tiny-llama v1.0"]
        tasks.append(b := asyncio.create_task(registry_b.publish(req(make_peft(1)))))
        await gated_b.at_manifest.wait()  # B holds v1.0 and has stored its archive
        gated_a.go.set()
        await index_a.registering.wait()  # A's manifest is in the store
        gated_b.go.set()
        with pytest.raises(AlreadyExists) as refused:
            await b
        assert refused.value.reason == "ARTIFACT_EXISTS"
        index_a.go.set()
        with pytest.raises(Aborted) as lost:
            await a
        assert lost.value.reason == "RESERVATION_LOST"
        assert await store.list_keys(V10) == []
        assert await pool.fetchval("SELECT state FROM adapters WHERE base_model = $1 AND major = 1", TINY) == "CONFLICT"
        assert (await registry_b.publish(req(make_peft(1)))).version == "v2.0"
    finally:
        for gate in (gated_a.go, gated_b.go, index_a.go):
            gate.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool_b.close()


async def test_the_archive_of_a_publisher_that_died_is_removed_at_recovery(
    make_registry, store, make_peft, database_url
):
    """A dies between its archive write and its manifest write (for PostgreSQL: its sessions end). The next start
    frees its reservation and removes its archive, not leaving it to whoever takes v1.0 next."""
    gated = _GatedManifest(store)
    registry_a = make_registry(gated)
    pool_b = await postgres.connect(database_url, max_size=5)
    a = asyncio.create_task(registry_a.publish(req(make_peft(0))))
    try:
        await gated.at_manifest.wait()
        [stored] = await store.list_keys(V10)
        await _lose_reservation(registry_a, pool_b)
        assert await make_registry(store, db_pool=pool_b).recover() == ["tiny-llama v1.0"]
        assert not await store.exists(stored)
        assert await store.list_keys(V10) == []
    finally:
        a.cancel()  # the dead process runs nothing more; this only ends the task
        gated.go.set()
        await asyncio.gather(a, return_exceptions=True)
        await pool_b.close()


async def test_the_next_holder_of_a_number_removes_what_failed_publishes_left_under_it(
    registry: AdapterRegistry, store, make_peft, tmp_path: Path
):
    """Archives under v1.0 without its manifest (attempts that failed where nothing could remove them, e.g. the
    store down at their cleanup and at recovery; one of the layout before attempts) go when v1.0 is published."""
    await store.ensure_ready()
    junk = tmp_path / "junk"
    junk.write_bytes(b"left behind")
    for key in (f"{V10}0123456789abcdef.adapter.tar.gz", f"{V10}adapter.tar.gz", f"{V10}fisher.safetensors"):
        await store.put_file(key, junk)
    record = await registry.publish(req(make_peft(0)))
    assert record.version == "v1.0"
    assert await store.list_keys(V10) == sorted([record.archive_key, record.manifest_key])
    got = await registry.download(TINY, "v1.0", tmp_path / "v1.0.tar.gz")
    assert sha256_file(tmp_path / "v1.0.tar.gz") == got.sha256 == record.sha256


async def test_keys_are_the_attempts_own_and_versions_stored_before_attempts_keep_theirs(
    registry: AdapterRegistry, store, make_peft, pool, tmp_path: Path
):
    new = await registry.publish(req(make_peft(0)))
    assert len(new.attempt) == 16
    assert new.archive_key == f"{V10}{new.attempt}.adapter.tar.gz" and new.manifest_key == f"{V10}metadata.json"
    assert new.artifact_uri == store.uri(new.archive_key)
    again = await registry.publish(req(make_peft(0)))  # the same bytes: an attempt of its own all the same
    assert again.attempt != new.attempt and again.archive_key.endswith(f"/v2.0/{again.attempt}.adapter.tar.gz")

    # v3.0 as a registry before attempts stored it: its archive at <version>/adapter.tar.gz, its record without one.
    index = PostgresAdapterIndex(pool)
    number = await index.reserve(TINY, ())
    assert number == VersionNumber(3, 0)
    legacy = replace(new, version="v3.0", attempt="")
    assert legacy.archive_key == f"adapters/{TINY}/v3.0/adapter.tar.gz"
    await store.get_file(new.archive_key, tmp_path / "old.tar.gz")
    await store.put_file(legacy.archive_key, tmp_path / "old.tar.gz")
    await store.put_bytes(legacy.manifest_key, b"{}")
    await index.publish(legacy)
    await pool.execute("UPDATE adapters SET doc = doc - 'attempt' WHERE base_model = $1 AND major = 3", TINY)

    old = await registry.get(TINY, "v3.0")
    assert old.attempt == "" and old.archive_key == legacy.archive_key
    got = await registry.download(TINY, "v3.0", tmp_path / "v3.0.tar.gz")
    assert sha256_file(tmp_path / "v3.0.tar.gz") == got.sha256 == new.sha256
    await registry.delete(TINY, "v3.0")
    assert await store.list_keys(f"adapters/{TINY}/v3.0/") == []


async def test_a_reservation_is_its_attempts_even_when_its_process_takes_the_number_again(pool, database_url):
    """A process's lock session drops and a starting process frees its reservation of v1.0; the same process
    reserves v1.0 again for another publish. The first attempt can then neither register, release nor retire it."""
    index = PostgresAdapterIndex(pool)
    first = await index.reserve(TINY, (), attempt="first")
    pid = index._alive.get_server_pid()  # noqa: SLF001
    assert await pool.fetchval("SELECT pg_terminate_backend($1, 10000)", pid)
    other = await postgres.connect(database_url, max_size=2)
    try:
        assert await PostgresAdapterIndex(other).release_stale() == [(TINY, first, "first")]
    finally:
        await other.close()
    second = await index.reserve(TINY, (), attempt="second")
    assert second == first
    record = AdapterRecord(base_model=TINY, version=str(first), lora=LoraSpec(rank=4, alpha=8.0),
                           create_time=datetime.now(UTC), sha256="0" * 64, size_bytes=1, attempt="first")
    with pytest.raises(Aborted) as lost:
        await index.publish(record)
    assert lost.value.reason == "RESERVATION_LOST"
    await index.release(TINY, first, "first")
    await index.mark_conflict(TINY, first, "first")
    row = await pool.fetchrow("SELECT state, attempt FROM adapters WHERE base_model = $1", TINY)
    assert (row["state"], row["attempt"]) == ("RESERVED", "second")
    published = await index.publish(replace(record, attempt="second"))
    assert published.attempt == "second"
    assert (await index.get(TINY, first)).attempt == "second"



class _GatedArchive:
    """Delegates to a store; the first listing or archive write, whichever comes first, waits for ``go``
    (``at_archive`` is set once it does): the publisher freezes after its manifest check, before it touches anything
    under the version's folder."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.at_archive, self.go = asyncio.Event(), asyncio.Event()

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def _freeze(self) -> None:
        if not self.at_archive.is_set():
            self.at_archive.set()
            await self.go.wait()

    async def list_keys(self, prefix: str) -> list[str]:
        await self._freeze()
        return await self._inner.list_keys(prefix)

    async def put_file(self, key: str, path: Path) -> None:
        await self._freeze()
        await self._inner.put_file(key, path)


async def test_an_attempt_that_lost_its_number_before_it_wrote_leaves_the_next_holders_version_whole(
    make_registry, store, make_peft, database_url, tmp_path: Path
):
    """A frozen between its manifest check and its writes loses v1.0 to B, which publishes it whole; A wakes, writes
    its archive, is refused at the manifest and removes only its own. (Leftovers used to be swept before the writes,
    by an attempt that might have lost its number meanwhile: A's sweep removed B's published archive.)"""
    gated = _GatedArchive(store)
    registry_a = make_registry(gated)
    registry_a._scratch = tmp_path / "scratch-a"  # noqa: SLF001 - A's own process: B's recovery does not clear it
    pool_b = await postgres.connect(database_url, max_size=5)  # another process
    a: asyncio.Task[AdapterRecord] | None = None
    try:
        registry_b = make_registry(store, db_pool=pool_b)
        a = asyncio.create_task(registry_a.publish(req(make_peft(0))))
        async with asyncio.timeout(30):
            await gated.at_archive.wait()  # A holds v1.0, found no manifest, and freezes
        await _lose_reservation(registry_a, pool_b)
        assert await registry_b.recover() == ["tiny-llama v1.0"]
        record_b = await registry_b.publish(req(make_peft(1)))
        assert record_b.version == "v1.0"

        gated.go.set()  # A wakes: its archive under its own key, then its manifest write is refused
        with pytest.raises(AlreadyExists):
            await a

        got = await registry_b.download(TINY, "v1.0", tmp_path / "v1.0.tar.gz")  # B's published version
        assert got == record_b and sha256_file(tmp_path / "v1.0.tar.gz") == record_b.sha256
        assert await store.list_keys(V10) == sorted([record_b.archive_key, record_b.manifest_key])
    finally:
        gated.go.set()
        if a is not None:
            await asyncio.gather(a, return_exceptions=True)
        await pool_b.close()
