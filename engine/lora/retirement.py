"""The retirement of the versions a serving target's operations stop needing (RetiringTarget, under ServingTarget:
engine/lora/target.py; its pieces are engine/lora/target_pieces.py's).

A version an operation stops needing (replaced, rolled back from, a split's candidate) is retired (``_retire``): the
operation persists its retirement, due after a follow period plus the drain timeout (other serving processes route
to it until their next follow, then their requests get the drain timeout to end), and returns. Every serving process
of the target tends the retirements in its follow (``_follow_retirements``): it pushes the due time of a version its
gateway still has requests in flight to forward, and unloads one that is due, under the operations' locks, unless
the state read again there needs it. The retirements are the database's, not a process's: they survive the process
that wrote them stopping, every reconciliation keeps a version whose retirement is not due yet
(engine/lora/target_pieces.py ``_kept``), a failed attempt is tried again at the next follow, and a version retired
again is due after its latest retirement.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from engine.errors import EngineError
from engine.lora.state import Retirement, lora_name
from engine.lora.target_pieces import TargetPieces

log = logging.getLogger(__name__)


class RetiringTarget(TargetPieces):
    """The target's pieces with the retirements: persisted by the operations, carried out by the follows."""

    async def _retire(self, version: str) -> None:
        """Retire ``version``, which the state no longer needs (the operation holding the locks just switched away
        from it): persist its retirement, due after the grace, which a follow of any serving process of the target
        carries out (``_follow_retirements``); the operation does not wait for it. A version still needed, or not
        loaded, has nothing to retire; one retired again is due after this retirement (it served again since).
        Should the write fail (the switch is done and stays), the version is a stray the next reconciliation
        unloads."""
        if not version or version in self._wanted() or lora_name(self.base_model, version) not in self._loaded_names():
            return
        try:
            await self._store.retire(self.target, version, self._retire_grace_seconds)
        except EngineError as exc:
            log.warning("could not record a retirement", extra={"version": version, "error": exc.message})

    @property
    def _retire_grace_seconds(self) -> float:
        """How long a retired version stays loaded at least, and how far a process streaming from it pushes its
        retirement at each follow: every serving process of the target follows the new state within a follow period,
        then the requests it had sent the version are given the drain timeout to end (one still running is pushed
        again at the next follow, a drain timeout before the retirement is due)."""
        return self.config.follow_seconds + self.config.drain_timeout_seconds

    async def _follow_retirements(self) -> None:
        """The follow's part of the retirements: push forward those this process still streams from, and start
        unloading those due (``_retire_due``). An error is logged: the next follow tries again."""
        try:
            retiring = await self._store.retirements(self.target)
            streaming = await self._postpone_streaming(retiring)
            if any(r.due and r.version not in streaming for r in retiring) and (
                    self._retiring is None or self._retiring.done()):
                self._retiring = self._spawn(self._retire_due(), "unloading retired versions")
        except Exception:  # noqa: BLE001 - a follow must go on; the retirements stay persisted for the next one
            log.warning("could not tend the retiring versions; the next follow tries again", exc_info=True)

    async def _postpone_streaming(self, retiring: Sequence[Retirement]) -> set[str]:
        """Push the retirements of the versions this process's gateway still has requests in flight to a grace
        past now, so no serving process unloads them under those requests (a stream ends, however long it runs);
        the versions pushed."""
        streaming = {r.version for r in retiring if self._router.inflight(lora_name(self.base_model, r.version))}
        if streaming:
            await self._store.postpone(self.target, sorted(streaming), self._retire_grace_seconds)
        return streaming

    async def _retire_due(self) -> None:
        """Carry out the retirements due, under the operations' locks (in a task of its own: another process's
        operation may hold them for minutes), reading them and the state again there: unload each unless the state
        needs it again (``_discard``), and forget it then, in the same locked section. One this process streams from
        is pushed forward instead; one the engine failed to unload is kept for the next follow."""
        async with self._lock, self._store.serialised(self.target):
            await self._reload()
            retiring = await self._store.retirements(self.target)
            streaming = await self._postpone_streaming(retiring)
            for retirement in retiring:
                if retirement.due and retirement.version not in streaming:
                    await self._end_retirement(retirement.version)
            await self._notify()  # (the status lists what the engine has loaded)

    async def _end_retirement(self, version: str) -> None:
        """Unload ``version``, retired and due, unless the state needs it again; forget its retirement once settled
        (the locks held)."""
        name = lora_name(self.base_model, version)
        if await self._discard(name, keep=False):
            await self._store.retired(self.target, version)
            log.info("retired", extra={"lora_name": name, "unloaded": name not in self._loaded_names()})
