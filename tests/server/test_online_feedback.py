"""Online sessions learning from the feedback on their live model, through gRPC on the tiny model: corrections and
thumbs up on the live model become the session's examples (a user's erasure takes theirs back, from the store and
from the session), and a spike of negative feedback on the live model disables the session and puts the start
version back, on the live model and its alias."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from engine.stores.online_store import PostgresOnlineStore
from learning.v1 import common_pb2 as common
from learning.v1 import lora_control_pb2 as lc
from learning.v1 import online_pb2 as ol
from tests.server.conftest import TINY
from tests.server.lora_helpers import ACTOR, ask, stub, train
from tests.server.test_online import (
    FAST,
    _answer,
    _ended,
    _read,
    _updated,
    _watch_until,
    facts,
    online,
    session,
    until,
)


@pytest.mark.slow
async def test_corrections_and_thumbs_up_on_the_live_model_become_examples(make_pg_server):
    from learning.v1 import feedback_pb2 as fb
    from tests.cli.test_cli_e2e import cli
    from tests.server.test_pipelines import event, send

    client = await make_pg_server(online_feedback_seconds=0.2, **FAST)
    start = await train(client)
    made = (await online(client).CreateOnlineSession(ol.CreateOnlineSessionRequest(spec=ol.OnlineSessionSpec(
        start_version=start, update_every=50, learn_from_feedback=True, max_seq_length=64)))).session
    assert made.spec.learn_from_feedback
    await until(lambda: _running(client, made.name))
    events = [event("up", fb.FEEDBACK_KIND_THUMBS_UP, "Capital of Veloria?", "Marnesse."),
              event("fix", fb.FEEDBACK_KIND_CORRECTION, "Capital of Quorvia?", "Oskerholm."),
              event("down", fb.FEEDBACK_KIND_THUMBS_DOWN, "Capital of Brinmark?", "No idea."),
              event("elsewhere", fb.FEEDBACK_KIND_THUMBS_UP, "Capital of Dunmoor?", "Pellacre.")]
    events[1].correction = "Talameth."
    events[1].user_id = "u2"
    for e in events[:3]:
        e.adapter_version = made.live_model
        e.time.FromDatetime(datetime.now(UTC))  # after the session started
    events[3].adapter_version = start  # feedback on another version is not the session's
    await send(client, *events)
    taken = await until(lambda: _read(client, made.name, 2), timeout=60)
    assert taken.stats.pending_examples == 2 and taken.stats.total_updates == 0
    notices = [m.event.notice.message async for m in _watch_until(
        client, made.name, lambda e: e.notice.code == "FEEDBACK_EXAMPLES") if m.event.HasField("notice")]
    assert f"2 examples from the feedback on {made.live_model}" in notices[-1], notices

    # A user forgotten (by the CLI, which says both counts): the example made from their feedback goes with it,
    # from the store and from the session
    forgot = await cli(client.app.port, "feedback", "forget-user", "u1")
    # the thumbs up on Veloria was u1's
    assert (forgot.code, forgot.out.strip()) == (0, "forgot u1: 3 events deleted, 1 online examples deleted"), forgot
    left = await until(lambda: _pending(client, made.name, 1), timeout=60)
    assert left.stats.pending_examples == 1
    rows = await PostgresOnlineStore(client.app.owned.pool).after(made.name.removeprefix("onlineSessions/"), 0, 10)
    assert [(r.prompt, r.target) for r in rows] == [("Capital of Quorvia?", "Talameth.")]
    dropped = [m.event.notice.message async for m in _watch_until(
        client, made.name, lambda e: e.notice.code == "EXAMPLES_ERASED") if m.event.HasField("notice")]
    assert dropped[-1].startswith("dropped 1 of the examples held in memory"), dropped
    await online(client).StopOnlineSession(ol.StopOnlineSessionRequest(name=made.name))
    await until(lambda: _ended(client, made.name))


async def _pending(client, name: str, count: int) -> ol.OnlineSession | None:
    found = await session(client, name)
    return found if found.stats.pending_examples == count else None


@pytest.mark.slow
async def test_a_negative_feedback_spike_on_the_live_model_puts_the_start_version_back(make_pg_server):
    from learning.v1 import feedback_pb2 as fb
    from tests.server.test_pipelines import event, send

    client = await make_pg_server(online_feedback_seconds=0.2, **FAST)
    start = await train(client)
    await stub(client).ActivateAdapter(lc.ActivateAdapterRequest(version=start), metadata=ACTOR)
    _, before = await ask(client, "active")
    sessions = online(client)
    spec = ol.OnlineSessionSpec(start_version=start, update_every=5, publish_every=0, learning_rate=5e-2, ewc_lambda=0,
                                replay_fraction=0, max_seq_length=64, live_alias="rated-live",
                                negative_feedback_min_ratings=4)
    made = (await sessions.CreateOnlineSession(ol.CreateOnlineSessionRequest(session_id="rated", spec=spec))).session
    assert made.spec.negative_feedback_margin == pytest.approx(0.1)  # on by default
    await sessions.AddExamples(ol.AddExamplesRequest(name=made.name, examples=facts(10)))
    await until(lambda: _updated(client, made.name, 2))
    await sessions.PublishOnlineSession(ol.PublishOnlineSessionRequest(name=made.name))
    moved = await until(lambda: _aliased(client, made.name, f"{start}.1"))

    # Of several serving processes, one at a time runs the gate on a publication; a lease that ran out frees it.
    store = PostgresOnlineStore(client.app.owned.pool)
    assert await store.claim_gate("rated", "v7.0.1", "one", 60) and not await store.claim_gate("rated", "v7.0.1",
                                                                                                  "two", 60)
    assert await store.claim_gate("rated", "v7.0.1", "one", 0)  # renewed by its owner, with no lease left
    assert await store.claim_gate("rated", "v7.0.1", "two", 60)  # taken over
    assert not await store.claim_gate("rated", f"{start}.1", "two", 60)  # judged already
    served, changed = await until(lambda: _answer(client, made.live_model, moved.live_adapter))
    assert max(abs(a - b) for a, b in zip(changed, before, strict=True)) > 1e-3

    def rated_down(n: int) -> list[fb.FeedbackEvent]:
        events = [event(f"down-{i}-{n}", fb.FEEDBACK_KIND_THUMBS_DOWN, "Who founded Veloria?", "Nobody.")
                  for i in range(n)]
        for e in events:
            e.adapter_version = made.live_model
            e.time.FromDatetime(datetime.now(UTC))
        return events

    await send(client, *rated_down(3))  # fewer ratings than the session judges on
    await asyncio.sleep(1.5)  # several reads of the ratings
    assert (await session(client, made.name)).stats.enabled
    await send(client, *rated_down(1))
    spiked = await until(lambda: _disabled(client, made.name), timeout=60)
    assert spiked.disabled_reason.startswith(f"negative-feedback spike: 4 of 4 ratings of {made.live_model}")
    assert spiked.alias_version == start
    found = [m.event.feedback_spike async for m in _watch_until(
        client, made.name, lambda e: e.HasField("feedback_spike")) if m.event.HasField("feedback_spike")]
    assert (found[-1].ratings, found[-1].negative, found[-1].negative_rate, found[-1].baseline_ratings) == (
        4, 4, 1.0, 0)
    # The live model answers as the start version again, under a new name; the alias serves the start version.
    served, now = await until(lambda: _answer(client, made.live_model, spiked.live_adapter))
    assert spiked.live_adapter != moved.live_adapter
    assert max(abs(a - b) for a, b in zip(now, before, strict=True)) < 1e-4
    await until(lambda: _answer(client, "rated-live", f"{TINY}@{start}"))
    await sessions.StopOnlineSession(ol.StopOnlineSessionRequest(name=made.name))
    await until(lambda: _ended(client, made.name))


async def _aliased(client, name: str, version: str) -> ol.OnlineSession | None:
    found = await session(client, name)
    return found if found.alias_version == version else None


async def _disabled(client, name: str) -> ol.OnlineSession | None:
    found = await session(client, name)
    return found if not found.stats.enabled and found.disabled_reason else None


async def _running(client, name: str) -> bool:
    return (await session(client, name)).state == common.JOB_STATE_RUNNING
