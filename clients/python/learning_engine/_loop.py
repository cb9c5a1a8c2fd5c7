"""The event loop the blocking client (:mod:`learning_engine.sync`) runs its async twin's calls on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import TypeVar

import grpc

from learning_engine import errors

T = TypeVar("T")

# How long a call interrupted by Ctrl-C, and the calls still running when the client closes, get to end on the loop
# once cancelled (their gRPC calls are cancelled at once; this bounds only a call that will not end).
CANCEL_TIMEOUT = 5.0


class EventLoopThread:
    """An event loop in a daemon thread of its own; ``run`` and ``iterate`` block the calling thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()  # each call is queued before close's shutdown (which cancels it) or refused
        self._closed = False
        self._thread = threading.Thread(target=self._loop.run_forever, name="learning-engine-client", daemon=True)
        self._thread.start()

    def run(self, awaitable: Awaitable[T]) -> T:
        """``awaitable``'s result, run on the loop. Interrupted (Ctrl-C), the call is cancelled on the loop and given
        a moment to end before the interrupt goes on, so the client stays usable. A call :meth:`close` cancels, or
        one made after it, raises errors.Cancelled."""
        ended = threading.Event()
        started: list[asyncio.Task[T]] = []

        def start() -> None:
            task = self._loop.create_task(_await(awaitable))
            task.add_done_callback(lambda _: ended.set())
            started.append(task)

        with self._lock:
            refusal = self._refusal()
            if refusal is not None:
                _discard(awaitable)
                raise refusal
            self._loop.call_soon_threadsafe(start)
        try:
            ended.wait()
        except BaseException:  # Ctrl-C: cancel the call there (this callback runs after start, in order) first
            self._loop.call_soon_threadsafe(lambda: started[0].cancel())
            ended.wait(CANCEL_TIMEOUT)
            raise
        try:
            return started[0].result()
        except asyncio.CancelledError:  # close cancelled it (a request iterable's error is raised as it is)
            why = ": the client was closed" if self._closed else ""
            raise errors.Cancelled(grpc.StatusCode.CANCELLED, f"the call was cancelled{why}") from None

    def make(self, factory: Callable[[], T]) -> T:
        """What ``factory()`` makes, made on the loop: what belongs to the loop that runs it (a gRPC channel, the
        async client that holds one) must be made there."""
        return self.run(_made(factory))

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
            if aclose is not None and not self._closed:  # close closed it with the loop's other async generators
                self.run(aclose())

    def close(self, cleanup: Callable[[], Awaitable[object]] | None = None) -> None:
        """Cancel the calls still running and let them end (their callers get errors.Cancelled), await ``cleanup``,
        close the async generators left, then stop the loop and its thread; later calls raise errors.Cancelled."""
        with self._lock:
            if self._closed:
                return
            if self._on_loop():
                raise _waits_for_itself()
            self._closed = True
            shutdown = asyncio.run_coroutine_threadsafe(self._shutdown(cleanup), self._loop)
        try:
            shutdown.result()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    async def _shutdown(self, cleanup: Callable[[], Awaitable[object]] | None) -> None:
        running = asyncio.all_tasks() - {asyncio.current_task()}
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=CANCEL_TIMEOUT)
        if cleanup is not None:
            await cleanup()
        await self._loop.shutdown_asyncgens()

    def _refusal(self) -> Exception | None:
        """Why a call cannot be made now, if it cannot."""
        if self._on_loop():
            return _waits_for_itself()
        if self._closed:
            return errors.Cancelled(grpc.StatusCode.CANCELLED, "the client is closed")
        return None

    def _on_loop(self) -> bool:
        return threading.get_ident() == self._thread.ident


def _waits_for_itself() -> RuntimeError:
    """A blocking call made on the loop's own thread (an async iterable of the caller's, iterated there, calling the
    client) would wait for that thread forever."""
    return RuntimeError("a blocking client call from its own event-loop thread (e.g. in an async iterable given to it)"
                        " would wait for itself; use the AsyncClient there")


def _discard(awaitable: Awaitable[object]) -> None:
    """Close a refused call's coroutine, never to be awaited (no "never awaited" warning)."""
    if isinstance(awaitable, Coroutine):
        awaitable.close()


async def _made(factory: Callable[[], T]) -> T:
    return factory()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable
