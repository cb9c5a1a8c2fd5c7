"""Concurrent CreateOnlineSession calls for one session_id (two clients, or a client retrying): exactly one creates
the session, the others are answered ALREADY_EXISTS (ONLINE_SESSION_EXISTS), or the winner's session when they
repeat its request_id; none is answered INTERNAL, and none deletes the controls the winner's session runs on (a
loser once did: the session then answered NOT_FOUND and its worker failed). The race is forced: every create is held
between its existence check and the controls' insert until all have got there (or a second has passed, when they
take turns: engine.stores.postgres.advisory_lock, which holds across processes as in one)."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from engine.stores.online_store import PostgresOnlineStore
from learning.v1 import common_pb2 as common
from learning.v1 import online_pb2 as ol
from tests.server.conftest import TINY, error_details
from tests.server.lora_helpers import train
from tests.server.test_online import FAST, facts, online, session, until

CREATES = 4
HELD_SECONDS = 1.0  # how long a create waits at the insert for the others to get there


def _spec(start: str) -> ol.OnlineSessionSpec:
    return ol.OnlineSessionSpec(start_version=start, update_every=5, publish_every=0, learning_rate=5e-3,
                                ewc_lambda=0, replay_fraction=0, max_seq_length=64)


@pytest.fixture
def held_at_insert(monkeypatch: pytest.MonkeyPatch):
    """Hold every store create until ``CREATES`` of them are under way, or ``HELD_SECONDS`` have passed."""
    original = PostgresOnlineStore.create
    arrived = 0
    all_there = asyncio.Event()

    async def create(self, session_id: str, *args, **kwargs) -> None:
        nonlocal arrived
        arrived += 1
        if arrived >= CREATES:
            all_there.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_there.wait(), HELD_SECONDS)
        return await original(self, session_id, *args, **kwargs)

    def reset() -> None:
        nonlocal arrived
        arrived = 0
        all_there.clear()

    monkeypatch.setattr(PostgresOnlineStore, "create", create)
    return reset


async def _create(sessions, session_id: str, start: str, request_id: str):
    try:
        return await sessions.CreateOnlineSession(ol.CreateOnlineSessionRequest(
            session_id=session_id, request_id=request_id, spec=_spec(start)))
    except grpc.aio.AioRpcError as err:
        return err


def _answers(outcomes) -> list[str]:
    return sorted("OK" if not isinstance(o, grpc.aio.AioRpcError) else o.code().name for o in outcomes)


async def _learns(client, name: str) -> None:
    """The session is gettable, running, and its worker learns from what it is sent."""
    sessions = online(client)
    got = await session(client, name)
    assert got.name == name
    await sessions.AddExamples(ol.AddExamplesRequest(name=name, examples=facts(5)))

    async def updated() -> ol.OnlineSession | None:
        found = await session(client, name)
        assert found.state not in (common.JOB_STATE_FAILED, common.JOB_STATE_CANCELLED), found
        return found if found.stats.total_updates >= 1 and found.state == common.JOB_STATE_RUNNING else None

    await until(updated)
    await sessions.StopOnlineSession(ol.StopOnlineSessionRequest(name=name))


async def _race(client, start: str, session_id: str, request_ids: list[str]) -> list:
    sessions = online(client)
    return await asyncio.gather(*(_create(sessions, session_id, start, r) for r in request_ids))


def _check_one_winner(session_id: str, outcomes) -> None:
    answers = _answers(outcomes)
    assert answers == ["ALREADY_EXISTS"] * (CREATES - 1) + ["OK"], (session_id, answers, [
        o.details() for o in outcomes if isinstance(o, grpc.aio.AioRpcError)])
    for lost in (o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)):
        info, _ = error_details(lost)
        assert info.reason == "ONLINE_SESSION_EXISTS", info
        assert info.metadata["name"] == f"onlineSessions/{session_id}", info
    won = next(o for o in outcomes if not isinstance(o, grpc.aio.AioRpcError))
    assert won.session.name == f"onlineSessions/{session_id}"


async def test_concurrent_creates_of_one_session_id(make_pg_server, held_at_insert) -> None:
    client = await make_pg_server(**FAST)
    start = await train(client)
    held_at_insert()
    outcomes = await _race(client, start, "twins", [f"twins-{i}" for i in range(CREATES)])
    _check_one_winner("twins", outcomes)
    await _learns(client, "onlineSessions/twins")
    # A create of it afterwards is refused the same way, and changes nothing.
    late = await _create(online(client), "twins", start, "twins-late")
    assert isinstance(late, grpc.aio.AioRpcError) and late.code() is grpc.StatusCode.ALREADY_EXISTS, late
    assert (await session(client, "onlineSessions/twins")).name == "onlineSessions/twins"


async def test_concurrent_retries_of_one_request_get_the_session_it_made(make_pg_server, held_at_insert) -> None:
    client = await make_pg_server(**FAST)
    start = await train(client)
    held_at_insert()
    outcomes = await _race(client, start, "retried", ["retried-request"] * CREATES)
    assert _answers(outcomes) == ["OK"] * CREATES, [o.details() for o in outcomes
                                                    if isinstance(o, grpc.aio.AioRpcError)]
    assert {o.session.name for o in outcomes} == {"onlineSessions/retried"}
    await _learns(client, "onlineSessions/retried")


async def test_controls_whose_job_was_never_stored_are_replaced_by_the_next_create(make_pg_server) -> None:
    """A server stopped between a create's controls and its job leaves controls without a session; the next create
    of the id (which takes its turn, so no other create of it is under way) replaces them and runs."""
    client = await make_pg_server(**FAST)
    start = await train(client)
    store = PostgresOnlineStore(client.app.owned.pool)
    async with store.creating("claimed"):
        await store.create("claimed", 1e-3, base_model=TINY, start_version=start, live_alias="claimed-live")
    created = await _create(online(client), "claimed", start, "")
    assert not isinstance(created, grpc.aio.AioRpcError), created.details()
    assert (await store.controls("claimed")).learning_rate == 5e-3  # the new create's, not the leftover's
    await _learns(client, "onlineSessions/claimed")
