"""What online sessions leave behind once they end, swept periodically (engine.periodic): examples, live archives
and checkpoints.

**Examples** stay in PostgreSQL while their session runs (its worker reads them, replays its buffer from them, and
a worker that takes the session over reads them again) and for ``retention`` after it ended. Then they are deleted,
except the windows a version trained on when that version is published, or is an ancestor of a published one
(deleted ancestors included): a job continuing such a version reads its window again for its EWC Fisher and its
replay (engine.continual.version_data), and replay reads every ancestor's window too. Those are kept as long as
their version (or a descendant) is published; deleting the version frees them for a later sweep.

**Live archives** (``online/live/<session>/...`` in the artifact store): the serving side loads the newest one of a
running session. A worker keeps the last few it stored and deletes older ones, but the end of the session leaves
the last ones, and a worker that crashed leaves all of its own. **Checkpoints** (``online/checkpoints/<session>/...``)
are what a worker taking a running session over resumes from. Nothing reads either of a session that has ended (it
never runs again), or that does not exist: they go at the next sweep. A running session's are never touched.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from engine.domain import DataSource, OnlineExamplesSource
from engine.errors import NotFound
from engine.online.ports import OnlineStore
from engine.online.spec import CHECKPOINT_PREFIX, LIVE_PREFIX, OnlineSession
from engine.registry.ports import ArtifactStore

log = logging.getLogger(__name__)


class Sessions(Protocol):
    async def ended(self) -> list[OnlineSession]: ...

    async def job(self, session_id: str) -> OnlineSession:
        """NOT_FOUND for a session that does not exist."""
        ...


class VersionSources(Protocol):
    async def sources_in_use(self) -> list[DataSource]:
        """The data sources of the published versions and of their ancestors (engine.registry.AdapterRegistry)."""
        ...


@dataclass(frozen=True)
class Swept:
    sessions: int  # ended sessions past their retention whose examples were swept
    examples: int  # examples deleted
    archives: int  # live archives and checkpoints deleted


class OnlineRetention:
    def __init__(self, *, sessions: Sessions, store: OnlineStore, artifacts: ArtifactStore, versions: VersionSources,
                 retention: timedelta) -> None:
        self._sessions = sessions
        self._store = store
        self._artifacts = artifacts
        self._versions = versions
        self._retention = retention

    async def sweep(self) -> Swept:
        ended = await self._sessions.ended()
        now = datetime.now(UTC)
        due = [s for s in ended if (s.end_time or s.create_time) + self._retention <= now]
        examples = 0
        if due:
            kept = await self._windows_in_use()
            for session in due:
                examples += await self._store.delete_examples(session.id, kept.get(session.id, ()))
        archives = await self._sweep_archives({s.id for s in ended})
        if examples or archives:
            log.info("online sessions' data swept", extra={"sessions": len(due), "examples": examples,
                                                           "archives": archives})
        return Swept(len(due), examples, archives)

    async def _windows_in_use(self) -> dict[str, list[tuple[int, int]]]:
        kept: dict[str, list[tuple[int, int]]] = {}
        for source in await self._versions.sources_in_use():
            if isinstance(source, OnlineExamplesSource):
                kept.setdefault(source.session_id, []).append((source.first, source.last))
        return kept

    async def _sweep_archives(self, ended: set[str]) -> int:
        """The live archives and checkpoints of sessions that ended or do not exist."""
        by_session: defaultdict[str, list[str]] = defaultdict(list)
        for prefix in (LIVE_PREFIX, CHECKPOINT_PREFIX):
            for key in await self._artifacts.list_keys(f"{prefix}/"):
                by_session[key.removeprefix(f"{prefix}/").split("/", 1)[0]].append(key)
        doomed: list[str] = []
        for session_id, keys in by_session.items():
            if session_id not in ended:
                try:
                    await self._sessions.job(session_id)
                    continue  # it exists and has not ended (it ended since the list: the next sweep)
                except NotFound:
                    pass
            doomed.extend(keys)
        await self._artifacts.delete(doomed)
        return len(doomed)
