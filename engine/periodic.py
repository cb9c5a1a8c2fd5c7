"""Work done every so often in the background of a process: a task that calls one step per period until stopped.

One mechanism for the serving process's loops (the pipelines' triggers, following the recorded LoRA state,
auto-rollback, a canary's decisions): a step that fails is logged and tried again at the next period (the
database restarting must not end the loop); a step that returns ``False`` ends it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from engine.errors import EngineError

log = logging.getLogger(__name__)


class Periodic:
    """Calls ``step`` every ``interval_seconds``, in a task named ``name``, after ``start`` and until ``stop``."""

    def __init__(self, name: str, step: Callable[[], Awaitable[object]], interval_seconds: float) -> None:
        self.name = name
        self._step = step
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        """Stop the loop and wait for it; a no-op from the loop's own task (its step is ending it)."""
        task, self._task = self._task, None
        if task is None or task is asyncio.current_task():
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                if await self._step() is False:
                    return
            except EngineError as exc:
                log.warning("%s failed", self.name, extra={"reason": exc.reason, "error": exc.message})
            except Exception:  # noqa: BLE001 - keep going: the next period may succeed
                log.exception("%s crashed", self.name)
