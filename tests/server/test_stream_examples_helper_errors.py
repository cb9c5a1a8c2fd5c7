"""StreamExamples ends with the status of any of its helper tasks (receive, follow, settle) that fails: an error in
``settle`` (the session read once the client has closed its side, e.g. the database restarting) ends the stream
with UNAVAILABLE rather than leaving the client waiting for a last answer that never comes."""

from __future__ import annotations

import asyncio
import sys

import grpc
import pytest

from engine.errors import Unavailable
from engine.online.service import OnlineSessions
from learning.v1 import online_pb2 as ol
from learning.v1 import online_pb2_grpc as ol_grpc
from tests.server.lora_helpers import train
from tests.server.test_online import FAST, facts


async def new_session(client) -> tuple[ol_grpc.OnlineLearningServiceStub, ol.OnlineSession]:
    """A session from a freshly trained version that waits for many examples before it updates."""
    start = await train(client, epochs=1)
    sessions = ol_grpc.OnlineLearningServiceStub(client.channel)
    made = (await sessions.CreateOnlineSession(ol.CreateOnlineSessionRequest(spec=ol.OnlineSessionSpec(
        start_version=start, update_every=1000, learning_rate=5e-3, max_seq_length=64)))).session
    return sessions, made


async def stream(sessions, name: str) -> list[ol.StreamExamplesResponse]:
    async def requests():
        yield ol.StreamExamplesRequest(name=name)
        yield ol.StreamExamplesRequest(examples=facts(3))

    return [a async for a in sessions.StreamExamples(requests())]


async def test_a_failing_session_read_after_the_client_closed_ends_the_stream(make_pg_server, monkeypatch):
    sessions, made = await new_session(await make_pg_server(**FAST))

    answers = await asyncio.wait_for(stream(sessions, made.name), 60)  # as it is: the stream ends
    assert answers[-1].accepted == 3

    real_get = OnlineSessions.get
    failed = []

    async def get(self, session_id):
        if sys._getframe(1).f_code.co_name == "settle" and not failed:  # once: the database restarting
            failed.append(True)
            raise Unavailable("DATABASE_UNAVAILABLE", "the database is restarting")
        return await real_get(self, session_id)

    monkeypatch.setattr(OnlineSessions, "get", get)
    try:
        answers = await asyncio.wait_for(stream(sessions, made.name), 30)
    except grpc.aio.AioRpcError as err:  # ending with the error is as good as ending after a retry
        assert err.code() == grpc.StatusCode.UNAVAILABLE
    except TimeoutError:
        pytest.fail(f"the stream never ended after its settle task failed (failed={failed})")
