"""Health tells the truth: a service is NOT_SERVING while PostgreSQL, the artifact store or (LoraControl) the serving
engine is really down, and SERVING again when it is back; the gateway's /health follows the serving engine."""

from __future__ import annotations

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine.serving.reference_model import ReferenceModel
from learning.v1 import lora_control_pb2, lora_control_pb2_grpc
from server.health_checks import NEEDS
from server.services import SERVICE_NAMES
from server.version import SERVER_VERSION
from tests.fixtures import own_postgres as pg
from tests.fixtures.serving import start_backend
from tests.fixtures.tcp_proxy import TcpProxy
from tests.server.conftest import TINY
from tests.server.test_adapter_service import s3_settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _until(health: health_pb2_grpc.HealthStub, expected: dict[str, int]) -> None:
    """Wait (on Health.Watch, no polling) until every named service reports its expected status."""
    for service, status in expected.items():
        async for reply in health.Watch(health_pb2.HealthCheckRequest(service=service), timeout=60):
            if reply.status == status:
                break


def _expect(down: str) -> dict[str, int]:
    """Each service's status while ``down`` is unreachable ("" for none), the whole server included."""
    statuses = {service: NOT_SERVING if down in needs else SERVING for service, needs in NEEDS.items()}
    statuses[""] = SERVING if down == "" else NOT_SERVING
    return statuses


async def _statuses(health: health_pb2_grpc.HealthStub) -> dict[str, int]:
    return {s: (await health.Check(health_pb2.HealthCheckRequest(service=s))).status for s in (*NEEDS, "")}


@pytest.mark.slow
async def test_services_follow_their_dependencies_down_and_up(own_postgres, make_server, seaweedfs, s3_bucket,
                                                              tiny_model_dir):
    # own_postgres first: set up before the server and so torn down after it (a server stopped after its database
    # waits about a minute for the job queue's worker to give up on it)
    pgdata, database_url = own_postgres
    backend = await start_backend(ReferenceModel(tiny_model_dir, TINY))
    serving = await TcpProxy(backend.port).start()
    s3_host, s3_port = seaweedfs.endpoint.rsplit(":", 1)
    s3 = await TcpProxy(int(s3_port), s3_host).start()
    try:
        client = await make_server(
            database_url=database_url, serving_url=f"http://127.0.0.1:{serving.port}",
            **s3_settings(f"127.0.0.1:{s3.port}", s3_bucket),
            health_check_interval_seconds=0.2, health_check_timeout_seconds=2,
        )
        health = health_pb2_grpc.HealthStub(client.channel)
        gateway = f"http://127.0.0.1:{client.app.owned.lora.gateway.port}/health"
        assert await _statuses(health) == _expect("")

        await pg.stop_postgres(pgdata)
        await _until(health, _expect("postgresql"))
        assert await _statuses(health) == _expect("postgresql")
        with_db = lora_control_pb2_grpc.LoraControlServiceStub(client.channel)
        await pg.start_postgres(pgdata)
        await _until(health, _expect(""))

        await s3.pause()
        await _until(health, _expect("artifact_store"))
        assert await _statuses(health) == _expect("artifact_store")
        await s3.resume()
        await _until(health, _expect(""))

        async with aiohttp.ClientSession() as http:
            async with http.get(gateway) as response:
                assert response.status == 200
            await serving.pause()
            await _until(health, _expect("serving_engine"))
            assert await _statuses(health) == _expect("serving_engine")
            async with http.get(gateway) as response:
                assert response.status == 503
            await serving.resume()
            await _until(health, _expect(""))
            async with http.get(gateway) as response:
                assert response.status == 200

        status = (await with_db.GetLoraStatus(lora_control_pb2.GetLoraStatusRequest())).status
        assert status.server_version == SERVER_VERSION and SERVER_VERSION[0].isdigit()
    finally:
        await serving.close()
        await s3.close()
        await backend.stop()


async def test_graceful_shutdown_wins_over_the_checker(make_server):
    client = await make_server(health_check_interval_seconds=0.05)
    health = health_pb2_grpc.HealthStub(client.channel)
    assert (await health.Check(health_pb2.HealthCheckRequest())).status == SERVING
    await client.app.health.enter_graceful_shutdown()
    await client.app.health_checks.check()  # a round after the shutdown began changes nothing
    try:
        status = (await health.Check(health_pb2.HealthCheckRequest())).status
    except grpc.aio.AioRpcError:
        return
    assert status == NOT_SERVING


def test_every_public_service_says_what_it_needs() -> None:
    assert set(NEEDS) == set(SERVICE_NAMES)  # a service missing here would answer health checks NOT_FOUND
