"""Publishing a version of the adapter registry: the steps of a publish attempt against the index and the
artifact store (reserving its number, storing its artifacts, registering it, undoing it when it fails, sweeping
what earlier attempts left), which engine.registry.adapter_registry.AdapterRegistry runs.

Publishing, in order:
  1. pack the PEFT directory into a canonical tar.gz and hash it (off the loop; AdapterRegistry.publish, in
     engine.registry.adapter_registry);
  2. reserve the version number with a PostgreSQL row (the primary key decides races) for this
     publish attempt, a random token (engine.registry.records.new_attempt);
  3. store the archive under a key of the attempt's own,
     ``adapters/<base-model>/<version>/<attempt>.adapter.tar.gz``, then ``metadata.json`` (the
     version's key, naming the archive's) last, all create-only: a version whose manifest exists is
     never overwritten;
  4. only then mark the row PUBLISHED, if the attempt still holds it: from here on it is a version.
     This step runs to its end even if the publish is cancelled meanwhile, and once it has
     succeeded nothing is undone.
Readers follow the record's keys; versions published before attempts keep theirs
(``<version>/adapter.tar.gz``). A number can change hands: a reservation freed as stale (its
publisher froze, its lock session dropped; see engine.stores.adapter_index) is handed out again, and
two attempts may be storing one number's objects at once. Only the manifest's key is shared, and its
create-only write decides: the attempt whose write fails is refused (ARTIFACT_EXISTS) and the
attempt that lost its reservation cannot register what it wrote (RESERVATION_LOST). If step 3 or 4
fails (e.g. the object store is down, the publish is cancelled, the reservation was lost), what this
attempt wrote is removed when possible, and only that: every key it wrote is its own, so it never
removes another attempt's archive; a registration that failed with no answer from the database (its
connection dropped as it committed) is asked about again first, and what it registered is the
version. The reservation is released if the attempt still holds it, so nothing becomes visible and a
retry gets the same number. What a failed attempt could not remove (the store down, the process
dead) is an orphan: the attempt that registers the number removes every other object under the
version's prefix once it has (none of their attempts can register it then; sweeping any earlier
would let an attempt that lost its reservation, unaware, sweep away the archive of the one that took
the number over), and ``AdapterRegistry.recover`` (at the next start) removes the archives of the reservations it
frees, with the store's partial writes and the scratch files; a publish refused IMPORT_IN_PROGRESS frees them
likewise (``reserve``), so a request whose publisher died is not refused until a restart. If the store already
holds a manifest the database does not know, the publish is refused, the manifest and what is beside it are left
alone and the number is retired (CONFLICT). A publish fenced by a job's lease (a training job's result) records
that lease on its reservation; once the job's lease is another's, the reservation can never register, and the lease
holder's publish of the same request supersedes it (``reserve``: the number retired, SUPERSEDED) instead of being
refused IMPORT_IN_PROGRESS for as long as the old publisher lives on, frozen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from pydantic import TypeAdapter

from engine.domain import Pin
from engine.errors import Aborted, AlreadyExists, EngineError, NotFound
from engine.registry.ports import AdapterIndex, ArtifactStore
from engine.registry.records import ARCHIVE_NAME, FISHER_NAME, AdapterRecord, VersionNumber, attempt_key

log = logging.getLogger(__name__)

_MANIFEST = TypeAdapter(AdapterRecord)


async def reserve(index: AdapterIndex, store: ArtifactStore, base_model: str, under: tuple[int, ...],
                  request_id: str, attempt: str, fence: tuple[str, str] | None) -> VersionNumber:
    """The index's reservation. A request whose id another publish holds is refused IMPORT_IN_PROGRESS while
    that publisher works. But the holder may be one that can never register it, and every retry of the request
    (a training job's result, taken over by a live worker) would be refused for as long: one that died (its
    process gone, so its reservation outlives it until the next start's ``AdapterRegistry.recover``), or one that
    lost its job's lease (a worker frozen mid-publish, process and lock alive, whose job another worker took over:
    its registration is fenced by that lease). So the refused publish frees what publishers that are gone
    reserved, as ``AdapterRegistry.recover`` does (their owners' locks free; those of live ones stay), supersedes
    the request's reservations made under a lease the job no longer holds (``AdapterIndex.supersede``: their
    numbers retired), and tries once more: refused again, the holder is alive and may yet register it."""
    try:
        return await index.reserve(base_model, under, request_id, attempt, fence)
    except Aborted as exc:
        if exc.reason != "IMPORT_IN_PROGRESS" or not (
                await release_stale(index, store) + await _supersede(index, store, base_model, request_id)):
            raise
    return await index.reserve(base_model, under, request_id, attempt, fence)


async def release_stale(index: AdapterIndex, store: ArtifactStore) -> list[str]:
    """Release the reservations of publishers that are gone and remove the objects their attempts may have
    stored (a manifest, whose key is the version's, stays: see ``store_and_register``); what cannot be
    removed now (the store down) the attempt that registers that number removes. Returns the released
    versions as ``<base-model> <version>``."""
    return await _forget_attempts(store, await index.release_stale())


async def _supersede(index: AdapterIndex, store: ArtifactStore, base_model: str, request_id: str) -> list[str]:
    """Supersede ``request_id``'s reservations whose publisher lost its job's lease, and remove the objects
    their attempts may have stored, as ``release_stale`` does (should such a publisher wake up and store them
    after all, its registration fails on the lease, and it removes them itself). Returns them as
    ``<base-model> <version>``."""
    superseded = await index.supersede(base_model, request_id)
    if superseded:
        log.warning("superseded the reservations of a request whose publisher lost its job's lease",
                    extra={"request_id": request_id, "versions": [str(n) for _, n, _ in superseded]})
    return await _forget_attempts(store, superseded)


async def _forget_attempts(store: ArtifactStore, attempts: list[tuple[str, VersionNumber, str]]) -> list[str]:
    """Remove what these attempts, which can never register their numbers, may have stored; returns them as
    ``<base-model> <version>``."""
    # A reservation is one attempt's and its keys are its own, so its objects go even if a new holder of the
    # number is at work already.
    orphans = [attempt_key(b, str(number), attempt, name)
               for b, number, attempt in attempts for name in (ARCHIVE_NAME, FISHER_NAME)]
    if orphans:
        try:
            await store.delete(orphans)
        except Exception:  # noqa: BLE001 - a store down is no reason not to start, nor to refuse a publish
            log.warning("could not remove the objects of publishes cut short", extra={"keys": orphans})
    return [f"{b} {number}" for b, number, _ in attempts]


async def store_and_register(
    index: AdapterIndex, store: ArtifactStore, record: AdapterRecord, archive_path: Path,
    fence: tuple[str, str] | None = None, pins: Sequence[Pin] = (),
) -> AdapterRecord:
    written: list[str] = []
    registration: asyncio.Task[AdapterRecord] | None = None
    try:
        if await store.exists(record.manifest_key):
            raise AlreadyExists(
                "ARTIFACT_EXISTS",
                f"the artifact store already holds {record.manifest_key}, which this registry's database "
                f"does not know; it is left untouched and {record.version} is retired. Retry to publish "
                "under the next version.",
                metadata={"key": record.manifest_key, "version": record.version},
            )
        await store.put_file(record.archive_key, archive_path)
        written.append(record.archive_key)
        # Create-only, and the one key another attempt at this number writes too: if one got here first, this
        # write fails (ARTIFACT_EXISTS, below) and this attempt registers nothing; if this one did, the other's
        # fails. Either way the manifest names the archive of the attempt that may register the number.
        await store.put_bytes(record.manifest_key, _MANIFEST.dump_json(record, indent=2))
        written.append(record.manifest_key)
        registration = asyncio.ensure_future(index.publish(record, fence=fence, pins=pins))
        return await _to_the_end(registration)
    except AlreadyExists:
        # The manifest was there before us (the check above or our write): it is not ours and stays. What we
        # wrote beside it is, under keys of this attempt's own.
        await _abandon(index, store, record, written, conflict=True)
        raise
    except BaseException as exc:
        failure = exc if registration is None else _failure(registration)
        if failure is not None:  # else it is a version, cancelled only after it was registered
            if registration is not None and not isinstance(failure, EngineError):
                # The registration's outcome is not known (the connection dropped as it committed, its
                # answer lost): removing the files of a version it registered would lose that version.
                registered, known = await _registration_of(index, record)
                if registered is not None:
                    log.warning("a publish's registration answered with an error but had registered it",
                                extra={"version": record.version, "error": repr(failure)})
                    return registered
                if not known:
                    raise  # left as it is: the files stay, and the reservation (a restart frees it)
            # Also when the reservation was lost (RESERVATION_LOST, or not known yet: the store failed, the
            # publish was cancelled) and the number is another attempt's by now: every key in ``written`` is
            # this attempt's own (its manifest too, as its create-only write succeeded), never the other's.
            await _abandon(index, store, record, written)
        raise


async def _registration_of(index: AdapterIndex, record: AdapterRecord) -> tuple[AdapterRecord | None, bool]:
    """Whether ``record``'s attempt registered it, asked again after its registration failed with no answer
    from the database: (the version, True) if it did, (None, True) if it did not, (None, False) if the
    database cannot say now either."""
    try:
        stored = await index.get(record.base_model, record.number)
    except NotFound:
        return None, True
    except Exception:  # noqa: BLE001 - the database still away: not known
        log.warning("could not learn whether a publish was registered; its files are kept",
                    extra={"version": record.version}, exc_info=True)
        return None, False
    return (stored, True) if stored.attempt == record.attempt else (None, True)


async def remove_orphans(store: ArtifactStore, record: AdapterRecord) -> None:
    """Once ``record`` is registered (a version: no other attempt can register its number any more), remove
    what earlier attempts at the number left under its prefix, its own archive and manifest aside: they died,
    or lost their reservation (and remove their own, if they still can). Only after the registration: an
    attempt that lost its reservation cannot get here, so it never sweeps away the archive of the attempt
    that took the number over. Best effort: the version is published whatever becomes of the sweep (what it
    cannot remove stays as garbage, logged: a registered number is never handed out again)."""
    try:
        keys = await store.list_keys(record.prefix)
        orphans = [k for k in keys if k not in (record.manifest_key, record.archive_key)]
        if orphans:
            log.warning("removing what failed publishes of this number left", extra={"keys": orphans})
            await store.delete(orphans)
    except Exception:  # noqa: BLE001 - the version is published; leftovers are only garbage
        log.warning("could not remove what failed publishes of this number left",
                    extra={"version": record.version}, exc_info=True)


async def _abandon(
    index: AdapterIndex, store: ArtifactStore, record: AdapterRecord, written: list[str], *, conflict: bool = False
) -> None:
    """Undo a failed publish as far as possible: remove ``written`` (this attempt's own keys), then give the
    reservation back, or retire the number (``conflict``), if this attempt still holds it. Never raises
    anything but the index's failure to retire."""
    try:
        await store.delete(list(reversed(written)))  # the manifest first
    except Exception:  # noqa: BLE001 - the store may be the thing that failed
        log.warning("could not remove artifacts of a failed publish", extra={"keys": written})
    if conflict:
        await index.mark_conflict(record.base_model, record.number, record.attempt)
        return
    try:
        await index.release(record.base_model, record.number, record.attempt)
    except Exception:  # noqa: BLE001
        log.exception("could not release the reservation of %s %s", record.base_model, record.version)


async def _to_the_end(task: asyncio.Task[AdapterRecord]) -> AdapterRecord:
    """``task``'s result, waiting for it to end even if the caller is cancelled meanwhile (the cancel is raised
    once it has ended): a registration is never cut short, and its outcome is known."""
    cancel: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError as exc:
            cancel = exc
    if cancel is not None:
        raise cancel
    return task.result()


def _failure(task: asyncio.Task[AdapterRecord]) -> BaseException | None:
    """Why a finished ``task`` failed; None if it succeeded."""
    return asyncio.CancelledError() if task.cancelled() else task.exception()
