"""StopOnlineSession's count of the examples received and never trained on (EXAMPLES_NOT_TRAINED, and the ended
session's message) agrees with what AddExamples acknowledged. An insert that had passed the session's state check
when the stop came, and committed after the stopping worker had counted, used to be acknowledged and left out of the
count. The race is forced: the insert is held between that check and its write until the worker has counted."""

from __future__ import annotations

import asyncio
import re

import grpc

from engine.stores.online_store import PostgresOnlineStore
from learning.v1 import common_pb2 as common
from learning.v1 import online_pb2 as ol
from tests.server.conftest import error_details
from tests.server.test_online import FAST, facts, session, until
from tests.server.test_stream_examples_helper_errors import new_session

UNTRAINED = re.compile(r"(\d+) examples? received (?:was|were) not trained on")


async def test_an_example_added_as_the_stop_counts_is_counted_or_refused(make_pg_server, monkeypatch) -> None:
    client = await make_pg_server(**FAST)
    sessions, made = await new_session(client)  # update_every 1000: no example is trained on
    session_id = made.name.removeprefix("onlineSessions/")

    async def running() -> bool:
        return (await session(client, made.name)).state == common.JOB_STATE_RUNNING

    await until(running)
    first = await sessions.AddExamples(ol.AddExamplesRequest(name=made.name, examples=facts(3)))
    assert first.accepted == 3

    real_add, real_count = PostgresOnlineStore.add, PostgresOnlineStore.count_after
    arrived, counted = asyncio.Event(), asyncio.Event()

    async def add(self, *args, **kwargs):
        arrived.set()  # the session was open when its state was checked
        await asyncio.wait_for(counted.wait(), 60)
        return await real_add(self, *args, **kwargs)

    async def count_after(self, *args, **kwargs):
        try:
            return await real_count(self, *args, **kwargs)
        finally:
            counted.set()

    monkeypatch.setattr(PostgresOnlineStore, "add", add)
    monkeypatch.setattr(PostgresOnlineStore, "count_after", count_after)
    late = asyncio.ensure_future(sessions.AddExamples(ol.AddExamplesRequest(name=made.name,
                                                                            examples=facts(2, start=3))))
    await asyncio.wait_for(arrived.wait(), 30)
    await sessions.StopOnlineSession(ol.StopOnlineSessionRequest(name=made.name))
    try:
        acknowledged = 3 + (await late).accepted
    except grpc.aio.AioRpcError as err:  # refused: the session was stopping when it was written
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
        assert error_details(err)[0].reason == "ONLINE_SESSION_ENDED"
        acknowledged = 3

    async def ended() -> ol.OnlineSession | None:
        found = await session(client, made.name)
        return found if found.state == common.JOB_STATE_CANCELLED else None

    message = (await until(ended)).error.message
    said = UNTRAINED.search(message)
    assert said is not None, message
    stored = len(await PostgresOnlineStore(client.app.owned.pool).after(session_id, 0, 100))
    assert (int(said.group(1)), stored) == (acknowledged, acknowledged), (message, stored)
