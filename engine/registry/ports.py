"""Ports of the adapter registry: the index of versions, where artifacts live, and what serving protects.

Implementations: ``engine.stores.adapter_index`` for :class:`AdapterIndex`, ``engine.stores.artifacts_local`` /
``engine.stores.artifacts_s3`` for :class:`ArtifactStore`, ``engine.stores.serving_state`` for
:class:`ServingState`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Protocol

from engine.domain import Pin
from engine.registry.records import AdapterRecord, VersionNumber

# A page cursor of the version list: (create_time, base_model, major, minor) of the previous page's last row.
Cursor = tuple[datetime, str, int, int, int]  # (create_time, base_model, major, minor, patch) of a page's last row


class ArtifactStore(Protocol):
    """Immutable objects under slash-separated keys, e.g. ``adapters/m/v1.0/metadata.json``.

    Writes are create-only: writing an existing key raises ``AlreadyExists("ARTIFACT_EXISTS")``
    and leaves the existing object as it was. A store that cannot be reached raises
    ``Unavailable("ARTIFACT_STORE_UNAVAILABLE")``; a missing object ``NotFound("ARTIFACT_MISSING")``.
    Every method does its blocking I/O off the event loop.
    """

    def uri(self, key: str) -> str:
        """Where ``key`` lives, for people: ``file:///...`` or ``s3://bucket/key``."""
        ...

    async def ensure_ready(self) -> None:
        """Create the bucket/directory if missing."""
        ...

    async def probe(self) -> None:
        """Raise (``Unavailable`` when it cannot be reached) unless the store can be written now; for health
        checks. Creates nothing that lasts."""
        ...

    async def remove_partial_writes(self) -> int:
        """Remove what writes cut short by a crash left beside the objects (e.g. temporary files); returns how
        many. Called at every process start: a write in flight in another process sharing the store is left alone
        (the local store's writers hold a lock on their temporary files; S3 keeps no partial object)."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def put_file(self, key: str, path: Path) -> None:
        """Store a file under a new key, durably; refuse if the key exists."""
        ...

    async def put_bytes(self, key: str, data: bytes) -> None:
        """Store a small object under a new key, durably; refuse if the key exists."""
        ...

    async def get_file(self, key: str, dest: Path) -> None: ...

    async def get_bytes(self, key: str) -> bytes: ...

    async def delete(self, keys: Sequence[str]) -> None:
        """Remove objects, in the given order; missing ones are fine."""
        ...

    async def list_keys(self, prefix: str) -> list[str]:
        """The keys of the objects under ``prefix`` (e.g. ``online/live/``), sorted; for sweeps of what a crash
        left."""
        ...


class ServingRole(enum.StrEnum):
    ACTIVE = "ACTIVE"
    KNOWN_GOOD = "KNOWN_GOOD"


# What a version in a role is and what frees it, as a refused delete says it (ServingState.protected_versions).
ROLE_PROTECTION = {
    ServingRole.ACTIVE: "active; activate another version, or roll back, first",
    ServingRole.KNOWN_GOOD: "the known-good rollback target; activate another version as known-good "
                            "(mark_known_good) first",
}


class ServingState(Protocol):
    """The versions the serving side relies on: active and known-good per base model, and those online sessions'
    live aliases serve.

    LoraControl and the online sessions own this state; the registry only reads it, to
    refuse deleting or pruning those versions.
    """

    async def protected_versions(self, base_model: str) -> dict[str, str]:
        """Versions of ``base_model`` that are active, the known-good rollback target, being activated (a pending
        version), the candidate of a traffic split in force (a canary), or relied on by an online session: served by
        a live alias, or the start version or latest publication of a session not ended; each with what it is and what
        frees it, as a refused delete says it (a role's first)."""
        ...


class AdapterIndex(Protocol):
    """The version numbers and records of every base model's adapters.

    A number is reserved first (the store decides races: two publishers never get the same number), then
    published with its record once its artifacts are durable, or released; a deleted version stays as a
    tombstone, so its number is never handed out again. A reservation is one publish attempt's: publishing,
    releasing or retiring it takes effect only while that attempt (``record.attempt``, ``attempt``) still holds
    it, so an attempt whose reservation was freed as stale never changes the number's next holder's, even in the
    same process.
    """

    async def reserve(
        self, base_model: str, under: tuple[int, ...], request_id: str = "", attempt: str = "",
        fence: tuple[str, str] | None = None,
    ) -> VersionNumber:
        """The next free number under ``under``: a new major line for ``()``, the next minor of a line for
        ``(major,)``, the next patch of a minor version for ``(major, minor)``; held by ``attempt``, whose publish is
        fenced by ``fence`` (job id, lease token; see ``supersede``). ABORTED IMPORT_IN_PROGRESS while another
        reservation holds ``request_id``."""
        ...

    async def publish(self, record: AdapterRecord, *, fence: tuple[str, str] | None = None,
                      pins: Sequence[Pin] = ()) -> AdapterRecord:
        """Turn ``record.attempt``'s reservation into a version (RESERVATION_LOST unless it still holds it); with
        ``fence`` (job id, lease token), only while that job's lease holds (LeaseLost otherwise), and ``pins`` (what
        the version names and needs live: engine.domain.Pin), checked atomically with the registration."""
        ...

    async def release(self, base_model: str, number: VersionNumber, attempt: str = "") -> None:
        """Give back ``attempt``'s reservation, whose publish failed."""
        ...

    async def mark_conflict(self, base_model: str, number: VersionNumber, attempt: str = "") -> None:
        """Retire a number whose manifest the store already held (never handed out again), if ``attempt`` holds
        it."""
        ...

    async def release_stale(self) -> list[tuple[str, VersionNumber, str]]:
        """Release the reservations of publishers that are gone (their process ended mid-publish, or their lock
        session did); returns them as (base_model, number, attempt), so the objects of those attempts can be
        removed. Those of live publishers, in any process, stay."""
        ...

    async def supersede(self, base_model: str, request_id: str) -> list[tuple[str, VersionNumber, str]]:
        """Retire the reservations of ``request_id`` made under a job's lease that is no longer that job's: their
        publisher lost the job to another worker (it may live on, frozen mid-publish) and can never register them
        (``publish`` checks the lease), so the request is free for the lease's holder. Their numbers are never
        handed out again. Returns them as (base_model, number, attempt), so the objects of those attempts can be
        removed."""
        ...

    async def get(self, base_model: str, number: VersionNumber, *, include_deleted: bool = False) -> AdapterRecord:
        """NOT_FOUND (ADAPTER_NOT_FOUND) unless published (or deleted, with ``include_deleted``)."""
        ...

    async def by_request_id(self, base_model: str, request_id: str) -> AdapterRecord | None: ...

    async def list(
        self, *, base_model: str, labels: Mapping[str, str], limit: int, after: Cursor | None
    ) -> list[AdapterRecord]:
        """Published versions, newest first."""
        ...

    def deleting(self, base_model: str, number: VersionNumber) -> AbstractAsyncContextManager[AdapterRecord]:
        """Lock a published version; if the body succeeds, it becomes a tombstone. FAILED_PRECONDITION
        ADAPTER_PROTECTED while a training job that has not ended continues it (``continued_versions``)."""
        ...

    def pin(self, base_model: str, number: VersionNumber) -> Pin:
        """The version, for what is stored naming it to pin (engine.domain.Pin): checked PUBLISHED in the storing
        transaction (NOT_FOUND, ADAPTER_NOT_FOUND, otherwise); ``deleting`` waits for that transaction, then finds a
        training job that continues it and refuses (ADAPTER_PROTECTED)."""
        ...

    async def continued_versions(self, base_model: str) -> set[str]:
        """The versions of ``base_model`` a training job that has not ended continues: those ``deleting`` refuses
        for that reason, by the same rule (a prune keeps them, and says so in a dry run)."""
        ...

    async def update(self, record: AdapterRecord) -> None: ...
