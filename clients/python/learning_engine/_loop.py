"""The event loop the blocking client (:mod:`learning_engine.sync`) runs its async twin's calls on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


class EventLoopThread:
    """An event loop in a daemon thread of its own; ``run`` and ``iterate`` block the calling thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="learning-engine-client", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._loop.is_running()

    def run(self, awaitable: Awaitable[T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(_await(awaitable), self._loop)
        return future.result()

    def iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        """The items of ``iterator``, each fetched on the loop; stopping early closes it there."""
        try:
            while True:
                try:
                    yield self.run(iterator.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None and self.running:
                self.run(aclose())

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable
