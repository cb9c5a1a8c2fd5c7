"""A watch whose server is gone gives up: after ``reconnect_attempts`` failed reconnects it raises Unavailable
(the CLI exits 14) instead of waiting forever for a server that never comes back. Each reconnect attempt waits a
bounded time for the channel to be ready and counts as one failure when it is not; a server that comes back
within the budget is still reconnected to.

Held: a watch of a server that was never there, the SDK's ``handle.events()`` (what ``handle.wait()`` follows)
on one, and a status watch whose server went away after the first status all raise Unavailable well within
their time limit; a status watch whose server comes back after a short outage resumes (a guard: the bound must
not cost reconnects that would work)."""

from __future__ import annotations

import asyncio
import socket
import time

import grpc
import pytest

from learning.v1 import lora_control_pb2 as lora
from learning.v1 import lora_control_pb2_grpc as lora_grpc
from learning_engine import errors
from learning_engine.client import AsyncClient
from learning_engine.handles import AsyncTrainingJobHandle
from tests.fixtures.tcp_proxy import TcpProxy

LIMIT = 20.0  # seconds: a few bounded attempts take a few seconds; a hang runs into this


def dead_target() -> str:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class StatusThenQuiet(lora_grpc.LoraControlServiceServicer):
    """Each watch delivers one status (numbered by the streams opened), then stays open without news."""

    def __init__(self) -> None:
        self.opened = 0

    async def WatchLoraStatus(self, request, context):
        self.opened += 1
        yield lora.WatchLoraStatusResponse(status=lora.LoraStatus(active_version=f"v{self.opened}"))
        await asyncio.Event().wait()


async def lora_server(servicer: lora_grpc.LoraControlServiceServicer) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    lora_grpc.add_LoraControlServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_job_watch_of_a_server_that_is_not_there_raises_unavailable():
    async with AsyncClient(dead_target(), reconnect_attempts=2, reconnect_delay=0.01) as client:
        started = time.monotonic()
        with pytest.raises(errors.Unavailable):
            async with asyncio.timeout(LIMIT):
                async for _ in client.watch_training_job("trainingJobs/x"):
                    pass
        assert time.monotonic() - started < LIMIT


async def test_handle_events_of_a_server_that_is_not_there_raise_unavailable():
    async with AsyncClient(dead_target(), timeout=2, reconnect_attempts=2, reconnect_delay=0.01) as client:
        with pytest.raises(errors.Unavailable):
            async with asyncio.timeout(LIMIT):
                await AsyncTrainingJobHandle(client, "trainingJobs/x").events().__anext__()


async def test_status_watch_gives_up_when_its_server_goes_away_for_good():
    server, port = await lora_server(StatusThenQuiet())
    proxy = await TcpProxy(port).start()
    try:
        async with AsyncClient(f"127.0.0.1:{proxy.port}", reconnect_attempts=2, reconnect_delay=0.01) as client:
            seen = []
            with pytest.raises(errors.Unavailable):
                async with asyncio.timeout(LIMIT):
                    async for status in client.watch_lora_status():
                        seen.append(status.active_version)
                        await proxy.pause()  # gone, and never back
            assert seen == ["v1"]
    finally:
        await proxy.close()
        await server.stop(None)


async def test_status_watch_resumes_when_its_server_comes_back_within_the_budget():
    server, port = await lora_server(StatusThenQuiet())
    proxy = await TcpProxy(port).start()
    try:
        async with AsyncClient(f"127.0.0.1:{proxy.port}", reconnect_attempts=10, reconnect_delay=0.1) as client:
            seen = []
            async with asyncio.timeout(LIMIT):
                async for status in client.watch_lora_status():
                    seen.append(status.active_version)
                    if len(seen) == 2:
                        break
                    await proxy.pause()
                    asyncio.get_running_loop().call_later(1.5, lambda: asyncio.ensure_future(proxy.resume()))
            assert seen == ["v1", "v2"]
    finally:
        await proxy.close()
        await server.stop(None)
