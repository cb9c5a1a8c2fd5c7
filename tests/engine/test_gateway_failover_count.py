"""learning_engine_gateway_requests_total counts the completion requests the gateway answered, once each, under the
model that served the answer and the status the client got. A canary candidate's failed attempt that the gateway
retried on the active version is one client request: its failure is counted by the traffic metrics (the candidate's
request, error and fail-over), not as a second gateway request. Against a stub serving engine (no model)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from engine import telemetry
from engine.serving.alias_router import AliasRouter
from engine.serving.traffic import USER_HEADER, Role
from tests.engine.test_gateway_disconnect import (  # noqa: F401 - fixtures
    ACTIVE,
    CANDIDATE,
    Handler,
    _candidate_user,
    _metric,
    split_gateway,
)

REQUESTS = "learning_engine_gateway_requests_total"
SECONDS = "learning_engine_gateway_request_duration_seconds_count"


def _total(name: str) -> float:
    return sum(s.value for family in telemetry.REGISTRY.collect() for s in family.samples if s.name == name)


def _failing_candidate(status: int) -> Handler:
    """A stub engine's completion handler that answers ACTIVE and fails CANDIDATE with HTTP ``status``."""
    async def complete(request: web.Request) -> web.Response:
        model = (await request.json())["model"]
        if model == CANDIDATE:
            return web.json_response({"error": {"code": str(status), "message": "no"}}, status=status)
        return web.json_response({"model": model, "choices": [{"message": {"role": "assistant", "content": "hi"}}]})

    return complete


async def _answered(router: AliasRouter) -> None:
    """Wait until the retried request has ended (the gateway counts it just after the client has its answer)."""
    for _ in range(100):
        if router.inflight(ACTIVE) == 0 and router.inflight(CANDIDATE) == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the request never ended")


@pytest.mark.parametrize("failed", [500, 404])
async def test_a_failed_over_request_is_one_gateway_request(split_gateway, failed: int) -> None:  # noqa: F811
    """Failed before the fix: the candidate's failed attempt was counted as a gateway request too (status ``failed``
    under the candidate), so the one client request added two. Now it adds one, under the active version with the
    200 the client got, while the traffic metrics and the split still count the candidate's failure and fail-over
    and the active version's answer."""
    port, router, split = await split_gateway(_failing_candidate(failed))
    requests, seconds = _total(REQUESTS), _total(SECONDS)
    answered = _metric(REQUESTS, model=ACTIVE, status="200")
    candidate_failed = _metric(REQUESTS, model=CANDIDATE, status=str(failed))
    traffic = {(version, role, name): _metric(f"learning_engine_traffic_{name}_total", version=version, role=role)
               for version, role in (("v1.1", "candidate"), ("v1.0", "active")) for name in ("requests", "errors")}
    failovers = _metric("learning_engine_traffic_failovers_total", version="v1.1")

    async with aiohttp.ClientSession() as s, s.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", headers={USER_HEADER: _candidate_user()},
            json={"model": "active", "messages": [{"role": "user", "content": "x"}]}) as r:
        assert r.status == 200
        assert r.headers["x-served-model"] == ACTIVE
    await _answered(router)

    assert _total(REQUESTS) == requests + 1, "one client request counted more than once"
    assert _total(SECONDS) == seconds + 1
    assert _metric(REQUESTS, model=ACTIVE, status="200") == answered + 1
    assert _metric(REQUESTS, model=CANDIDATE, status=str(failed)) == candidate_failed
    assert {key: _metric(f"learning_engine_traffic_{key[2]}_total", version=key[0], role=key[1]) - before
            for key, before in traffic.items()} == {("v1.1", "candidate", "requests"): 1,
                                                    ("v1.1", "candidate", "errors"): 1,
                                                    ("v1.0", "active", "requests"): 1,
                                                    ("v1.0", "active", "errors"): 0}
    assert _metric("learning_engine_traffic_failovers_total", version="v1.1") == failovers + 1
    tallies = split.tallies
    assert (tallies[Role.CANDIDATE].requests, tallies[Role.CANDIDATE].errors,
            tallies[Role.CANDIDATE].failovers) == (1, 1, 1)
    assert (tallies[Role.ACTIVE].requests, tallies[Role.ACTIVE].errors) == (1, 0)
