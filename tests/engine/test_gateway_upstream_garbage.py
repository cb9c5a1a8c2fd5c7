"""A serving engine that answers a completion with something that is not HTTP/1.1 (a serving_url pointing at a
gRPC/HTTP2 port or another service, a crashing proxy) is the engine failing: the gateway answers 502 in the OpenAI
error shape, as for an engine that does not answer, not an unhandled 500 text page; and a traffic split's candidate
answered so is failed over to the active version like a candidate the engine does not answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from engine.serving.alias_router import AliasRouter
from engine.serving.gateway import SERVED_MODEL_HEADER, Gateway
from engine.serving.traffic import Route, TrafficSplit

GARBAGE = b"\x00\x00\x12\x04\x00\x00\x00\x00\x00garbage that is not HTTP\r\n\r\n"  # an HTTP/2 frame, then noise
ACTIVE, CANDIDATE = "base@v1.0", "base@v1.1"


@pytest.fixture
async def engine_port() -> AsyncIterator[int]:
    """A raw engine: a proper HTTP/1.1 answer for ACTIVE, bytes that are not HTTP for any other model."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        model = json.loads(await reader.readexactly(length))["model"]
        if model == ACTIVE:
            body = json.dumps({"model": model, "choices": [{"text": "ok"}]}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))
        else:
            writer.write(GARBAGE)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_an_answer_that_is_not_http_is_a_502(engine_port: int) -> None:
    gw = Gateway(AliasRouter("active", "base"), f"http://127.0.0.1:{engine_port}", timeout_seconds=5)
    gport = await gw.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as s, s.post(
                f"http://127.0.0.1:{gport}/v1/chat/completions",
                json={"model": "active", "messages": [{"role": "user", "content": "hi"}]}) as r:
            text = await r.text()
        assert r.status == 502, (r.status, text)
        assert json.loads(text)["error"]["type"] == "bad_gateway"
    finally:
        await gw.stop()


async def test_a_candidate_answered_with_garbage_is_failed_over_and_lost(engine_port: int) -> None:
    router = AliasRouter("active", "base")
    router.set_target(ACTIVE, "v1.0")
    split = TrafficSplit(Route(CANDIDATE, "v1.1"), 0.5)
    heard: list[TrafficSplit] = []
    router.on_candidate_lost = heard.append
    router.set_split(split)
    gw = Gateway(router, f"http://127.0.0.1:{engine_port}", timeout_seconds=5)
    gport = await gw.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(4):
                async with s.post(f"http://127.0.0.1:{gport}/v1/completions",
                                  json={"model": "active", "prompt": "Hi"}) as r:
                    await r.read()
                    assert (r.status, r.headers.get(SERVED_MODEL_HEADER)) == (200, ACTIVE)
    finally:
        await gw.stop()
    assert heard == [split] and "did not answer" in split.lost
    assert router.inflight(CANDIDATE) == 0 and router.inflight(ACTIVE) == 0
