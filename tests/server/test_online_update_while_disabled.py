"""ForceUpdate on a session whose learning is disabled is FAILED_PRECONDITION (ONLINE_LEARNING_DISABLED), naming the
session and why learning is off, and nothing is queued: the runner updates only an enabled session, so a request
taken then waited unseen, answered "requested", and ran an update whenever someone enabled learning. Once learning is
enabled again, the same call makes the update at once; asked with nothing to train on, the session says so."""

from __future__ import annotations

import grpc
import pytest

from engine.stores.online_store import PostgresOnlineStore
from learning.v1 import online_pb2 as ol
from tests.server.conftest import error_details
from tests.server.lora_helpers import train
from tests.server.test_online import FAST, _said, facts, online, session, until


async def test_an_update_asked_while_learning_is_disabled_is_refused_and_not_queued(make_pg_server) -> None:
    client = await make_pg_server(**FAST)
    start = await train(client, epochs=1)
    made = (await online(client).CreateOnlineSession(ol.CreateOnlineSessionRequest(session_id="notes", spec=(
        ol.OnlineSessionSpec(start_version=start, update_every=10, publish_every=0, max_seq_length=64,
                             ewc_lambda=0, replay_fraction=0))))).session
    await online(client).DisableOnlineLearning(ol.DisableOnlineLearningRequest(name=made.name, reason="audit"))
    await online(client).AddExamples(ol.AddExamplesRequest(name=made.name, examples=facts(3)))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await online(client).ForceUpdate(ol.ForceUpdateRequest(name=made.name))
    info, _ = error_details(caught.value)
    assert (caught.value.code(), info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ONLINE_LEARNING_DISABLED")
    assert dict(info.metadata) == {"name": made.name, "disabled_reason": "audit"}, info
    assert "has learning disabled (audit); enable it first" in (caught.value.details() or ""), caught.value.details()
    controls = await PostgresOnlineStore(client.app.owned.pool).controls("notes")
    assert controls.force_updates == 0 and not controls.enabled, controls  # nothing left to run on enable

    await online(client).EnableOnlineLearning(ol.EnableOnlineLearningRequest(name=made.name))
    await online(client).ForceUpdate(ol.ForceUpdateRequest(name=made.name))  # 3 of update_every 10: forced only
    updated = await until(lambda: _updates(client, made.name))
    assert updated.stats.total_updates == 1 and updated.stats.total_examples == 3, updated.stats
    # Asked again with nothing left to train on: said on the session's events (it was done silently, "update
    # requested" and then nothing to see)
    await online(client).ForceUpdate(ol.ForceUpdateRequest(name=made.name))
    said = await _said(client, made.name, lambda e: e.notice.code == "NOTHING_TO_UPDATE")
    assert "no example waits for one" in said[-1].notice.message, said[-1]
    assert (await session(client, made.name)).stats.total_updates == 1
    await online(client).StopOnlineSession(ol.StopOnlineSessionRequest(name=made.name))


async def _updates(client, name: str) -> ol.OnlineSession | None:
    got = await session(client, name)
    return got if got.stats.total_updates else None
