"""grpc.health.v1 must not say SERVING before the server has probed its dependencies: the first answer a client
(a Kubernetes readiness probe, `learning-engine health`, a load balancer) gets while PostgreSQL does not answer
must be NOT_SERVING, as it is after the first check. grpc_health's servicer starts with "" SERVING, and the server
listened before the first round of probes had answered (for up to health_check_timeout_seconds)."""

from __future__ import annotations

import asyncio
import socket

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.engine_wiring import Owned
from server.health_checks import NEEDS
from tests.server import conftest as server_fixtures

make_memory_server = server_fixtures.make_memory_server  # a server over in-memory stores (tests/server's fixture)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_health_is_not_serving_before_the_first_probe_answers(make_memory_server, monkeypatch) -> None:
    async def database_down() -> object:  # a PostgreSQL that does not answer: the probe times out
        await asyncio.sleep(3600)

    monkeypatch.setattr(Owned, "probes", lambda self: {"postgresql": database_down})
    port = _free_port()
    starting = asyncio.create_task(make_memory_server(port=port, health_check_timeout_seconds=2.0))
    service = "learning.v1.FeedbackService"  # needs PostgreSQL alone
    assert NEEDS[service] == ("postgresql",)
    seen: list[tuple[str, str]] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while not starting.done():
            for name in ("", service):
                try:
                    answer = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=0.5)
                    seen.append((name, health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)))
                except grpc.aio.AioRpcError:
                    pass  # not listening yet
            await asyncio.sleep(0.05)
        await starting
        after = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
    assert health_pb2.HealthCheckResponse.ServingStatus.Name(after.status) == "NOT_SERVING"
    assert seen, "the server answered no health check while starting"
    serving = [answer for answer in seen if answer[1] == "SERVING"]
    assert not serving, f"SERVING while PostgreSQL had not answered a probe: {serving[:3]}"


async def test_health_is_serving_once_the_first_probes_answer(make_memory_server, monkeypatch) -> None:
    async def database_up() -> object:
        return True

    monkeypatch.setattr(Owned, "probes", lambda self: {"postgresql": database_up})
    client = await make_memory_server()
    stub = health_pb2_grpc.HealthStub(client.channel)
    for name in ("", *NEEDS):
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=1)
        assert health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status) == "SERVING", name
