"""The gateway's timeout on a proxied completion bounds the serving engine's silence (connecting, then each read:
before the first byte and between chunks), never the whole answer: a stream that keeps producing tokens is
relayed to its end however long it takes, and a stream the engine stops feeding is broken off for the client (an
error it sees, not a clean end that looks complete). Against a stub serving engine (no model)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from engine import telemetry
from engine.serving.alias_router import AliasRouter
from engine.serving.gateway import Gateway

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY = {"model": "active", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


async def _steady_stream(request: web.Request) -> web.StreamResponse:
    """Forty events 50 ms apart (2 s in all), then [DONE]."""
    out = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await out.prepare(request)
    for i in range(40):
        await out.write(f'data: {{"i": {i}}}\n\n'.encode())
        await asyncio.sleep(0.05)
    await out.write(b"data: [DONE]\n\n")
    await out.write_eof()
    return out


async def _stalled_stream(request: web.Request) -> web.StreamResponse:
    """Two events, then nothing for 5 s (a hung engine), then [DONE]."""
    out = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await out.prepare(request)
    try:
        for i in range(2):
            await out.write(f'data: {{"i": {i}}}\n\n'.encode())
        await asyncio.sleep(5)
        await out.write(b"data: [DONE]\n\n")
        await out.write_eof()
    except (ConnectionError, aiohttp.ClientConnectionError):
        pass
    return out


@pytest.fixture
async def gateway_to() -> AsyncIterator[Callable[[Handler, float], Awaitable[int]]]:
    """A stub engine answering with the given handler, and a gateway (of the given read timeout) in front of it;
    the gateway's port."""
    cleanup: list[Callable[[], Awaitable[None]]] = []

    async def start(handler: Handler, timeout: float) -> int:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        cleanup.append(runner.cleanup)
        gateway = Gateway(AliasRouter("active", "base"), f"http://127.0.0.1:{runner.addresses[0][1]}",
                          timeout_seconds=timeout)
        port = await gateway.start("127.0.0.1", 0)
        cleanup.append(gateway.stop)
        return port

    yield start
    for stop in reversed(cleanup):
        await stop()


async def test_a_stream_that_keeps_flowing_outlasts_the_timeout(gateway_to) -> None:
    """Held: with a 1 s timeout, a 2 s stream (an event every 50 ms) reaches the client whole, [DONE] included."""
    port = await gateway_to(_steady_stream, 1.0)
    async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=BODY) as r:
        assert r.status == 200
        try:
            text = (await r.read()).decode()
        except aiohttp.ClientPayloadError as exc:
            text = f"<cut: {exc!r}>"
    assert text.rstrip().endswith("data: [DONE]"), f"stream cut short: ...{text[-120:]}"
    assert text.count("data: ") == 41


async def test_an_engine_silent_past_the_timeout_breaks_the_clients_stream(gateway_to) -> None:
    """Held: when the engine sends nothing for longer than the timeout mid-stream, the client's read fails (the
    stream is broken off, not ended cleanly without [DONE]) after the events already sent, and the request counts
    as the engine's failure (502)."""
    before = telemetry.REGISTRY.get_sample_value("learning_engine_gateway_requests_total",
                                                 {"model": "base", "status": "502"}) or 0.0
    port = await gateway_to(_stalled_stream, 0.5)
    received = b""
    async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=BODY) as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in r.content.iter_any():
                received += chunk
    assert received.count(b"data: ") == 2 and b"[DONE]" not in received
    after = telemetry.REGISTRY.get_sample_value("learning_engine_gateway_requests_total",
                                                {"model": "base", "status": "502"}) or 0.0
    assert after == before + 1
