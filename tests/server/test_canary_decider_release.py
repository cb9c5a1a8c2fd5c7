"""A serving process that stops gracefully lets go of the canary it decides: the decider's lease lasts three checks
(``check_interval`` may be a day), and a restarted server (or the other replica) must not leave the canary undecided
until the lease of a process that is gone runs out. It lets go of its own lease only: the release is fenced by the
process that holds it."""

from __future__ import annotations

import asyncio

import pytest
from google.protobuf import duration_pb2

from engine.lora.canary import CanaryDecision
from learning.v1 import lora_control_pb2 as lc
from tests.server.lora_helpers import activate, train
from tests.server.test_canary import start


@pytest.mark.slow
async def test_a_stopped_decider_lets_the_next_process_decide_the_canary_at_once(make_server):
    # An hour between checks: the lease of the process that started the canary lasts three hours unreleased. No
    # periodic follow either (every ten minutes): only what a process does as it starts and closes counts here.
    one = await make_server(serving_follow_seconds=600)
    v10 = await train(one)
    v11 = await train(one, parent=v10)
    await activate(one, v10)
    policy = lc.CanaryPolicy(share=0.5, min_requests=0, min_feedback=0, duration=duration_pb2.Duration(nanos=1_000_000),
                             check_interval=duration_pb2.Duration(seconds=3600))
    await start(one, v11, policy)
    deciding = one.app.owned.lora.controller
    assert deciding._loop is not None, "the process that started the canary does not decide it"
    split = deciding._split
    assert split is not None
    await one.app.stop(0)

    restarted = await make_server(serving_follow_seconds=600)
    controller = restarted.app.owned.lora.controller
    store = controller._store
    assert controller._split is not None and controller._split.id == split.id
    assert controller._loop is not None, "the restarted server did not take the canary's decider over as it started"
    assert not await store.claim_decider(split.id, "a-third-process", 10.0)  # it holds the lease now

    await controller.check_canary(split.id)  # its first check (an hour away on its own) decides
    outcome = await asyncio.wait_for(controller.wait_canary(v11, poll_seconds=0.2), 10)
    assert outcome.decision is CanaryDecision.PROMOTED, outcome
    assert controller.snapshot().active_version == v11


async def test_a_process_releases_only_the_decider_lease_it_holds(make_server):
    client = await make_server(serving_follow_seconds=600)
    v10 = await train(client)
    v11 = await train(client, parent=v10)
    await activate(client, v10)
    policy = lc.CanaryPolicy(share=0.5, min_requests=0, min_feedback=0, duration=duration_pb2.Duration(seconds=3600),
                             check_interval=duration_pb2.Duration(seconds=3600))
    await start(client, v11, policy)
    controller = client.app.owned.lora.controller
    store, split = controller._store, controller._split
    assert split is not None and controller._loop is not None

    await store.release_decider(split.id, "another-process")  # not its lease: nothing changes
    assert not await store.claim_decider(split.id, "another-process", 10.0)
    await store.release_decider(split.id, controller._process)  # its own
    assert await store.claim_decider(split.id, "another-process", 10.0)

    await store.release_decider(split.id, controller._process)  # no longer its own: the other keeps it
    assert not await store.claim_decider(split.id, controller._process, 10.0)
    await client.app.stop(0)
