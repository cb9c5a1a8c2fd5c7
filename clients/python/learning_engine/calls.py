"""The connection and the call plumbing every part of :class:`~learning_engine.client.AsyncClient` shares.

:class:`Calls` holds the channel, one stub per service and the token, and turns gRPC failures into
:mod:`learning_engine.errors` exceptions: unary calls under the client's deadline (serving operations under
``operation_timeout``), server streams, and job watches that resume after the last sequence they delivered when the
connection drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from typing import Any, Self, TypeVar

import grpc
from google.protobuf.message import Message
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


def _handshake_failed(err: errors.LearningEngineError) -> bool:
    """UNAVAILABLE from a TLS handshake that failed: the server's certificate did not verify against the CA the client
    trusts (grpc-core says "Tls handshake failed ... CERTIFICATE_VERIFY_FAILED"). Trying again cannot change that, so
    a watch does not spend its reconnect budget (minutes) on it. A server refusing the client's certificate closes
    the connection without saying why ("Socket closed"), which looks like any dropped connection, and is retried."""
    return err.code is grpc.StatusCode.UNAVAILABLE and "handshake failed" in err.message.lower()
CHUNK_SIZE = 1024 * 1024
UPLOAD_BYTES_PER_SECOND = 1024 * 1024  # the slowest link a transfer's deadline (upload or download) allows for


def check_timeout(seconds: float | None, name: str = "timeout") -> float | None:
    """``seconds`` if it is a deadline a call can have (None: no deadline); else ValueError naming ``name``: 0, a
    negative number or nan would fail every call at once, and inf is no deadline, which None says."""
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{name} must be a positive, finite number of seconds, not {seconds!r}")
    return seconds


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


class _RequestStream:
    """A call's request stream: the items of the caller's iterable (:func:`each`), keeping the exception it raises.

    gRPC ends the call when its request iterable raises, by cancelling it, and drops the exception: the call then
    fails as cancelled (asyncio.CancelledError). :func:`_typed_failures` raises the kept exception instead."""

    def __init__(self, items: Iterable[Any] | AsyncIterable[Any]) -> None:
        self._items = items
        self.error: Exception | None = None

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            async for item in each(self._items):
                yield item
        except Exception as exc:
            self.error = exc
            raise  # gRPC cancels the call: nothing half-sent is taken for the whole


def _request_stream(request: Any) -> _RequestStream | None:
    """A request that is no message is the iterable of a client-streaming call's messages."""
    return None if isinstance(request, Message) else _RequestStream(request)


@contextlib.contextmanager
def _typed_failures(requests: _RequestStream | None) -> Iterator[None]:
    """A failed call as its :mod:`learning_engine.errors` exception: a status, or any other failure of gRPC's
    (errors.from_rpc_error); the exception the caller's request iterable raised in place of the cancellation gRPC
    made of it (a cancellation of the caller's own task stays one)."""
    try:
        yield
    except asyncio.CancelledError:
        if requests is None or requests.error is None or _cancelling():
            raise
        raise requests.error from None
    except (grpc.aio.AioRpcError, grpc.aio.BaseError) as err:
        typed = errors.from_rpc_error(err)
        if requests is not None and requests.error is not None and typed.code == grpc.StatusCode.CANCELLED:
            raise requests.error from None
        raise typed from None


def _cancelling() -> bool:
    """Whether the running task is being cancelled (by its caller, not by gRPC)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Calls:
    """What every call of the client needs: the channel, the stubs, deadlines and reconnects."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        actor: str | None = None,
        tls: TlsConfig | None = None,
        timeout: float | None = 30.0,
        operation_timeout: float | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        reconnect_attempts: int = 30,
        reconnect_delay: float = 0.5,
    ) -> None:
        self.timeout = check_timeout(timeout)
        # The serving operations (activate, rollback, enable, disable, evaluate, canaries, splits) load adapters,
        # run the gate and drain: minutes for a small model on a CPU. They run to their end on the server whether
        # or not the caller waits, so by default the caller waits as long as they take.
        self.operation_timeout = check_timeout(operation_timeout, "operation_timeout")
        self.connection = Connection(target, token, tls, tuple(channel_options), actor)
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
        """A transfer's deadline, an upload's or a download's (:meth:`_download`): the client's timeout plus a
        second per MiB (a slow link still finishes a large file); None when the client sets no timeout."""
        return None if self.timeout is None else self.timeout + size_bytes / UPLOAD_BYTES_PER_SECOND

    async def _unary(
        self, method: Callable[..., Awaitable[T]], request: Any, timeout: float | None = None
    ) -> T:
        return await self._call(method, request, timeout or self.timeout)

    async def _operation(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        """A serving operation: its deadline is ``operation_timeout`` (none by default)."""
        return await self._call(method, request, self.operation_timeout)

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any, timeout: float | None) -> T:
        requests = _request_stream(request)
        with _typed_failures(requests):
            response = await method(requests or request, metadata=self._metadata, timeout=timeout)
        return response

    async def _stream(
        self,
        method: Callable[..., Any],
        request: Any,
        *,
        timeout: float | None = None,
    ) -> AsyncGenerator[Any, None]:
        requests = _request_stream(request)
        with _typed_failures(requests):
            call = method(requests or request, metadata=self._metadata, timeout=timeout)
            try:
                async for item in call:
                    yield item
            finally:
                call.cancel()

    async def _download(
        self, method: Callable[..., Any], request: Any, size_of: Callable[[Any], int]
    ) -> AsyncIterator[Any]:
        """A server stream that carries a file: the deadline of an upload of its size (:meth:`_upload_timeout`),
        counted from its start. The size is known once the first message has come (``size_of`` it): until then
        the client's timeout. gRPC cannot move a call's deadline once made, so it is kept here, on each wait for
        the server (the time the caller takes over a message is not counted)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        limit, first = self.timeout, True
        messages = self._stream(method, request)
        try:
            while True:
                timer = asyncio.timeout_at(None if limit is None else started + limit)
                try:
                    async with timer:
                        message = await anext(messages)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    if not timer.expired():
                        raise
                    raise errors.DeadlineExceeded(
                        grpc.StatusCode.DEADLINE_EXCEEDED, f"the transfer did not end within {limit:g}s"
                    ) from None
                if first:  # the size is known now
                    limit, first = self._upload_timeout(size_of(message)), False
                yield message  # outside the timer: it must not cancel whatever the caller does meanwhile
        finally:
            await messages.aclose()

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
                if err.code not in RECONNECT_CODES or failures >= self.reconnect_attempts or _handshake_failed(err):
                    raise
                failures += 1
                log.info("watch interrupted; resuming", extra={"after_sequence": last, "attempt": failures})
                await asyncio.sleep(min(self.reconnect_delay * failures, 5.0))
