"""A canary candidate's 404 ends the canary only when the serving engine no longer knows the candidate. A 404 for a
route the engine does not serve (``/v1/completions`` on an engine serving only chat) says nothing of the candidate:
the gateway asks the engine whether it still lists the candidate, and only a listing without it is a lost candidate.
Against a stub serving engine (no model) that lists the models it serves."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import TypeAlias

import aiohttp
import pytest
from aiohttp import web

from engine.serving.alias_router import AliasRouter
from engine.serving.gateway import Gateway
from engine.serving.traffic import USER_HEADER, Role, Route, TrafficSplit
from tests.engine.test_gateway_disconnect import ACTIVE, CANDIDATE, _candidate_user


class ChatOnlyEngine:
    """Serves chat completions only (any other route: aiohttp's 404), for the models it lists; any other model is
    vLLM's 404 "model does not exist"."""

    def __init__(self) -> None:
        self.models = {ACTIVE, CANDIDATE}
        self.asked: Counter[str] = Counter()
        self.listings = 0

    async def chat(self, request: web.Request) -> web.Response:
        model = (await request.json())["model"]
        self.asked[model] += 1
        if model not in self.models:
            return web.json_response({"error": {"message": f"The model `{model}` does not exist.",
                                                "type": "NotFoundError", "param": None, "code": 404}}, status=404)
        return web.json_response({"model": model, "choices": [{"message": {"role": "assistant", "content": "hi"}}]})

    async def listing(self, request: web.Request) -> web.Response:
        self.listings += 1
        data = [{"id": m, "object": "model"} for m in sorted(self.models)]
        return web.json_response({"object": "list", "data": data})


Stack: TypeAlias = tuple[ChatOnlyEngine, AliasRouter, TrafficSplit, list[TrafficSplit], str]


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    engine = ChatOnlyEngine()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", engine.chat)
    app.router.add_get("/v1/models", engine.listing)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    router = AliasRouter("active", "base")
    router.set_target(ACTIVE, "v1.0")
    heard: list[TrafficSplit] = []
    router.on_candidate_lost = heard.append
    gateway = Gateway(router, f"http://127.0.0.1:{runner.addresses[0][1]}", timeout_seconds=10)
    port = await gateway.start("127.0.0.1", 0)
    split = TrafficSplit(Route(CANDIDATE, "v1.1"), 0.5)
    router.set_split(split)
    yield engine, router, split, heard, f"http://127.0.0.1:{port}"
    await gateway.stop()
    await runner.cleanup()


async def _ask(url: str, path: str) -> tuple[int, str, str]:
    body = {"model": "active", "prompt": "x"} if path == "/v1/completions" else {
        "model": "active", "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as s, s.post(url + path, json=body,
                                                     headers={USER_HEADER: _candidate_user()}) as r:
        return r.status, await r.text(), r.headers.get("x-served-model", "")


async def test_a_404_for_a_route_the_engine_does_not_serve_does_not_end_the_canary(stack: Stack) -> None:
    """Failed before the fix: the candidate's 404 for /v1/completions counted as the engine losing the candidate,
    so one client request to a route the engine does not serve ended the canary (and was the candidate's error and
    fail-over). Now the engine still lists the candidate: the 404 is the client's answer, the candidate's request
    and no error of it, and the split goes on."""
    engine, router, split, heard, url = stack
    status, _, served = await _ask(url, "/v1/completions")
    assert (split.lost, heard) == ("", []), f"a route the engine does not serve ended the canary: {split.lost}"
    assert (status, served) == (404, CANDIDATE)
    candidate = split.tallies[Role.CANDIDATE]
    assert (candidate.requests, candidate.errors, candidate.failovers) == (1, 0, 0)
    assert engine.listings >= 1
    assert (await _ask(url, "/v1/chat/completions"))[::2] == (200, CANDIDATE)  # the candidate still serves
    assert router.inflight(CANDIDATE) == 0 and router.inflight(ACTIVE) == 0


async def test_a_404_for_a_candidate_the_engine_no_longer_lists_ends_the_canary(stack: Stack) -> None:
    """Held (guard): the engine restarted without the candidate answers 404 and no longer lists it: the request is
    failed over to the active version, and the split sends nothing more to the candidate."""
    engine, router, split, heard, url = stack
    engine.models.discard(CANDIDATE)
    status, _, served = await _ask(url, "/v1/chat/completions")
    assert (status, served) == (200, ACTIVE)
    assert heard == [split] and "HTTP 404" in split.lost
    candidate = split.tallies[Role.CANDIDATE]
    assert (candidate.requests, candidate.errors, candidate.failovers) == (1, 1, 1)
    assert (await _ask(url, "/v1/chat/completions"))[::2] == (200, ACTIVE)
    assert engine.asked[CANDIDATE] == 1
    assert router.inflight(CANDIDATE) == 0 and router.inflight(ACTIVE) == 0
