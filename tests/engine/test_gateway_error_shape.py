"""Every error the gateway itself answers carries the OpenAI/MAX error shape ({"error": {"code", "message",
"param", "type"}}, JSON), the router's 404 and 405 too (405 still saying ``Allow``); and a body MAX Serve would accept
(a long prompt, just over aiohttp's default 1 MiB) is forwarded, not refused by the gateway."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from engine.serving import gateway
from engine.serving.alias_router import AliasRouter
from engine.serving.gateway import Gateway


@pytest.fixture
async def gateway_url() -> AsyncIterator[str]:
    async def complete(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        return web.json_response({"model": body["model"], "choices": [{"index": 0, "text": "ok"}]})

    app = web.Application(client_max_size=64 * 1024**2)  # the stub engine, like MAX (FastAPI), takes big bodies
    app.router.add_post("/v1/chat/completions", complete)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    gw = Gateway(AliasRouter("active", "base"), f"http://127.0.0.1:{runner.addresses[0][1]}", timeout_seconds=5)
    port = await gw.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await gw.stop()
        await runner.cleanup()


def _is_openai_error(text: str) -> bool:
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    return isinstance(doc, dict) and isinstance(doc.get("error"), dict) and "message" in doc["error"]


async def test_a_long_prompt_over_one_mib_is_forwarded(gateway_url: str) -> None:
    body = {"model": "active", "messages": [{"role": "user", "content": "x" * (1024**2 + 1)}]}
    async with aiohttp.ClientSession() as s, s.post(gateway_url + "/v1/chat/completions", json=body) as r:
        text = await r.text()
    assert r.status == 200, (r.status, text[:200])


@pytest.mark.parametrize("method,path,status", [("POST", "/v1/embeddings", 404), ("GET", "/v1/chat/completions", 405)],
                         ids=["unknown-route-404", "wrong-method-405"])
async def test_the_routers_404_and_405_are_openai_errors(gateway_url: str, method: str, path: str,
                                                         status: int) -> None:
    async with aiohttp.ClientSession() as s, s.request(method, gateway_url + path, json={"model": "active"}) as r:
        text = await r.text()
    assert r.status == status
    assert _is_openai_error(text), (r.status, r.headers.get("content-type"), text)
    assert json.loads(text)["error"]["code"] == str(status)
    if status == 405:
        assert r.headers["Allow"] == "POST"


async def test_a_body_over_the_limit_is_an_openai_413(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "MAX_BODY_BYTES", 1024)  # the real limit is tens of MiB: too much to send in a test
    gw = Gateway(AliasRouter("active", "base"), "http://127.0.0.1:9", timeout_seconds=5)  # refused before forwarding
    port = await gw.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                                                        json={"model": "active", "prompt": "x" * 2048}) as r:
            text = await r.text()
    finally:
        await gw.stop()
    assert r.status == 413
    assert _is_openai_error(text), (r.headers.get("content-type"), text)
    assert "1024" in json.loads(text)["error"]["message"]
