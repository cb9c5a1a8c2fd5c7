"""Weighted traffic through the gateway: the split's arithmetic, stickiness per user, each side's counts and
metrics, and the fail-over of a candidate the serving engine fails, against a stub serving engine (no model)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from engine import telemetry
from engine.serving.alias_router import AliasRouter
from engine.serving.gateway import SERVED_MODEL_HEADER, Gateway
from engine.serving.traffic import USER_HEADER, Role, Route, TrafficSplit, sticky_fraction

ACTIVE, CANDIDATE = "base@v1.0", "base@v1.1"
SLOW = 1.0  # how long a "slow" fault takes to answer: past the read timeout of the gateway that tests it


def _metric(name: str, **labels: str) -> float:
    return telemetry.REGISTRY.get_sample_value(name, labels) or 0.0


def test_requests_without_a_user_are_dealt_to_the_share_exactly() -> None:
    split = TrafficSplit(Route(CANDIDATE, "v1.1"), 0.1)
    sides = [split.side() for _ in range(100)]
    assert [i for i, side in enumerate(sides) if side is Role.CANDIDATE] == list(range(9, 100, 10))
    quarter = TrafficSplit(Route(CANDIDATE, "v1.1"), 0.25)
    assert [quarter.side() for _ in range(8)] == [Role.ACTIVE] * 3 + [Role.CANDIDATE] + [Role.ACTIVE] * 3 + [
        Role.CANDIDATE]
    odd = TrafficSplit(Route(CANDIDATE, "v1.1"), 0.29)
    taken = [odd.side() is Role.CANDIDATE for _ in range(1000)]
    for n in range(1, 1001):  # any run from the start is within one request of the share
        assert abs(sum(taken[:n]) - 0.29 * n) < 1


def test_a_user_always_lands_on_the_same_side_and_a_larger_share_only_moves_users_to_the_candidate() -> None:
    users = [f"user-{i}" for i in range(4000)]
    ten = TrafficSplit(Route(CANDIDATE, "v1.1"), 0.1)
    first = {u: ten.side(u) for u in users}
    assert all(ten.side(u) is first[u] for u in users for _ in range(2))
    share = sum(side is Role.CANDIDATE for side in first.values()) / len(users)
    assert 0.085 < share < 0.115
    thirty = {u: TrafficSplit(Route(CANDIDATE, "v1.1"), 0.3).side(u) for u in users}
    assert all(thirty[u] is Role.CANDIDATE for u in users if first[u] is Role.CANDIDATE)
    assert 0.27 < sum(side is Role.CANDIDATE for side in thirty.values()) / len(users) < 0.33
    # another candidate draws its own users: the split of one canary says nothing of the next
    other = {u: TrafficSplit(Route("base@v1.2", "v1.2"), 0.1).side(u) for u in users}
    both = sum(first[u] is other[u] is Role.CANDIDATE for u in users)
    assert both < 0.03 * len(users)
    assert sticky_fraction(CANDIDATE, "user-1") == sticky_fraction(CANDIDATE, "user-1")


def test_a_lost_candidate_gets_nothing_more_and_the_share_is_checked() -> None:
    split = TrafficSplit(Route(CANDIDATE, "v1.1"), 0.5)
    assert split.lose("engine gone") and not split.lose("again") and split.lost == "engine gone"
    assert {split.side(), split.side("someone"), split.side()} == {Role.ACTIVE}
    for share in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            TrafficSplit(Route(CANDIDATE, "v1.1"), share)


class StubEngine:
    """A serving engine answering completions per model: 200 naming the model, or a fault set per model."""

    def __init__(self) -> None:
        # model -> "500", "404", "drop" (close the connection unanswered) or "slow" (answer after SLOW seconds)
        self.faults: dict[str, str] = {}
        self.seen: Counter[str] = Counter()

    async def complete(self, request: web.Request) -> web.StreamResponse:
        model = (await request.json())["model"]
        self.seen[model] += 1
        fault = self.faults.get(model)
        if fault == "drop":
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError("dropped")
        if fault in ("500", "404"):
            return web.json_response({"error": {"code": fault, "message": "no"}}, status=int(fault))
        await asyncio.sleep(SLOW if fault == "slow" else 0.002)
        return web.json_response({"model": model, "choices": [{"text": "ok"}]})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self.complete)
        return app


@pytest.fixture
async def stack() -> AsyncIterator[tuple[StubEngine, AliasRouter, str]]:
    engine = StubEngine()
    runner = web.AppRunner(engine.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    router = AliasRouter("active", "base")
    router.set_target(ACTIVE, "v1.0")
    gateway = Gateway(router, f"http://127.0.0.1:{port}", timeout_seconds=5)
    gw_port = await gateway.start("127.0.0.1", 0)
    yield engine, router, f"http://127.0.0.1:{gw_port}/v1/completions"
    await gateway.stop()
    await runner.cleanup()


async def _ask(session: aiohttp.ClientSession, url: str, user: str = "", *, in_body: bool = False) -> tuple[int, str]:
    headers = {USER_HEADER: user} if user and not in_body else {}
    body = {"model": "active", "prompt": "Hi", **({"user": user} if in_body else {})}
    async with session.post(url, json=body, headers=headers) as r:
        await r.read()
        return r.status, r.headers.get(SERVED_MODEL_HEADER, "")


async def test_the_gateway_splits_counts_each_side_and_keeps_users_sticky(stack) -> None:
    engine, router, url = stack
    before = _metric("learning_engine_traffic_requests_total", version="v1.1", role="candidate")
    split = TrafficSplit(Route(CANDIDATE, "v1.1"), 0.2)
    router.set_split(split)
    assert _metric("learning_engine_traffic_share", version="v1.1", role="candidate") == 0.2
    assert _metric("learning_engine_traffic_share", version="v1.0", role="active") == 0.8
    async with aiohttp.ClientSession() as s:
        served = Counter([(await _ask(s, url))[1] for _ in range(50)])
        assert served == {ACTIVE: 40, CANDIDATE: 10}
        for user in ("ann", "bob", "cy", "dee", "eve"):  # the header and the body's `user` agree
            sides = {(await _ask(s, url, user))[1] for _ in range(3)} | {(await _ask(s, url, user, in_body=True))[1]}
            assert sides == {CANDIDATE if sticky_fraction(CANDIDATE, user) < 0.2 else ACTIVE}
        engine.faults[ACTIVE] = "500"  # an active error is the active's, and is not failed over
        assert (await _ask(s, url, "ann" if sticky_fraction(CANDIDATE, "ann") >= 0.2 else "bob"))[0] == 500
    candidate, active = split.tallies[Role.CANDIDATE], split.tallies[Role.ACTIVE]
    assert candidate.requests + active.requests == 71 and candidate.requests >= 10
    assert (active.errors, candidate.errors, candidate.failovers) == (1, 0, 0)
    assert candidate.mean_seconds > 0.001 and active.error_rate == pytest.approx(1 / active.requests)
    assert _metric("learning_engine_traffic_requests_total", version="v1.1", role="candidate") == (
        before + candidate.requests)
    assert _metric("learning_engine_traffic_errors_total", version="v1.0", role="active") >= 1
    router.set_split(None)
    assert _metric("learning_engine_traffic_share", version="v1.1", role="candidate") == 0.0


@pytest.mark.parametrize("fault, lost", [("500", False), ("404", True), ("drop", True)])
async def test_a_candidate_the_engine_fails_is_failed_over_to_the_active_version(stack, fault: str,
                                                                                  lost: bool) -> None:
    engine, router, url = stack
    split = TrafficSplit(Route(CANDIDATE, "v1.1"), 0.5)
    heard: list[TrafficSplit] = []
    router.on_candidate_lost = heard.append
    router.set_split(split)
    engine.faults[CANDIDATE] = fault
    failovers = _metric("learning_engine_traffic_failovers_total", version="v1.1")
    async with aiohttp.ClientSession() as s:
        answers = [await _ask(s, url) for _ in range(6)]
    assert answers == [(200, ACTIVE)] * 6  # every client got the active version's answer
    candidate = split.tallies[Role.CANDIDATE]
    if lost:  # the engine lost the candidate: the first failure takes it out of traffic, once
        assert engine.seen[CANDIDATE] == 1 and heard == [split] and split.lost
        assert (candidate.requests, candidate.errors, candidate.failovers) == (1, 1, 1)
        assert split.tallies[Role.ACTIVE].requests == 6
        assert ("did not answer" if fault == "drop" else "HTTP 404") in split.lost
    else:  # a 5xx is counted against the candidate, which keeps its share (the policy judges its error rate)
        assert engine.seen[CANDIDATE] == 3 and heard == [] and not split.lost
        assert (candidate.requests, candidate.errors, candidate.failovers) == (3, 3, 3)
    assert _metric("learning_engine_traffic_failovers_total", version="v1.1") == failovers + candidate.failovers
    assert router.inflight(CANDIDATE) == 0 and router.inflight(ACTIVE) == 0


async def test_a_candidate_answer_slower_than_the_read_timeout_is_its_error_not_a_lost_candidate() -> None:
    """The engine took the request and knows the candidate, but answered past gateway_read_timeout_seconds (a long
    unstreamed generation on a busy engine): the request fails over and counts as the candidate's error, for the
    canary policy to judge; it does not end the canary as if the engine had lost the candidate."""
    engine = StubEngine()
    engine.faults[CANDIDATE] = "slow"
    runner = web.AppRunner(engine.app(), shutdown_timeout=SLOW * 2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    router = AliasRouter("active", "base")
    router.set_target(ACTIVE, "v1.0")
    split = TrafficSplit(Route(CANDIDATE, "v1.1"), 0.5)
    heard: list[TrafficSplit] = []
    router.on_candidate_lost = heard.append
    router.set_split(split)
    gateway = Gateway(router, f"http://127.0.0.1:{runner.addresses[0][1]}", timeout_seconds=SLOW / 4)
    url = f"http://127.0.0.1:{await gateway.start('127.0.0.1', 0)}/v1/completions"
    try:
        async with aiohttp.ClientSession() as s:
            answers = [await _ask(s, url) for _ in range(4)]  # dealt in turn: two go to the candidate
    finally:
        await gateway.stop()
        await runner.cleanup()
    assert answers == [(200, ACTIVE)] * 4  # the slow candidate's requests failed over to the active version
    candidate = split.tallies[Role.CANDIDATE]
    assert (candidate.requests, candidate.errors, candidate.failovers) == (2, 2, 2)
    assert engine.seen[CANDIDATE] == 2  # it kept its share after the first slow answer
    assert (split.lost, heard) == ("", [])
    assert router.inflight(CANDIDATE) == 0 and router.inflight(ACTIVE) == 0
