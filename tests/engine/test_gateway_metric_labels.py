"""The gateway's per-model metrics (learning_engine_gateway_requests_total{model,status} and
learning_engine_gateway_request_duration_seconds{model}) are labelled only with names the gateway knows: the
upstream the alias or a routed name resolved to, the base model, or a model the serving engine listed. Any other
`model` a client sends is counted under "other", so made-up names cannot grow the series without limit.
Against a stub serving engine (no model)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from engine import telemetry
from engine.serving.alias_router import AliasRouter
from engine.serving.gateway import Gateway

LOADED = ("base", "base@v1.0", "base@v0.9", "base@v0.8")  # what the stub engine serves and lists
OTHER = "other"  # the label of every model name the gateway does not know
REQUESTS = "learning_engine_gateway_requests_total"


def _series(metric: str) -> int:
    return sum(1 for family in telemetry.REGISTRY.collect() for s in family.samples if s.name == metric)


def _count(model: str, status: str) -> float:
    return telemetry.REGISTRY.get_sample_value(REQUESTS, {"model": model, "status": status}) or 0.0


async def _complete(request: web.Request) -> web.Response:
    model = (await request.json())["model"]
    if model not in LOADED:
        return web.json_response({"error": {"code": "404", "message": f"model {model!r} does not exist"}},
                                 status=404)
    return web.json_response({"model": model, "choices": [{"text": "hi"}]})


async def _models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": name, "object": "model"} for name in LOADED]})


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[str, AliasRouter]]:
    """A stub engine serving LOADED and a gateway in front of it (alias -> base@v1.0); its URL and router."""
    app = web.Application()
    app.router.add_post("/v1/completions", _complete)
    app.router.add_get("/v1/models", _models)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    router = AliasRouter("active", "base")
    router.set_target("base@v1.0", "v1.0")
    gw = Gateway(router, f"http://127.0.0.1:{runner.addresses[0][1]}", timeout_seconds=5)
    port = await gw.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}", router
    finally:
        await gw.stop()
        await runner.cleanup()


async def test_made_up_model_names_are_counted_under_one_label(gateway) -> None:
    """Held: 200 requests naming 200 different made-up (and long) models add at most one series, "other", which
    counts all of them."""
    url, _ = gateway
    before, other_before = _series(REQUESTS), _count(OTHER, "404")
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            body = {"model": f"no-such-model-{uuid.uuid4().hex}" + "x" * 2000, "prompt": "hi"}
            async with s.post(f"{url}/v1/completions", json=body) as r:
                assert r.status == 404
    grown = _series(REQUESTS) - before
    assert grown <= 1, f"{grown} new {REQUESTS} series from 200 made-up model names"
    assert _count(OTHER, "404") == other_before + 200


async def test_names_the_gateway_knows_keep_their_own_label(gateway) -> None:
    """Held: the alias is counted under the version it resolved to, a routed name under its upstream, the base
    model under its name, and a model the engine lists (not routed by the gateway) under its name once the gateway
    has seen the engine's listing, whether a client asked for /v1/models or the gateway looked by itself."""
    url, router = gateway
    router.set_route("base@session", "base@v0.8", "v0.8")
    counts = {name: _count(name, "200") for name in LOADED}
    async with aiohttp.ClientSession() as s:
        for model in ("active", "base@session", "base"):
            async with s.post(f"{url}/v1/completions", json={"model": model, "prompt": "hi"}) as r:
                assert r.status == 200
        assert _count("base@v1.0", "200") == counts["base@v1.0"] + 1
        assert _count("base@v0.8", "200") == counts["base@v0.8"] + 1
        assert _count("base", "200") == counts["base"] + 1

        # an engine-listed version nobody routes: its own label once the gateway has the engine's listing
        for _ in range(40):
            async with s.post(f"{url}/v1/completions", json={"model": "base@v0.9", "prompt": "hi"}) as r:
                assert r.status == 200
            if _count("base@v0.9", "200") > counts["base@v0.9"]:
                break
            await asyncio.sleep(0.05)
        assert _count("base@v0.9", "200") == counts["base@v0.9"] + 1

        async with s.get(f"{url}/v1/models") as r:
            assert r.status == 200
        async with s.post(f"{url}/v1/completions", json={"model": "base@v0.9", "prompt": "hi"}) as r:
            assert r.status == 200
        assert _count("base@v0.9", "200") == counts["base@v0.9"] + 2
