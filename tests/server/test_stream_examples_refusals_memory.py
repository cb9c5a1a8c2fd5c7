"""StreamExamples keeps a count of the refusals of a stream and only the last of them, which its answers show: a long
stream of refused examples does not grow the server's memory (each refusal a string of up to ~130 characters, for an
example of a few bytes on the wire)."""

from __future__ import annotations

import asyncio

from learning.v1 import online_pb2 as ol
from server.services import online as online_service
from tests.server.test_online import FAST
from tests.server.test_stream_examples_helper_errors import new_session


async def test_a_stream_of_refused_examples_keeps_bounded_memory(make_pg_server, monkeypatch):
    sessions, made = await new_session(await make_pg_server(**FAST))

    tallies = []

    class Tally(online_service._Tally):
        def __init__(self) -> None:
            super().__init__()
            tallies.append(self)

    monkeypatch.setattr(online_service, "_Tally", Tally)

    async def requests():
        yield ol.StreamExamplesRequest(name=made.name)
        for _ in range(20):
            yield ol.StreamExamplesRequest(examples=[ol.OnlineExample(prompt=" ", target="x")] * 500)

    answers = await asyncio.wait_for(_collect(sessions.StreamExamples(requests())), 120)
    assert answers[-1].refused == 10_000 and len(answers[-1].refusals) == 20
    kept = len(tallies[0].refusals)
    assert kept <= 100, f"the server holds all {kept} refusals of the stream, of which it shows 20"


async def _collect(call) -> list[ol.StreamExamplesResponse]:
    return [a async for a in call]
