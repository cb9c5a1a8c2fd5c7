"""``learning-engine-server worker`` exports its job spans and serves /metrics as a serving process does.

In the split setup (API replicas with ``embedded_worker`` false) every training job runs in a worker: its spans
(training_job.run/prepare/train/epoch/publish) and the per-job training series exist only there.
"""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import pytest
from opentelemetry import trace

import server.main as server_main
import server.telemetry as server_telemetry
from server.engine_wiring import Owned
from server.settings import Settings
from server.startup import StartError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch):
    """start_worker without PostgreSQL: build_engine does nothing (the worker's own start-up is under test)."""

    async def build_engine(settings: Settings, owned: Owned, **kwargs) -> None:
        return None

    monkeypatch.setattr(server_main, "build_engine", build_engine)


async def test_a_worker_exports_traces_to_its_otlp_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            no_engine) -> None:
    installed: list[object] = []
    monkeypatch.setattr(server_telemetry, "_configured_endpoint", None)
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)
    settings = Settings(data_dir=tmp_path, otlp_endpoint="http://127.0.0.1:4317")
    worker = await server_main.start_worker(settings)
    try:
        assert len(installed) == 1, (
            f"learning-engine-server worker installed {len(installed)} tracer providers for otlp_endpoint "
            f"{settings.otlp_endpoint}; its job spans need exactly one exporting there")
    finally:
        for provider in installed:
            provider.shutdown()  # type: ignore[attr-defined]
        await worker.stop()


async def test_a_worker_serves_metrics_on_its_metrics_port_until_it_stops(tmp_path: Path, no_engine) -> None:
    port = _free_port()
    worker = await server_main.start_worker(Settings(data_dir=tmp_path, metrics_port=port))
    try:
        async with aiohttp.ClientSession() as http:
            try:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    status, body = response.status, await response.text()
            except aiohttp.ClientConnectorError as exc:
                pytest.fail(f"a worker with metrics_port {port} serves no /metrics: {exc}")
        assert status == 200, f"/metrics of the worker answered {status}: {body[:300]!r}"
        assert "learning_engine_training_steps_total" in body, (
            f"the worker's /metrics lacks the training series: {body[:300]!r}")
    finally:
        await worker.stop()
    with socket.socket() as s:  # stopped with the worker: the port is free again
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            pytest.fail(f"the worker's /metrics still holds port {port} after stop(): {exc}")


async def test_a_worker_checks_metrics_tokens_like_a_serving_process(tmp_path: Path, no_engine) -> None:
    import hashlib

    port = _free_port()
    token = "t" * 32
    tokens = [{"name": "ops", "role": "reader", "sha256": hashlib.sha256(token.encode()).hexdigest()}]
    worker = await server_main.start_worker(Settings(data_dir=tmp_path, metrics_port=port, auth_tokens=tokens))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 401, f"/metrics of a worker with auth_tokens answered {response.status}"
            async with http.get(f"http://127.0.0.1:{port}/metrics",
                                headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 200, f"a reader's token got {response.status} from the worker's /metrics"
    finally:
        await worker.stop()


async def test_a_worker_on_a_taken_metrics_port_says_so_and_releases_what_it_started(
        tmp_path: Path, no_engine) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartError, match=f"metrics port {port} is in use; set metrics_port"):
            await server_main.start_worker(Settings(data_dir=tmp_path, metrics_port=port))
    # the data dir's lock went with the failed start: another worker may start there
    worker = await server_main.start_worker(Settings(data_dir=tmp_path))
    await worker.stop()
