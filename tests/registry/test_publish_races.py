"""Publishes, deletes and downloads cut short or overtaken, against real PostgreSQL and both artifact stores: a
reservation freed under its publisher, a cancel after the version was registered or while the owner's lock is
given back, a delete cut short, a download overtaken by a delete, request ids of retired or deleted numbers, and a
job's result whose earlier publisher died or lost the job's lease mid-publish."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from engine.errors import Aborted, AlreadyExists, NotFound
from engine.jobs.core import Job, JobState
from engine.jobs.ports import LeaseLost
from engine.registry import AdapterRegistry, PublishRequest
from engine.registry.archive import sha256_file
from engine.registry.records import ARCHIVE_NAME, attempt_key
from engine.stores import postgres
from engine.stores.adapter_index import PostgresAdapterIndex
from engine.stores.job_store import PostgresJobStore
from tests.jobs.test_job_core import COUNT, CountOutput, CountSpec
from tests.registry.conftest import TINY


def req(adapter_dir, **fields) -> PublishRequest:
    """What the tests publish: ``adapter_dir`` as a version of the tiny model."""
    return PublishRequest(base_model=TINY, adapter_dir=adapter_dir, **fields)


class _Crash(BaseException):
    """The process dies here (nothing after it runs, not even ``except Exception``)."""


class _GatedManifest:
    """Delegates to a store; a manifest write waits for ``go`` (``at_manifest`` is set once it does), then fails
    with ``fail`` if that is set (the store erring at that moment)."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.at_manifest, self.go = asyncio.Event(), asyncio.Event()
        self.fail: BaseException | None = None

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def put_bytes(self, key: str, data: bytes) -> None:
        if key.endswith("metadata.json"):
            self.at_manifest.set()
            await self.go.wait()
            if self.fail is not None:
                raise self.fail
        await self._inner.put_bytes(key, data)


async def test_a_publisher_whose_reservation_was_freed_never_publishes_over_the_next_holders(
    make_registry, store, make_peft, database_url, tmp_path: Path
):
    """A's lock session drops mid-publish (a PostgreSQL restart, a proxy closing it); another process starting
    frees A's reservation and B takes the number, removing A's archive (an orphan to B) and storing its own. A is
    ABORTED and leaves B's files alone; B's version holds B's archive."""
    store_a, store_b = _GatedManifest(store), _GatedManifest(store)
    registry_a = make_registry(store_a)
    pool_b = await postgres.connect(database_url, max_size=5)  # another process
    tasks: list[asyncio.Task] = []
    try:
        registry_b = make_registry(store_b, db_pool=pool_b)
        tasks.append(a := asyncio.create_task(registry_a.publish(req(make_peft(0)))))
        await store_a.at_manifest.wait()  # A has stored its archive of v1.0
        pid = registry_a._index._alive.get_server_pid()  # noqa: SLF001 - the session holding A's lock
        assert await pool_b.fetchval("SELECT pg_terminate_backend($1, 10000)", pid)  # waits until it is gone
        assert await registry_b.recover() == ["tiny-llama v1.0"]
        tasks.append(b := asyncio.create_task(registry_b.publish(req(make_peft(1)))))
        await store_b.at_manifest.wait()  # B holds v1.0 and has stored its archive (A's is gone)
        store_a.go.set()
        with pytest.raises(Aborted) as lost:
            await a
        assert lost.value.reason == "RESERVATION_LOST"
        store_b.go.set()
        record_b = await b
        assert record_b.version == "v1.0"
        got = await registry_a.download(TINY, "v1.0", tmp_path / "v1.0.tar.gz")
        assert got.sha256 == record_b.sha256 == sha256_file(tmp_path / "v1.0.tar.gz")
        assert (await registry_a.publish(req(make_peft(0)))).version == "v2.0"  # A's retry
    finally:
        store_a.go.set()
        store_b.go.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool_b.close()


async def test_a_publisher_whose_lock_session_dropped_takes_its_lock_again(pool, database_url):
    """With a reservation outstanding, the session holding the owner's lock ends: the next reservation takes the
    lock on a new session, and a starting process leaves both reservations alone."""
    index = PostgresAdapterIndex(pool)
    first = await index.reserve(TINY, ())
    pid = index._alive.get_server_pid()  # noqa: SLF001
    assert await pool.fetchval("SELECT pg_terminate_backend($1, 10000)", pid)
    second = await index.reserve(TINY, ())
    other = await postgres.connect(database_url, max_size=2)
    try:
        assert await PostgresAdapterIndex(other).release_stale() == []
    finally:
        await other.close()
    await index.release(TINY, second)
    await index.release(TINY, first)
    assert await pool.fetchval("SELECT count(*) FROM adapters") == 0


class _SlowToReturn(PostgresAdapterIndex):
    """Registers a version, then takes until ``go`` to return (the round trips after the commit)."""

    def __init__(self, pool) -> None:
        super().__init__(pool)
        self.registered, self.go = asyncio.Event(), asyncio.Event()

    async def publish(self, record, *, fence=None, pins=()):
        published = await super().publish(record, fence=fence, pins=pins)
        self.registered.set()
        await self.go.wait()
        return published


async def test_a_publish_cancelled_after_its_version_was_registered_keeps_its_files(
    make_registry, store, make_peft, pool, tmp_path: Path
):
    registry = make_registry(store)
    index = registry._index = _SlowToReturn(pool)  # noqa: SLF001
    task = asyncio.create_task(registry.publish(req(make_peft(0))))
    await index.registered.wait()
    task.cancel()  # e.g. the ImportAdapter client's deadline expires now
    index.go.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    listed, _ = await registry.list(base_model=TINY, page_size=10)
    assert [r.version for r in listed] == ["v1.0"]
    got = await registry.download(TINY, "v1.0", tmp_path / "v1.0.tar.gz")
    assert got.sha256 == listed[0].sha256


def _gating_unlock(entered: asyncio.Event) -> type[asyncpg.Connection]:
    """A connection class whose unlock of an owner's lock waits forever once it has set ``entered`` (a network
    round trip that a cancel cuts short)."""

    class GatedUnlock(asyncpg.Connection):
        async def execute(self, query: str, *args, timeout: float | None = None) -> str:
            if query == "SELECT pg_advisory_unlock($1)":
                entered.set()
                await asyncio.Event().wait()
            return await super().execute(query, *args, timeout=timeout)

    return GatedUnlock


async def test_a_cancel_while_the_owners_lock_is_given_back_neither_keeps_it_nor_stalls_later_reservations(
    pool, database_url
):
    entered = asyncio.Event()
    gated = await asyncpg.create_pool(database_url, min_size=1, max_size=5, connection_class=_gating_unlock(entered))
    try:
        index = PostgresAdapterIndex(gated)
        number = await index.reserve(TINY, ())
        release = asyncio.create_task(index.release(TINY, number))
        await entered.wait()
        release.cancel()
        with pytest.raises(asyncio.CancelledError):
            await release
        # The owner's lock went with its session: the next reservation takes it again (it waited forever before).
        again = await asyncio.wait_for(index.reserve(TINY, ()), 30)
        assert again == number
        assert await pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())") == 1
    finally:
        gated.terminate()


class _DiesInDelete:
    """Delegates to a store; the process dies before or after the store's deletes, as ``dies`` says."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.dies = ""

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def delete(self, keys) -> None:
        if self.dies == "before":
            raise _Crash()
        await self._inner.delete(keys)
        if self.dies == "after":
            raise _Crash()


@pytest.mark.parametrize("dies", ["before", "after"])
async def test_a_delete_cut_short_leaves_no_listed_version_without_files_and_running_it_again_removes_them(
    make_registry, store, make_peft, dies: str
):
    dying = _DiesInDelete(store)
    registry = make_registry(dying)
    record = await registry.publish(req(make_peft(0)))
    dying.dies = dies
    with pytest.raises(_Crash):
        await registry.delete(TINY, "v1.0")
    dying.dies = ""
    assert (await registry.list(base_model=TINY, page_size=10))[0] == []  # a tombstone, files or not
    with pytest.raises(NotFound):
        await registry.get(TINY, "v1.0")
    with pytest.raises(NotFound):
        await registry.delete(TINY, "v1.0")
    for key in (record.manifest_key, record.archive_key):
        assert not await store.exists(key)


class _GatedDownload:
    """Delegates to a store; reading an archive waits for ``go`` (``reading`` is set once it does)."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.reading, self.go = asyncio.Event(), asyncio.Event()

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def get_file(self, key: str, dest: Path) -> None:
        self.reading.set()
        await self.go.wait()
        await self._inner.get_file(key, dest)


async def test_a_download_overtaken_by_a_delete_is_not_found_not_data_loss(
    make_registry, store, make_peft, tmp_path: Path
):
    gated = _GatedDownload(store)
    registry = make_registry(gated)
    await registry.publish(req(make_peft(0)))
    download = asyncio.create_task(registry.download(TINY, "v1.0", tmp_path / "v1.0.tar.gz"))
    await gated.reading.wait()  # it has read the record; a large archive on a slow link
    await registry.delete(TINY, "v1.0")
    gated.go.set()
    with pytest.raises(NotFound) as gone:
        await download
    assert gone.value.reason == "ADAPTER_NOT_FOUND"


async def test_a_request_id_whose_number_was_retired_publishes_under_the_next(
    registry: AdapterRegistry, store, make_peft
):
    await store.ensure_ready()
    await store.put_bytes("adapters/tiny-llama/v1.0/metadata.json", b'{"planted": true}')
    with pytest.raises(AlreadyExists):
        await registry.publish(req(make_peft(0), request_id="trainingJobs/j1/result"))
    retried = await registry.publish(req(make_peft(0), request_id="trainingJobs/j1/result"))
    assert retried.version == "v2.0"
    again = await registry.publish(req(make_peft(0), request_id="trainingJobs/j1/result"))
    assert again == retried


async def test_a_request_id_whose_version_was_deleted_can_be_published_again(registry: AdapterRegistry, make_peft):
    await registry.publish(req(make_peft(0), request_id="imp-1"))
    await registry.delete(TINY, "v1.0")
    republished = await registry.publish(req(make_peft(0), request_id="imp-1"))
    assert republished.version == "v2.0"
    assert await registry.publish(req(make_peft(0), request_id="imp-1")) == republished


async def test_a_job_taken_over_after_its_worker_died_mid_publish_can_publish_its_result(
    make_registry, store, make_peft, pool, database_url
):
    """Worker A (one process) reserved a number for ``trainingJobs/j/result``, stored its archive and died (its lock
    session is gone). Worker B (another process, long running: no restart, so no ``recover``) takes the durable
    job over and publishes the same request. The dead reservation held the request id in the live rows' unique
    index, and nothing but a process start freed it: B was ABORTED IMPORT_IN_PROGRESS however often it retried.
    Now B frees it, with the dead attempt's archive, as ``recover`` does, and publishes."""
    request_id = "trainingJobs/j/result"
    registry_a = make_registry(store)
    await registry_a.publish(req(make_peft(0)))  # v1.0
    index_a = PostgresAdapterIndex(pool)  # process A
    dead = await index_a.reserve(TINY, (), request_id, "attempt-a")
    dead_archive = attempt_key(TINY, str(dead), "attempt-a", ARCHIVE_NAME)
    await store.put_bytes(dead_archive, b"what A uploaded")
    await registry_a.publish(req(make_peft(1)))  # v3.0: A's number is no longer the top one
    pid = index_a._alive.get_server_pid()  # noqa: SLF001 - the session holding A's lock: A dies
    assert await pool.fetchval("SELECT pg_terminate_backend($1, 10000)", pid)
    pool_b = await postgres.connect(database_url, max_size=5)  # process B, started before A died
    try:
        registry_b = make_registry(store, db_pool=pool_b)
        record = await registry_b.publish(req(make_peft(2), request_id=request_id))
        assert (dead, record.version, record.request_id) == ((2, 0, 0), "v4.0", request_id)
        assert not await store.exists(dead_archive)
        assert await registry_b.publish(req(make_peft(2), request_id=request_id)) == record
    finally:
        await pool_b.close()


async def test_a_request_whose_publisher_is_alive_stays_in_progress(
    make_registry, store, make_peft, pool, database_url
):
    """The same request from another process while its publisher lives: IMPORT_IN_PROGRESS, the reservation kept."""
    index_a = PostgresAdapterIndex(pool)
    number = await index_a.reserve(TINY, (), "imp-1", "attempt-a")
    pool_b = await postgres.connect(database_url, max_size=5)
    try:
        with pytest.raises(Aborted) as caught:
            await make_registry(store, db_pool=pool_b).publish(req(make_peft(0), request_id="imp-1"))
        assert caught.value.reason == "IMPORT_IN_PROGRESS"
        assert await pool.fetchval("SELECT attempt FROM adapters WHERE state = 'RESERVED'") == "attempt-a"
    finally:
        await pool_b.close()
    await index_a.release(TINY, number, "attempt-a")


async def test_the_lease_holders_publish_supersedes_the_reservation_of_a_worker_that_lost_the_job(
    make_registry, store, make_peft, pool, database_url
):
    """Worker A reserved a number for its job's result and froze mid-publish (SIGSTOP, a paused VM): its process,
    its lock session and so its reservation live on. Worker B took the job over (a new lease) and publishes the same
    request, fenced by its lease. B was ABORTED IMPORT_IN_PROGRESS for as long as A stayed frozen, though A's
    reservation can never register (its registration is fenced by A's lost lease), and the job ended FAILED after
    training. B's publish supersedes it: A's number is retired, B's version is the request's, and A, thawed,
    registers nothing. While A still held the lease, its reservation stood."""
    jobs = PostgresJobStore(pool, COUNT)
    job = await jobs.insert_job(Job("j", COUNT.name, CountSpec(1), CountOutput(), JobState.QUEUED, datetime.now(UTC)))
    request_id = "countJobs/j/result"
    lease_a = (await jobs.claim(job.id, "worker-a")).lease
    index_a = PostgresAdapterIndex(pool)  # process A, frozen after this: its lock session stays open
    frozen = await index_a.reserve(TINY, (), request_id, "attempt-a", (job.id, lease_a.token))
    archive_a = attempt_key(TINY, str(frozen), "attempt-a", ARCHIVE_NAME)
    await store.put_bytes(archive_a, b"what A uploaded")
    pool_b = await postgres.connect(database_url, max_size=5)  # process B
    thawed = False
    try:
        registry_b = make_registry(store, db_pool=pool_b)
        with pytest.raises(Aborted) as caught:  # A holds the lease yet: it may register its reservation
            await registry_b.publish(req(make_peft(0), request_id=request_id, fence=(job.id, lease_a.token)))
        assert caught.value.reason == "IMPORT_IN_PROGRESS"
        lease_b = (await jobs.claim(job.id, "worker-b")).lease  # A's heartbeat stopped: B takes the job over
        record = await registry_b.publish(req(make_peft(0), request_id=request_id, fence=(job.id, lease_b.token)))
        assert (frozen, record.version, record.request_id) == ((1, 0, 0), "v2.0", request_id)
        assert await pool.fetchval("SELECT state FROM adapters WHERE major = 1") == "SUPERSEDED"
        assert not await store.exists(archive_a)
        # A thaws: its registration is fenced out, and it gives its reservation back, which is gone already.
        with pytest.raises(LeaseLost):
            await index_a.publish(replace(record, version=str(frozen), attempt="attempt-a"),
                                  fence=(job.id, lease_a.token))
        thawed = True
        await index_a.release(TINY, frozen, "attempt-a")
        assert await registry_b.publish(req(make_peft(0), request_id=request_id,
                                            fence=(job.id, lease_b.token))) == record
        assert await registry_b.publish(req(make_peft(1))) == await registry_b.get(TINY, "v3.0")  # v1.0 retired
    finally:
        await pool_b.close()
        if not thawed:  # its lock session, held on the test's pool
            await index_a.release(TINY, frozen, "attempt-a")
