"""A gateway busy with long streams, each holding one of its ``max_connections`` connections to the serving engine
for as long as it runs, still answers: its /health probe and its /v1/models listing have a pool of their own (a
load balancer must not pull a healthy, busy gateway), and a completion beyond the cap waits for a free connection
at most the connect timeout, then gets a 503 in OpenAI's error shape (never no answer at all). That 503 is the
gateway's, no version's error: a canary's tallies do not count it. Against a stub serving engine (no model); a small
pool, so it is filled fast."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from engine.serving.alias_router import AliasRouter
from engine.serving.gateway import Gateway
from engine.serving.traffic import Route, TrafficSplit

POOL = 4  # the gateway's max_connections here
WAIT = 0.5  # its connect timeout: the longest a completion waits for a free connection
BODY = {"model": "active", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Busy:
    url: str
    router: AliasRouter
    release: asyncio.Event  # set: the streams in flight end
    streams: list[asyncio.Task[None]]


@pytest.fixture
async def busy_gateway() -> AsyncIterator[Busy]:
    """A healthy stub engine whose streams run until ``release`` is set, a gateway in front of it with POOL
    connections, and POOL streams in flight through it."""
    release = asyncio.Event()
    started = 0
    all_started = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        nonlocal started
        await request.read()
        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(request)
        await out.write(b'data: {"i": 0}\n\n')
        started += 1
        if started >= POOL:
            all_started.set()
        try:
            while not release.is_set():  # a long generation: a token every 50 ms
                await asyncio.sleep(0.05)
                await out.write(b'data: {"i": 1}\n\n')
            await out.write(b"data: [DONE]\n\n")
        except (ConnectionError, aiohttp.ClientConnectionError):
            pass
        return out

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "base", "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", stream)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    router = AliasRouter("active", "base")
    router.set_target("base@v1.0", "v1.0")
    gw = Gateway(router, f"http://127.0.0.1:{runner.addresses[0][1]}", timeout_seconds=5,
                 connect_timeout_seconds=WAIT, max_connections=POOL)
    port = await gw.start("127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}"
    client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def one() -> None:
        async with client.post(f"{url}/v1/chat/completions", json=BODY) as r:
            assert r.status == 200
            async for _ in r.content.iter_any():
                pass

    streams = [asyncio.create_task(one()) for _ in range(POOL)]
    try:
        await asyncio.wait_for(all_started.wait(), 10)
        yield Busy(url, router, release, streams)
    finally:
        release.set()
        await asyncio.gather(*streams, return_exceptions=True)
        await client.close()
        await gw.stop()
        await runner.cleanup()


async def test_health_and_models_answer_while_every_connection_is_streaming(busy_gateway: Busy) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{busy_gateway.url}/health", timeout=aiohttp.ClientTimeout(total=5)) as r:
            health = (r.status, await r.text())
        async with s.get(f"{busy_gateway.url}/v1/models", timeout=aiohttp.ClientTimeout(total=5)) as r:
            models = (r.status, await r.json())
    assert health[0] == 200, health
    assert models[0] == 200 and [m["id"] for m in models[1]["data"]] == ["active", "base"], models


async def test_a_completion_beyond_the_pool_is_a_503_after_a_bounded_wait(busy_gateway: Busy) -> None:
    split = TrafficSplit(Route("base@v1.1", "v1.1"), 0.5)
    busy_gateway.router.set_split(split)
    async with aiohttp.ClientSession() as s:
        began = time.monotonic()
        async with s.post(f"{busy_gateway.url}/v1/chat/completions", timeout=aiohttp.ClientTimeout(total=10),
                          json={**BODY, "stream": False}) as r:
            answer, waited = await r.json(), time.monotonic() - began
            retry_after = r.headers.get("Retry-After")
    assert r.status == 503 and answer["error"]["code"] == "503", answer
    assert "connections to the serving engine in use" in answer["error"]["message"] and retry_after == "1"
    assert WAIT * 0.9 <= waited < WAIT + 3, waited
    # No version's error: the engine never saw the request.
    assert sum(t.requests + t.errors for t in split.tallies.values()) == 0, split.tallies
    assert busy_gateway.router.inflight("base@v1.0") == POOL and busy_gateway.router.inflight("base@v1.1") == 0


async def test_connections_freed_by_ended_streams_serve_the_next_completions(busy_gateway: Busy) -> None:
    busy_gateway.release.set()
    await asyncio.gather(*busy_gateway.streams)  # every stream ended whole (a 200, read to its end)
    async with aiohttp.ClientSession() as s:

        async def ask() -> tuple[int, bytes]:
            async with s.post(f"{busy_gateway.url}/v1/chat/completions", json=BODY) as r:
                return r.status, await r.read()

        answers = await asyncio.gather(*(ask() for _ in range(POOL)))
    assert all(status == 200 and body.endswith(b"data: [DONE]\n\n") for status, body in answers), answers
    assert busy_gateway.router.inflight("base@v1.0") == 0
