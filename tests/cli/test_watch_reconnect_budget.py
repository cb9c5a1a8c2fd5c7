"""A watch's reconnect budget (``reconnect_attempts``) is for one outage, not for the watch's whole life: any
message received after a reconnect (a status, a snapshot, an event) shows the reconnect worked and starts the
count again. So a long ``status --watch`` or ``canary start --wait`` survives any number of dropped connections
as long as each reconnect succeeds.

Held: a status watch whose every stream delivers a status and then drops (UNAVAILABLE, as a restarting proxy
would) keeps going well past ``reconnect_attempts`` drops."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from learning.v1 import lora_control_pb2 as lora
from learning.v1 import lora_control_pb2_grpc as lora_grpc
from learning_engine import errors
from learning_engine.client import AsyncClient


class DropsEveryStream(lora_grpc.LoraControlServiceServicer):
    """Each watch delivers the status, then the connection 'drops' (UNAVAILABLE)."""

    def __init__(self) -> None:
        self.opened = 0

    async def WatchLoraStatus(self, request, context):
        self.opened += 1
        yield lora.WatchLoraStatusResponse(status=lora.LoraStatus(active_version=f"v{self.opened}"))
        await context.abort(grpc.StatusCode.UNAVAILABLE, "connection dropped")


async def test_status_watch_survives_more_drops_than_reconnect_attempts_when_each_reconnect_succeeds():
    server = grpc.aio.server()
    servicer = DropsEveryStream()
    lora_grpc.add_LoraControlServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with AsyncClient(f"127.0.0.1:{port}", reconnect_attempts=3, reconnect_delay=0.01) as client:
            seen = []
            try:
                async with asyncio.timeout(30):
                    async for status in client.watch_lora_status():
                        seen.append(status.active_version)
                        if len(seen) == 10:
                            break
            except errors.Unavailable as exc:
                pytest.fail(f"gave up after {len(seen)} statuses, every reconnect having succeeded: {exc}")
            assert seen == [f"v{n}" for n in range(1, 11)]
    finally:
        await server.stop(None)
