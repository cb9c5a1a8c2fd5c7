"""The connection and the call plumbing every part of :class:`~learning_engine.client.AsyncClient` shares.

:class:`Calls` holds the channel, one stub per service and the token, and turns gRPC failures into
:mod:`learning_engine.errors` exceptions: unary calls under the client's deadline (serving operations under
``operation_timeout``), server streams, and job watches that resume after the last sequence they delivered when the
connection drops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, Self, TypeVar

import grpc
from grpc_health.v1 import health_pb2_grpc

from learning.v1 import (
    adapter_pb2_grpc,
    dataset_pb2_grpc,
    drift_pb2_grpc,
    evaluation_pb2_grpc,
    feedback_pb2_grpc,
    fisher_pb2_grpc,
    lora_control_pb2_grpc,
    online_pb2_grpc,
    pipeline_pb2_grpc,
    preparation_pb2_grpc,
    training_pb2_grpc,
)
from learning_engine import errors
from learning_engine.connection import DEFAULT_TARGET, Connection, TlsConfig

log = logging.getLogger(__name__)

T = TypeVar("T")
U = TypeVar("U")

# A dropped connection surfaces as UNAVAILABLE; those are the only failures a watch retries.
RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
CHUNK_SIZE = 1024 * 1024
UPLOAD_BYTES_PER_SECOND = 1024 * 1024  # the slowest link an upload's deadline allows for


async def each(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    """The items of a plain or an async iterable, as an async iterator.

    A plain one is advanced in a worker thread, never on the loop: a generator may block (reading a file, waiting
    for data), or call the blocking client whose event-loop thread runs this, without freezing every other call.
    """
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        iterator = iter(items)
        while (step := await asyncio.to_thread(_step, iterator)) is not None:
            yield step[0]


def _step(iterator: Iterator[T]) -> tuple[T] | None:
    """The next item, in a tuple (an item may be None), or None at the end: StopIteration cannot cross a future."""
    for item in iterator:
        return (item,)
    return None


class Calls:
    """What every call of the client needs: the channel, the stubs, deadlines and reconnects."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: TlsConfig | None = None,
        timeout: float | None = 30.0,
        operation_timeout: float | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        reconnect_attempts: int = 30,
        reconnect_delay: float = 0.5,
    ) -> None:
        self.connection = Connection(target, token, tls, tuple(channel_options))
        self.timeout = timeout
        # The serving operations (activate, rollback, enable, disable, evaluate, canaries, splits) load adapters,
        # run the gate and drain: minutes for a small model on a CPU. They run to their end on the server whether
        # or not the caller waits, so by default the caller waits as long as they take.
        self.operation_timeout = operation_timeout
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay = reconnect_delay
        self._channel = self.connection.open()
        self._metadata = self.connection.metadata()
        self.training = training_pb2_grpc.TrainingServiceStub(self._channel)
        self.fisher = fisher_pb2_grpc.FisherServiceStub(self._channel)
        self.adapters = adapter_pb2_grpc.AdapterServiceStub(self._channel)
        self.lora = lora_control_pb2_grpc.LoraControlServiceStub(self._channel)
        self.evaluation = evaluation_pb2_grpc.EvaluationServiceStub(self._channel)
        self.datasets = dataset_pb2_grpc.DatasetServiceStub(self._channel)
        self.pipelines = pipeline_pb2_grpc.PipelineServiceStub(self._channel)
        self.feedback = feedback_pb2_grpc.FeedbackServiceStub(self._channel)
        self.drift = drift_pb2_grpc.DriftServiceStub(self._channel)
        self.online = online_pb2_grpc.OnlineLearningServiceStub(self._channel)
        self.preparation = preparation_pb2_grpc.DataPreparationServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    # ---- call plumbing ------------------------------------------------------------

    def _upload_timeout(self, size_bytes: int) -> float | None:
        """An upload's deadline: the client's timeout plus a second per MiB sent (a slow link still finishes a
        large file); None when the client sets no timeout."""
        return None if self.timeout is None else self.timeout + size_bytes / UPLOAD_BYTES_PER_SECOND

    async def _unary(
        self, method: Callable[..., Awaitable[T]], request: Any, timeout: float | None = None
    ) -> T:
        return await self._call(method, request, timeout or self.timeout)

    async def _operation(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        """A serving operation: its deadline is ``operation_timeout`` (none by default)."""
        return await self._call(method, request, self.operation_timeout)

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any, timeout: float | None) -> T:
        try:
            return await method(request, metadata=self._metadata, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            raise errors.from_rpc_error(err) from None

    async def _stream(
        self,
        method: Callable[..., Any],
        request: Any,
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[Any]:
        call = method(request, metadata=self._metadata, timeout=timeout)
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as err:
            raise errors.from_rpc_error(err) from None
        finally:
            call.cancel()

    def _ready_timeout(self, attempt: int) -> float:
        """How long reconnect ``attempt`` (1, 2, ...) waits for the channel to be ready: as long as the pause before
        it, at least a second (a connection to make) and at most 5 s (the channel's longest reconnect backoff, so
        it tries at least once in that time)."""
        return min(max(self.reconnect_delay * attempt, 1.0), 5.0)

    async def _wait_ready(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the channel to be ready; else raise Unavailable."""
        try:
            async with asyncio.timeout(timeout):
                await self._channel.channel_ready()
        except TimeoutError:
            raise errors.Unavailable(
                grpc.StatusCode.UNAVAILABLE, f"{self.connection.target} not reachable within {timeout:g}s"
            ) from None

    async def _resumable(
        self,
        method: Callable[..., Any],
        make_request: Callable[[int], Any],
        after_sequence: int,
        sequence_of: Callable[[Any], int | None],
    ) -> AsyncIterator[Any]:
        """Watch a job (or the serving status); after UNAVAILABLE, re-open it after the last sequence seen.

        Each re-opened stream starts with a fresh snapshot, which is delivered too. Each reconnect attempt waits a
        bounded time for the server (:meth:`_ready_timeout`) and counts as one failure when it is not there; after
        ``reconnect_attempts`` failures in a row the watch raises Unavailable. Any message received after a
        reconnect shows it worked and starts the count again: the budget is for one outage, not the watch's life.
        """
        last, failures = after_sequence, 0
        while True:
            try:
                if failures:
                    await self._wait_ready(self._ready_timeout(failures))
                async for message in self._stream(method, make_request(last)):
                    failures = 0  # the (re)connection works
                    sequence = sequence_of(message)
                    if sequence is not None:
                        if sequence <= last:
                            continue  # already delivered before the reconnect
                        last = sequence
                    yield message
                return
            except errors.LearningEngineError as err:
                if err.code not in RECONNECT_CODES or failures >= self.reconnect_attempts:
                    raise
                failures += 1
                log.info("watch interrupted; resuming", extra={"after_sequence": last, "attempt": failures})
                await asyncio.sleep(min(self.reconnect_delay * failures, 5.0))
