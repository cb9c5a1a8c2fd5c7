"""A client that leaves mid-stream (a user pressing "stop") is the client's doing, not the serving engine's error:
the gateway counts it as HTTP 499 (client closed request), which is no error in a traffic split's tally, so a
healthy canary candidate is not rolled back for it; a stream the engine breaks off stays a 502, the engine's error.
Against a stub serving engine (no model)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from engine import telemetry
from engine.serving.alias_router import AliasRouter
from engine.serving.gateway import Gateway
from engine.serving.traffic import USER_HEADER, Role, Route, TrafficSplit, sticky_fraction

ACTIVE, CANDIDATE = "base@v1.0", "base@v1.1"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _metric(name: str, **labels: str) -> float:
    return telemetry.REGISTRY.get_sample_value(name, labels) or 0.0


async def _slow_stream(request: web.Request) -> web.StreamResponse:
    """Forty events 50 ms apart, then [DONE] (as long as someone listens)."""
    out = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await out.prepare(request)
    try:
        for i in range(40):
            await out.write(f'data: {{"i": {i}}}\n\n'.encode())
            await asyncio.sleep(0.05)
        await out.write(b"data: [DONE]\n\n")
    except (ConnectionError, aiohttp.ClientConnectionError):
        pass
    return out


async def _broken_stream(request: web.Request) -> web.StreamResponse:
    """Two events, then the engine drops the connection (a crash mid-answer)."""
    out = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await out.prepare(request)
    for i in range(2):
        await out.write(f'data: {{"i": {i}}}\n\n'.encode())
        await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.abort()
    return out


@pytest.fixture
async def split_gateway() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[int, AliasRouter, TrafficSplit]]]]:
    """A stub engine answering with the given handler, and a gateway in front of it whose alias splits to
    CANDIDATE."""
    cleanup: list[Callable[[], Awaitable[None]]] = []

    async def start(handler: Handler) -> tuple[int, AliasRouter, TrafficSplit]:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        cleanup.append(runner.cleanup)
        router = AliasRouter("active", "base")
        router.set_target(ACTIVE, "v1.0")
        gateway = Gateway(router, f"http://127.0.0.1:{runner.addresses[0][1]}", timeout_seconds=30)
        port = await gateway.start("127.0.0.1", 0)
        cleanup.append(gateway.stop)
        split = TrafficSplit(Route(CANDIDATE, "v1.1"), 0.5)
        router.set_split(split)
        return port, router, split

    yield start
    for stop in reversed(cleanup):
        await stop()


def _candidate_user() -> str:
    return next(f"u{i}" for i in range(1000) if sticky_fraction(CANDIDATE, f"u{i}") < 0.5)


async def _settled(router: AliasRouter) -> None:
    for _ in range(100):
        if router.inflight(CANDIDATE) == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the candidate's requests never ended")


async def test_a_client_leaving_mid_stream_is_no_error_of_the_candidate(split_gateway) -> None:
    """Held: three clients that go away after the first event are three candidate requests, none an error (split
    tally and learning_engine_traffic_errors_total), counted as status 499 in the gateway's metrics, not 502."""
    port, router, split = await split_gateway(_slow_stream)
    errors_before = _metric("learning_engine_traffic_errors_total", version="v1.1", role="candidate")
    left_before = _metric("learning_engine_gateway_requests_total", model=CANDIDATE, status="499")
    failed_before = _metric("learning_engine_gateway_requests_total", model=CANDIDATE, status="502")
    user = _candidate_user()
    for _ in range(3):
        async with aiohttp.ClientSession() as s:
            r = await s.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers={USER_HEADER: user},
                             json={"model": "active", "stream": True, "messages": [{"role": "user", "content": "x"}]})
            assert r.status == 200
            await r.content.readline()
            r.close()  # the client goes away mid-stream
    await _settled(router)
    candidate = split.tallies[Role.CANDIDATE]
    assert candidate.requests == 3
    assert candidate.errors == 0, f"client disconnects counted as the candidate's errors: {candidate}"
    assert _metric("learning_engine_traffic_errors_total", version="v1.1", role="candidate") == errors_before
    assert _metric("learning_engine_gateway_requests_total", model=CANDIDATE, status="499") == left_before + 3
    assert _metric("learning_engine_gateway_requests_total", model=CANDIDATE, status="502") == failed_before


async def test_an_engine_breaking_off_a_stream_is_still_the_candidates_error(split_gateway) -> None:
    """Held (guard): a stream the serving engine drops mid-answer is a 502 and the candidate's error, and the client
    sees its stream broken, not a clean end."""
    port, router, split = await split_gateway(_broken_stream)
    failed_before = _metric("learning_engine_gateway_requests_total", model=CANDIDATE, status="502")
    async with aiohttp.ClientSession() as s, s.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", headers={USER_HEADER: _candidate_user()},
            json={"model": "active", "stream": True, "messages": [{"role": "user", "content": "x"}]}) as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    await _settled(router)
    candidate = split.tallies[Role.CANDIDATE]
    assert (candidate.requests, candidate.errors) == (1, 1)
    assert _metric("learning_engine_gateway_requests_total", model=CANDIDATE, status="502") == failed_before + 1
