"""Storage ports of the continual context: Fisher snapshots (``engine.stores.fisher_store`` implements it) and the
examples online sessions trained on (``engine.stores.online_store``)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from engine.continual.fisher import Diagonal
from engine.continual.spec import FisherSnapshot
from engine.domain import OnlineExamples


class OnlineExampleWindows(Protocol):
    async def window(self, session_id: str, first: int, last: int) -> OnlineExamples:
        """The examples of online session ``session_id`` with sequence numbers ``first``..``last``, in order, with
        their KTO labels when the session learnt by KTO."""
        ...


class FisherSnapshots(Protocol):
    """Fisher diagonals with their metadata; files are written atomically and verified (sha256) on load."""

    async def save(self, diagonal: Diagonal, draft: FisherSnapshot) -> FisherSnapshot:
        """Store ``diagonal``; returns ``draft`` with its id, path, digest and size filled in."""
        ...

    async def get(self, snapshot_id: str) -> FisherSnapshot:
        """NOT_FOUND (FISHER_SNAPSHOT_NOT_FOUND) if there is none."""
        ...

    async def load(self, snapshot_id: str) -> tuple[FisherSnapshot, Diagonal]:
        """The snapshot and its diagonal; DATA_LOSS if the file is missing or altered."""
        ...

    async def list(
        self, *, base_model: str, adapter_version: str, limit: int, before: tuple[datetime, str] | None
    ) -> list[FisherSnapshot]:
        """Newest first; ``before`` is the (create_time, id) of the previous page's last snapshot."""
        ...

    async def delete(self, snapshot_id: str) -> None: ...
