"""Work done every so often in the background of a process: a task that calls one step per period until stopped.

One mechanism for the serving process's loops (the pipelines' triggers, following the recorded LoRA state,
auto-rollback, a canary's decisions): a step that fails is logged and tried again at the next period (the
database restarting must not end the loop), and so is one that ends with a cancellation of something it awaited
(only ``stop`` ends the loop that way: an escaped CancelledError would end it silently); a step that returns
``False`` ends it.
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

    @property
    def running(self) -> bool:
        """Whether the loop is on: started, and neither stopped nor ended."""
        return self._task is not None and not self._task.done()

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
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # stop(): the loop itself is cancelled
                # A cancellation the loop was not asked for: something the step awaited was cancelled (a task
                # another owner stopped, a library's timeout). As any failure: it must not end the loop silently.
                log.exception("%s crashed: a cancellation of what it awaited", self.name)
