"""Ports of the adapter registry: where artifacts live, and what the serving side protects.

Implementations: ``engine.stores.artifacts_local`` / ``engine.stores.artifacts_s3`` for
:class:`ArtifactStore`, ``engine.stores.serving_state`` for :class:`ServingState`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


class ArtifactStore(Protocol):
    """Immutable objects under slash-separated keys, e.g. ``adapters/m/v1.0/adapter.tar.gz``.

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
        many. Only for a store no other process is writing to (called at start)."""
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


class ServingRole(enum.StrEnum):
    ACTIVE = "ACTIVE"
    KNOWN_GOOD = "KNOWN_GOOD"


class ServingState(Protocol):
    """The versions the serving side relies on: active and known-good per base model.

    LoraControl (issue 6) owns and writes this state; the registry only reads it, to
    refuse deleting or pruning those versions.
    """

    async def protected_versions(self, base_model: str) -> set[str]:
        """Versions of ``base_model`` that are active or the known-good rollback target."""
        ...
