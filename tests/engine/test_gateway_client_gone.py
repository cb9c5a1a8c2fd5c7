"""A client that goes away while the gateway waits for a non-streamed answer (nothing is relayed before the engine
has written it all) ends the request to the serving engine at once, as a client leaving a stream does: the engine
stops generating an answer no one waits for (the reference backend does at the next token once its request is
closed), the request leaves the in-flight count a version swap drains, and it is counted 499, the client's doing,
no version's error. Against a stub serving engine (no model) that notes when its request's connection closes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from engine.serving.alias_router import AliasRouter
from engine.serving.traffic import USER_HEADER, Role, TrafficSplit
from tests.engine.test_gateway_disconnect import (  # noqa: F401 - fixtures
    ACTIVE,
    CANDIDATE,
    Handler,
    _candidate_user,
    _metric,
    split_gateway,
)

ANSWER_SECONDS = 8.0  # how long the stub takes over a whole answer (a long generation), if no one closes it


class SlowEngine:
    """Answers a non-streamed completion after ANSWER_SECONDS, watching its connection meanwhile."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.began = asyncio.Event()
        self.closed_at: float | None = None  # when the gateway closed the request, if it did

    async def complete(self, request: web.Request) -> web.Response:
        self.asked.append((await request.json())["model"])
        self.began.set()
        deadline = time.monotonic() + ANSWER_SECONDS
        while time.monotonic() < deadline:
            if request.transport is None or request.transport.is_closing():
                self.closed_at = time.monotonic()
                break
            await asyncio.sleep(0.01)
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": "hi"}}]})


async def test_a_client_leaving_a_request_not_streamed_ends_it_upstream_at_once(
        split_gateway: Callable[[Handler], Awaitable[tuple[int, AliasRouter, TrafficSplit]]]) -> None:  # noqa: F811
    """Failed before the fix: the gateway kept waiting for the whole answer (the engine generated all of it, and a
    drain waited for it), and counted the request only then. Now the request to the engine is closed within a
    moment of the client leaving, the candidate's request is counted 499 and is no error (no fail-over either), and
    nothing stays in flight."""
    engine = SlowEngine()
    port, router, split = await split_gateway(engine.complete)
    left_before = _metric("learning_engine_gateway_requests_total", model=CANDIDATE, status="499")
    errors_before = _metric("learning_engine_traffic_errors_total", version="v1.1", role="candidate")
    async with aiohttp.ClientSession() as s:
        asking = asyncio.ensure_future(s.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", headers={USER_HEADER: _candidate_user()},
            json={"model": "active", "messages": [{"role": "user", "content": "x"}]}))
        await asyncio.wait_for(engine.began.wait(), 5)
        assert router.inflight(CANDIDATE) == 1
        left = time.monotonic()
        asking.cancel()  # the client goes away (its connection is closed)
        try:
            await asking
        except asyncio.CancelledError:
            pass
    drained = await router.drain(CANDIDATE, 2.0)  # what a version swap waits on
    assert drained, "the request of a client that left stayed in flight (a drain waits for the whole answer)"
    for _ in range(100):
        if engine.closed_at is not None:
            break
        await asyncio.sleep(0.02)
    assert engine.closed_at is not None and engine.closed_at - left < 2.0, "the engine's request was left running"
    assert engine.asked == [CANDIDATE]  # not failed over to the active version
    assert _metric("learning_engine_gateway_requests_total", model=CANDIDATE, status="499") == left_before + 1
    assert _metric("learning_engine_traffic_errors_total", version="v1.1", role="candidate") == errors_before
    candidate = split.tallies[Role.CANDIDATE]
    assert (candidate.requests, candidate.errors, candidate.failovers) == (1, 0, 0)
    assert split.tallies[Role.ACTIVE].requests == 0 and not split.lost
    assert router.inflight(ACTIVE) == 0
