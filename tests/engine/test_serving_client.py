"""The serving client against a recorded transcript of MAX Serve's LoRA API, one exchange per status code.

A tiny local HTTP server replays the transcript: it answers a request only if method, path
and body match a recorded exchange exactly (so the client must send exactly the two
documented fields), and counts the calls so retries can be asserted.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from engine.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from engine.serving.client import ServedModel, ServingClient, ServingConfig, ServingMode, ServingPaths
from engine.serving.reference_backend import start_site

TRANSCRIPT = json.loads((Path(__file__).parents[1] / "fixtures" / "max_lora_transcript.json").read_text())


async def replay(exchanges: list[dict], *, plain_text: bool = False, prefix: str = ""):
    calls: Counter[str] = Counter()

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        for ex in exchanges:
            req = ex["request"]
            if prefix + req["path"] == request.path and req["method"] == request.method and req["body"] == body:
                calls[ex["name"]] += 1
                resp = ex["response"]
                if plain_text and resp["status"] == 200 and request.method == "POST":
                    return web.Response(status=200, text="Success: LoRA adapter added successfully.")
                if resp["body"] is None:
                    return web.Response(status=resp["status"])
                return web.json_response(resp["body"], status=resp["status"])
        calls["unmatched"] += 1
        return web.json_response({"error": {"code": "400", "message": f"unrecorded request {body}"}}, status=400)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner, port = await start_site(app, "127.0.0.1", 0)
    return runner, f"http://127.0.0.1:{port}", calls


def client(url: str, **kw) -> ServingClient:
    return ServingClient(ServingConfig(base_url=url, retries=2, backoff_seconds=0.01, **kw))


async def test_every_recorded_status_code_maps_to_a_typed_result():
    runner, url, calls = await replay(TRANSCRIPT["exchanges"])
    try:
        async with client(url) as c:
            await c.load("m@v1.0", "/adapters/v1.0")  # 200 (the transcript answers the no-op the same way)
            with pytest.raises(AlreadyExists) as conflict:
                await c.load("m@v1.0", "/adapters/other")
            assert conflict.value.reason == "LORA_NAME_CONFLICT" and conflict.value.metadata["http_status"] == "409"
            assert "different path" in conflict.value.message
            with pytest.raises(FailedPrecondition) as bad:
                await c.load("m@v9.0", "/adapters/broken")
            assert bad.value.reason == "SERVING_REJECTED_REQUEST" and "adapter_config.json" in bad.value.message
            with pytest.raises(Unavailable) as timeout:
                await c.load("m@v5.0", "/adapters/v5.0")
            assert timeout.value.reason == "SERVING_ENGINE_ERROR"
            await c.unload("m@v1.0")
            with pytest.raises(NotFound) as missing:
                await c.unload("m@v7.0")
            assert missing.value.reason == "LORA_NOT_LOADED"
            assert await c.list_models() == [ServedModel("m"), ServedModel("m@v1.0")]
            assert await c.health()
    finally:
        await runner.cleanup()
    assert calls["unmatched"] == 0  # only the two documented fields were ever sent
    assert calls["load worker timeout"] == 3  # a MAX load is idempotent: 1 + 2 retries on 500
    assert calls["load bad adapter"] == 1 and calls["unload unknown"] == 1  # 4xx and unloads are not retried


async def test_501_without_enable_lora_is_a_failed_precondition():
    runner, url, _ = await replay(TRANSCRIPT["without_enable_lora"])
    try:
        async with client(url) as c:
            with pytest.raises(FailedPrecondition) as err:
                await c.load("m@v1.0", "/adapters/v1.0")
        assert err.value.reason == "SERVING_LORA_DISABLED" and "--enable-lora" in err.value.message
    finally:
        await runner.cleanup()


async def test_vllm_mode_takes_any_2xx_and_does_not_retry_loads():
    runner, url, calls = await replay(TRANSCRIPT["exchanges"], plain_text=True)
    try:
        async with client(url, mode=ServingMode.VLLM) as c:
            await c.load("m@v1.0", "/adapters/v1.0")
            with pytest.raises(Unavailable):
                await c.load("m@v5.0", "/adapters/v5.0")
    finally:
        await runner.cleanup()
    assert calls["load worker timeout"] == 1


async def test_custom_paths():
    runner, url, calls = await replay(TRANSCRIPT["exchanges"], prefix="/internal/lora")
    try:
        paths = ServingPaths(load="/internal/lora/v1/load_lora_adapter", unload="/internal/lora/v1/unload_lora_adapter",
                             models="/internal/lora/v1/models")
        async with client(url, mode=ServingMode.CUSTOM, paths=paths) as c:
            await c.load("m@v1.0", "/adapters/v1.0")
            assert [m.id for m in await c.list_models()] == ["m", "m@v1.0"]
    finally:
        await runner.cleanup()
    assert calls["unmatched"] == 0


async def test_unreachable_and_slow_engines_are_unavailable():
    async with client("http://127.0.0.1:9") as c:  # nothing listens on the discard port
        with pytest.raises(Unavailable) as err:
            await c.list_models()
        assert err.value.reason == "SERVING_UNAVAILABLE"
        assert not await c.health()

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({"data": []})

    app = web.Application()
    app.router.add_get("/v1/models", slow)
    runner, port = await start_site(app, "127.0.0.1", 0)
    try:
        async with client(f"http://127.0.0.1:{port}", timeout_seconds=0.2) as c:
            with pytest.raises(Unavailable) as err:
                await c.list_models()
            assert err.value.reason == "SERVING_TIMEOUT"
    finally:
        await runner.cleanup()


async def test_credentials_in_the_url_reach_the_engine_and_nothing_shows_them():
    """A serving_url may carry a user and password (basic auth in front of the engine): the requests send them, but
    errors, their metadata (which callers receive) and the target (logs, the stored serving state) never do."""
    async def models(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != aiohttp.BasicAuth("ops", "s3cret-pass").encode():
            return web.json_response({"error": {"code": "401", "message": "who are you"}}, status=401)
        return web.json_response({"data": [{"id": "base", "object": "model"}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner, port = await start_site(app, "127.0.0.1", 0)
    try:
        async with client(f"http://ops:s3cret-pass@127.0.0.1:{port}") as c:
            assert [m.id for m in await c.list_models()] == ["base"]
            assert c.target == f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
    async with client("http://ops:s3cret-pass@127.0.0.1:9") as c:  # nothing listens on the discard port
        with pytest.raises(Unavailable) as err:
            await c.list_models()
    shown = [err.value.message, *err.value.metadata.values(), c.target]
    assert not [s for s in shown if "s3cret" in s or "ops@" in s], shown
