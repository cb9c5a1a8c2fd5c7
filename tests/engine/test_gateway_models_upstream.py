"""/v1/models through the gateway when the serving engine answers its own /v1/models with an error (a MAX still
starting, a 5xx) or with a malformed list: the engine failed (502, OpenAI error shape, as when it is unreachable),
not a 200 with its models silently missing nor a 500; and what the gateway knew the engine serves is kept (the
metric labels of its models do not fall back to ``other`` because of one failed answer)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from engine.serving.alias_router import AliasRouter
from engine.serving.gateway import Gateway

Start = Callable[[int, object], Awaitable[tuple[str, AliasRouter]]]


@pytest.fixture
async def engine_listing() -> AsyncIterator[Start]:
    """Starts a stub engine answering /v1/models with (status, doc), and a gateway in front of it."""
    cleanup = []

    async def start(status: int, doc: object) -> tuple[str, AliasRouter]:
        async def models(request: web.Request) -> web.Response:
            return web.json_response(doc, status=status)

        app = web.Application()
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        cleanup.append(runner.cleanup)
        router = AliasRouter("active", "base")
        router.engine_listed(["base", "base@v1.0"])  # what the engine listed before
        gw = Gateway(router, f"http://127.0.0.1:{runner.addresses[0][1]}", timeout_seconds=5)
        port = await gw.start("127.0.0.1", 0)
        cleanup.append(gw.stop)
        return f"http://127.0.0.1:{port}", router

    yield start
    for stop in reversed(cleanup):
        await stop()


@pytest.mark.parametrize("status,doc", [
    (503, {"error": {"code": "503", "message": "model still loading"}}),
    (404, {"detail": "Not Found"}),
    (200, {"object": "list", "data": None}),
    (200, {"object": "list"}),
    (200, ["base"]),
], ids=["engine-503", "engine-404", "data-null", "data-missing", "not-an-object"])
@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/base@v1.0"], ids=["list", "one"])
async def test_a_failed_engine_listing_is_a_502_and_forgets_nothing(engine_listing: Start, status: int, doc: object,
                                                                     path: str) -> None:
    url, router = await engine_listing(status, doc)
    async with aiohttp.ClientSession() as s, s.get(url + path) as r:
        answer = await r.json()
    assert r.status == 502, (r.status, answer)
    assert answer["error"]["type"] == "bad_gateway"
    assert router.knows("base@v1.0")


async def test_a_good_listing_still_replaces_what_the_engine_listed(engine_listing: Start) -> None:
    url, router = await engine_listing(200, {"object": "list", "data": [{"id": "base@v1.1", "root": "/models/x"}]})
    async with aiohttp.ClientSession() as s, s.get(url + "/v1/models") as r:
        answer = await r.json()
    assert r.status == 200
    assert [entry["id"] for entry in answer["data"]] == ["active", "base@v1.1"]
    assert router.knows("base@v1.1") and not router.knows("base@v1.0")
