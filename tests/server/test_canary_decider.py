"""A canary whose decider could not be claimed as it started (the store failing at that moment, after the split was
stored and routed) has started all the same, and is decided: the process that started it keeps claiming its decider
at each check of its decision loop, as it renews the claim, instead of leaving a split in force that nothing decides
until some serving process's follow takes it over, and the caller told it failed."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from google.protobuf import duration_pb2

from engine.lora.canary import CanaryDecision
from learning.v1 import lora_control_pb2 as lc
from tests.server.lora_helpers import activate, train
from tests.server.test_canary import start


@pytest.mark.slow
async def test_a_canary_whose_decider_was_not_claimed_at_its_start_is_started_and_decided(make_server, monkeypatch):
    # Following every ten minutes, and the test never asks for the status (which follows): no follow's takeover of
    # the decider decides this canary in the test's time, only the loop of the process that started it.
    client = await make_server(serving_follow_seconds=600)
    v10 = await train(client)
    v11 = await train(client, parent=v10)
    await activate(client, v10)
    controller = client.app.owned.lora.controller
    store = controller._store
    claim = store.claim_decider
    failed: list[int] = []

    async def flaky(split_id: int, process: str, lease_seconds: float) -> bool:
        if not failed:  # the split is stored and routed by now; the database goes away for this one call
            failed.append(split_id)
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")
        return await claim(split_id, process, lease_seconds)

    monkeypatch.setattr(store, "claim_decider", flaky)
    policy = lc.CanaryPolicy(share=0.5, min_requests=0, min_feedback=0, duration=duration_pb2.Duration(seconds=1),
                             check_interval=duration_pb2.Duration(nanos=200_000_000))
    st = await start(client, v11, policy)
    assert failed, "the decider's claim was never made"
    assert (st.traffic_split.kind, st.traffic_split.candidate_version) == (lc.TRAFFIC_SPLIT_KIND_CANARY, v11)
    assert (st.last_operation.kind, st.last_operation.HasField("error")) == (lc.LORA_OPERATION_KIND_CANARY_START,
                                                                             False)

    outcome = await asyncio.wait_for(controller.wait_canary(v11, poll_seconds=0.2), 30)
    assert outcome.decision is CanaryDecision.PROMOTED, outcome
    assert controller.snapshot().active_version == v11
    history = await store.history(controller.target, 10)
    assert [op.kind.value for op in history][:2] == ["CANARY_PROMOTE", "CANARY_START"]
