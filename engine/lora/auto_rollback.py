"""Auto-rollback: roll back when the active version's users complain more than the known-good's.

Compares the negative-feedback rate of the active version since it went live with the
known-good version's over a look-back window, through the ``FeedbackRates`` port. With at
least ``min_samples`` ratings of each version and a rate above the known-good's plus
``margin``, it rolls back and records why (actor ``auto-rollback``): from the version it judged only,
nothing if another one became active meanwhile (LoraController.rollback_from).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from engine.lora.controller import LoraController
from engine.lora.state import FeedbackRates, OperationKind, OperationRecord
from engine.periodic import Periodic
from engine.thresholds import at_most

log = logging.getLogger(__name__)

ACTOR = "auto-rollback"


@dataclass(frozen=True)
class AutoRollbackConfig:
    margin: float = 0.1
    min_samples: int = 50
    interval_seconds: float = 60.0
    baseline_window: timedelta = timedelta(days=7)


class AutoRollback:
    def __init__(self, controller: LoraController, rates: FeedbackRates, config: AutoRollbackConfig,
                 history: Callable[[str, int], Awaitable[list[OperationRecord]]]) -> None:
        self._controller = controller
        self._rates = rates
        self._config = config
        self._history = history  # LoraStateStore.history
        self._periodic = Periodic("lora-auto-rollback", self.check_once, config.interval_seconds)

    async def _live_since(self, version: str) -> datetime:
        for op in await self._history(self._controller.target, 200):
            if op.error is None and op.version == version and op.kind in (
                OperationKind.ACTIVATE, OperationKind.ROLLBACK, OperationKind.AUTO_ROLLBACK,
                OperationKind.CANARY_PROMOTE,
            ):
                return op.start_time
        return datetime.now(UTC) - self._config.baseline_window

    async def check_once(self) -> str:
        """Roll back if warranted; returns the reason it did, or "" if it did not."""
        st = self._controller.state
        active, good = st.active_version, st.known_good_version
        if not st.enabled or not active or not good or active == good:
            return ""
        since = await self._live_since(active)
        now = datetime.now(UTC)
        new = await self._rates.counts(st.base_model, active, since)
        old = await self._rates.counts(st.base_model, good, now - self._config.baseline_window)
        if min(new.total, old.total) < self._config.min_samples:  # no evidence about one side: no comparison
            return ""
        if at_most(new.negative_rate, old.negative_rate + self._config.margin):
            return ""
        reason = (f"negative feedback rate of {active} is {new.negative_rate:.1%} over {new.total} ratings, "
                  f"above known-good {good}'s {old.negative_rate:.1%} over {old.total} by more than "
                  f"{self._config.margin:.1%}")
        if await self._controller.rollback_from(active, actor=ACTOR, reason=reason) is None:
            log.info("auto-rollback skipped: the active version changed while it was judged",
                     extra={"judged": active})
            return ""
        log.warning("auto-rollback", extra={"from": active, "to": good, "reason": reason})
        return reason

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
