"""A blocking client: the same methods as :class:`AsyncClient`, run on a private event loop thread."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from typing import Any, Concatenate, ParamSpec, TypeVar

from learning_engine.client import AsyncClient

P = ParamSpec("P")
T = TypeVar("T")


def _blocking(fn: Callable[Concatenate[AsyncClient, P], Awaitable[T]]) -> Callable[Concatenate[Client, P], T]:
    @functools.wraps(fn)
    def call(self: Client, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(fn(self._async, *args, **kwargs))

    return call


def _blocking_iter(
    fn: Callable[Concatenate[AsyncClient, P], AsyncIterator[T]],
) -> Callable[Concatenate[Client, P], Iterator[T]]:
    @functools.wraps(fn)
    def call(self: Client, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        iterator = fn(self._async, *args, **kwargs)
        try:
            while True:
                try:
                    yield self._run(iterator.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._run(iterator.aclose())  # type: ignore[attr-defined]

    return call


class Client:
    """``with Client("host:port", token=...) as client: client.get_training_job(name)``"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="learning-engine-client", daemon=True
        )
        self._thread.start()
        self._async: AsyncClient = self._run(self._make(*args, **kwargs))

    @staticmethod
    async def _make(*args: Any, **kwargs: Any) -> AsyncClient:
        return AsyncClient(*args, **kwargs)  # the channel must be created on the loop that uses it

    def _run(self, awaitable: Awaitable[T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(_await(awaitable), self._loop)
        return future.result()

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._async.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    health = _blocking(AsyncClient.health)
    create_training_job = _blocking(AsyncClient.create_training_job)
    get_training_job = _blocking(AsyncClient.get_training_job)
    list_training_jobs = _blocking(AsyncClient.list_training_jobs)
    cancel_training_job = _blocking(AsyncClient.cancel_training_job)
    watch_training_job = _blocking_iter(AsyncClient.watch_training_job)
    get_training_metrics = _blocking(AsyncClient.get_training_metrics)
    create_fisher_job = _blocking(AsyncClient.create_fisher_job)
    get_fisher_job = _blocking(AsyncClient.get_fisher_job)
    list_fisher_jobs = _blocking(AsyncClient.list_fisher_jobs)
    watch_fisher_job = _blocking_iter(AsyncClient.watch_fisher_job)
    list_fisher_snapshots = _blocking(AsyncClient.list_fisher_snapshots)
    get_fisher_snapshot = _blocking(AsyncClient.get_fisher_snapshot)
    delete_fisher_snapshot = _blocking(AsyncClient.delete_fisher_snapshot)
    list_adapters = _blocking(AsyncClient.list_adapters)
    get_adapter = _blocking(AsyncClient.get_adapter)
    download_adapter = _blocking(AsyncClient.download_adapter)
    import_adapter = _blocking(AsyncClient.import_adapter)
    delete_adapter = _blocking(AsyncClient.delete_adapter)
    get_lora_status = _blocking(AsyncClient.get_lora_status)
    activate_adapter = _blocking(AsyncClient.activate_adapter)
    rollback_adapter = _blocking(AsyncClient.rollback_adapter)
    enable_lora = _blocking(AsyncClient.enable_lora)
    disable_lora = _blocking(AsyncClient.disable_lora)
    submit_feedback = _blocking(AsyncClient.submit_feedback)
    get_feedback_stats = _blocking(AsyncClient.get_feedback_stats)


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable
