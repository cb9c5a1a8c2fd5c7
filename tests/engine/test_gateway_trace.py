"""The gateway continues its caller's W3C trace: a client that sends a ``traceparent`` header finds the gateway's
server span in its own trace, under its own span, and the serving engine gets the trace on to the gateway's span (on
a candidate's failed attempt and on its retry on the active version too), as the gRPC server does for its calls.
Against a stub serving engine (no model)."""

from __future__ import annotations

import random

import aiohttp
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from engine.serving.traffic import USER_HEADER
from tests.engine.test_gateway_disconnect import ACTIVE, CANDIDATE, _candidate_user, split_gateway  # noqa: F401 - fixtures
from tests.telemetry.test_trace_and_metrics import spans  # noqa: F401 - fixtures

CHAT = {"model": "active", "messages": [{"role": "user", "content": "x"}]}


class Engine:
    """A stub serving engine that answers ACTIVE and fails CANDIDATE with HTTP 500, keeping each request's model
    and ``traceparent`` header."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def complete(self, request: web.Request) -> web.Response:
        model = (await request.json())["model"]
        self.seen.append((model, request.headers.get("traceparent", "")))
        if model == CANDIDATE:
            return web.json_response({"error": {"code": "500", "message": "boom"}}, status=500)
        return web.json_response({"model": model, "choices": [{"message": {"role": "assistant", "content": "hi"}}]})


def _traceparent() -> tuple[int, int, str]:
    trace_id, span_id = random.getrandbits(128) | 1, random.getrandbits(64) | 1
    return trace_id, span_id, f"00-{trace_id:032x}-{span_id:016x}-01"


def _gateway_span(exporter: InMemorySpanExporter, trace_id: int) -> ReadableSpan:
    found = [s for s in exporter.get_finished_spans() if s.name == "gateway /v1/chat/completions"]
    assert found, "no gateway span"
    ours = [s for s in found if s.context.trace_id == trace_id]
    assert len(ours) == 1, f"the gateway's span is in another trace than the client's {trace_id:032x}"
    return ours[0]


async def _ask(port: int, traceparent: str, user: str = "") -> str:
    headers = {"traceparent": traceparent, **({USER_HEADER: user} if user else {})}
    async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                                                    headers=headers, json=CHAT) as r:
        assert r.status == 200
        return r.headers["x-served-model"]


async def test_the_gateway_span_continues_the_callers_trace(split_gateway, spans: InMemorySpanExporter) -> None:  # noqa: F811
    """Failed before the fix: the gateway's span began a trace of its own, and the engine got no ``traceparent``.
    Now its span is a child of the client's span in the client's trace, and the engine's request carries the trace
    with the gateway's span as parent."""
    engine = Engine()
    port, router, _ = await split_gateway(engine.complete)
    router.set_split(None)
    trace_id, span_id, traceparent = _traceparent()
    assert await _ask(port, traceparent) == ACTIVE

    span = _gateway_span(spans, trace_id)
    assert span.parent is not None and span.parent.span_id == span_id and span.parent.is_remote
    assert engine.seen == [(ACTIVE, f"00-{trace_id:032x}-{span.context.span_id:016x}-01")]


async def test_a_failed_over_request_keeps_the_trace(split_gateway, spans: InMemorySpanExporter) -> None:  # noqa: F811
    """Failed before the fix: neither attempt carried the trace. Now the candidate's failed attempt and its retry on
    the active version both carry the client's trace, under the one gateway span."""
    engine = Engine()
    port, _, _ = await split_gateway(engine.complete)
    trace_id, _, traceparent = _traceparent()
    assert await _ask(port, traceparent, _candidate_user()) == ACTIVE

    span = _gateway_span(spans, trace_id)
    sent = f"00-{trace_id:032x}-{span.context.span_id:016x}-01"
    assert engine.seen == [(CANDIDATE, sent), (ACTIVE, sent)]
    assert span.attributes is not None and span.attributes["failover"] == ACTIVE
