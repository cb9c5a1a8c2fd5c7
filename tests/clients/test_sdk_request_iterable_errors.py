"""An exception raised by the caller's own request iterable (the batches of stream_feedback or stream_examples, a
file read of an upload) reaches the caller as it is. gRPC ends the call by cancelling it and drops the exception:
the async client raised a bare asyncio.CancelledError (a BaseException ``except Exception`` misses, looking like the
task's own cancellation), the blocking client errors.Cancelled "the call was cancelled"; the cause was lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from learning.v1 import feedback_pb2, online_pb2, online_pb2_grpc
from learning_engine import AsyncClient, Client
from tests.clients.test_sdk_sync_batches import event


class BadBatch(ValueError):
    pass


def batches() -> Iterator[list[feedback_pb2.FeedbackEvent]]:
    yield [event(1)]
    raise BadBatch("line 2 of events.jsonl is not JSON")


async def async_batches() -> AsyncIterator[list[feedback_pb2.FeedbackEvent]]:
    yield [event(1)]
    raise BadBatch("line 2 of events.jsonl is not JSON")


async def test_the_iterables_exception_is_raised_by_the_async_client(client) -> None:
    async with AsyncClient(f"127.0.0.1:{client.app.port}", timeout=10) as sdk:
        for made in (batches, async_batches):
            with pytest.raises(BadBatch, match="line 2"):
                await sdk.stream_feedback(made())
        assert await sdk.health() == "SERVING"  # the client is still usable
        assert (await sdk.stream_feedback([[event(2)]])).stored == 1


async def test_the_iterables_exception_is_raised_by_the_blocking_client(client) -> None:
    def use() -> str:
        with Client(f"127.0.0.1:{client.app.port}", timeout=10) as sdk:
            with pytest.raises(BadBatch, match="line 2"):
                sdk.stream_feedback(batches())
            return sdk.health()

    assert await asyncio.to_thread(use) == "SERVING"


class Drain(online_pb2_grpc.OnlineLearningServiceServicer):
    """StreamExamples reading every request (the real one needs a trained version and a session)."""

    async def StreamExamples(self, request_iterator, context):  # noqa: N802 - the RPC's name
        async for _ in request_iterator:
            yield online_pb2.StreamExamplesResponse()


async def test_the_iterables_exception_ends_a_bidirectional_stream_too() -> None:
    server = grpc.aio.server()
    online_pb2_grpc.add_OnlineLearningServiceServicer_to_server(Drain(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    def examples() -> Iterator[list[online_pb2.OnlineExample]]:
        yield [online_pb2.OnlineExample(prompt="p", target="t")]
        raise BadBatch("example 2 has no prompt")

    try:
        async with AsyncClient(f"127.0.0.1:{port}", timeout=10) as sdk:
            with pytest.raises(BadBatch, match="example 2"):
                async for _ in sdk.stream_examples("onlineSessions/s", examples()):
                    pass

        def use() -> None:
            with Client(f"127.0.0.1:{port}", timeout=10) as sdk, pytest.raises(BadBatch, match="example 2"):
                for _ in sdk.stream_examples("onlineSessions/s", examples()):
                    pass

        await asyncio.to_thread(use)
    finally:
        await server.stop(0)
