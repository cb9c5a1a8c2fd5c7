"""Canary rollouts and manual traffic splits through gRPC and the gateway, on the tiny model: a candidate whose
users complain more is rolled back by itself and one they like better is promoted, each decision recorded with
its figures; a manual A/B split; bad input; the serving engine losing the candidate mid-canary (fail-over to the
active version, the canary aborted and recorded); and a restart that resumes a canary."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import aiohttp
import grpc
import pytest
from google.protobuf import duration_pb2

from engine import telemetry
from engine.lora.canary import CanaryDecision
from engine.serving.reference_model import ReferenceModel
from learning.v1 import feedback_pb2 as fb
from learning.v1 import feedback_pb2_grpc as fb_grpc
from learning.v1 import lora_control_pb2 as lc
from tests.fixtures.serving import start_backend
from tests.server.conftest import TINY, error_details
from tests.server.lora_helpers import ACTOR, RETIRE_FAST, activate, gateway_url, loaded_when, status, stub, train

_ids = itertools.count()


def fast(**fields) -> lc.CanaryPolicy:
    """A policy that checks five times a second."""
    return lc.CanaryPolicy(check_interval=duration_pb2.Duration(nanos=200_000_000), **fields)


async def start(client, version: str, policy: lc.CanaryPolicy, **kw) -> lc.LoraStatus:
    request = lc.StartCanaryRequest(version=version, policy=policy, reason="weekly update", **kw)
    return (await stub(client).StartCanary(request, metadata=ACTOR)).status


async def send(client, n: int, user: str = "") -> Counter[str]:
    """``n`` completions to the alias through the gateway; how many each upstream model served."""
    served: Counter[str] = Counter()
    headers = {"x-user-id": user} if user else {}
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            async with s.post(gateway_url(client) + "/v1/completions", headers=headers,
                              json={"model": "active", "prompt": "Hello", "max_tokens": 2}) as r:
                await r.read()
                assert r.status == 200
                served[r.headers["x-served-model"]] += 1
    return served


async def followed(client, candidate: str) -> None:
    """Wait until this serving process routes the split another started: it reads the target's state every
    ``serving_follow_seconds``, later on a loaded machine."""
    for _ in range(100):
        if (await status(client)).traffic_split.candidate_version == candidate:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{client} never routed the canary of {candidate}")


async def counted(client, candidate: int, active: int) -> None:
    """Wait until the split in force reads these requests on each side, in this process's view (its gateway's counts
    and the other serving processes' as last read)."""
    for _ in range(100):
        figures = (await status(client)).traffic_split.figures
        if (figures.candidate.requests, figures.active.requests) == (candidate, active):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"counted {figures.candidate.requests} and {figures.active.requests}")


async def rate(client, adapter_version: str, up: int, down: int) -> None:
    """Thumbs up and down from users who were served ``adapter_version`` (a version or its serving name)."""
    kinds = [fb.FEEDBACK_KIND_THUMBS_UP] * up + [fb.FEEDBACK_KIND_THUMBS_DOWN] * down
    events = [fb.FeedbackEvent(client_event_id=f"e{next(_ids)}", kind=k, adapter_version=adapter_version,
                               user_id=f"u{i}", interaction=fb.Interaction(prompt="Hello", response="Hi"))
              for i, k in enumerate(kinds)]
    await fb_grpc.FeedbackServiceStub(client.channel).SubmitFeedback(fb.SubmitFeedbackRequest(events=events))


async def _fails(call, code: grpc.StatusCode, reason: str) -> list[tuple[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value.details()
    info, violations = error_details(err.value)
    assert info.reason == reason, (info.reason, err.value.details())
    return violations


@pytest.mark.slow
async def test_worse_feedback_rolls_the_canary_back_and_better_feedback_promotes_it(make_server):
    client = await make_server(**RETIRE_FAST)  # an ended canary's candidate is retired in the background, soon
    v10 = await train(client)
    v11 = await train(client, parent=v10)
    await activate(client, v10, mark_known_good=True)
    controller = client.app.owned.lora.controller
    candidate, active = f"{TINY}@{v11}", f"{TINY}@{v10}"
    decided = telemetry.REGISTRY.get_sample_value("learning_engine_canary_decisions_total",
                                                  {"decision": "ROLLED_BACK"}) or 0.0

    # A canary at 50%: it passes the gate (off here, as in every server test but the gate's own) and takes its share.
    policy = fast(share=0.5, min_requests=10, min_feedback=10, feedback_margin=0.1)
    st = await start(client, v11, policy)
    split = st.traffic_split
    assert (split.kind, split.active_version, split.candidate_version, split.share) == (
        lc.TRAFFIC_SPLIT_KIND_CANARY, v10, v11, 0.5)
    assert split.policy.min_requests == 10 and split.policy.error_spike == 0.5  # unset fields: the defaults
    assert split.actor == "alice@example.com" and split.reason == "weekly update"
    assert st.last_operation.kind == lc.LORA_OPERATION_KIND_CANARY_START and {"load", "smoke", "switch"} <= set(
        st.last_operation.phase_durations)
    assert sorted(a.version for a in st.loaded) == [v10, v11]
    assert controller.canary().candidate_version == v11

    assert await send(client, 30) == {active: 15, candidate: 15}
    await _fails(start(client, v11, fast()), grpc.StatusCode.FAILED_PRECONDITION, "TRAFFIC_SPLIT_RUNNING")
    await _fails(stub(client).SetTrafficSplit(lc.SetTrafficSplitRequest(version=v11, share=0.2)),
                 grpc.StatusCode.FAILED_PRECONDITION, "TRAFFIC_SPLIT_RUNNING")
    figures = (await status(client)).traffic_split.figures
    assert (figures.candidate.requests, figures.active.requests, figures.candidate.errors) == (15, 15, 0)
    assert figures.candidate.mean_latency.ToTimedelta().total_seconds() > 0

    # Its users complain: 8 of 10 thumbs down (by its serving name), against 2 of 10 for the active (by version).
    await rate(client, candidate, up=2, down=8)
    await rate(client, v10, up=8, down=2)
    outcome = await asyncio.wait_for(controller.wait_canary(v11), 30)
    assert outcome.decision is CanaryDecision.ROLLED_BACK
    assert (outcome.figures.candidate.negative_rate, outcome.figures.active.negative_rate) == (0.8, 0.2)
    assert (outcome.figures.candidate.requests, outcome.figures.active.requests) == (15, 15)
    assert outcome.reason.startswith("worse than the active version: negative feedback 80.0% > the active's 20.0%")

    st = await status(client)
    assert not st.HasField("traffic_split") and st.active_version == v10
    assert await loaded_when(client, [v10]) == [v10]  # the candidate is unloaded (retired)
    op = st.last_operation
    assert op.kind == lc.LORA_OPERATION_KIND_CANARY_ROLLBACK and op.actor == "canary" and op.version == v11
    assert op.reason == outcome.reason and op.traffic.candidate.negative_feedback == 8
    assert st.last_canary.decision == lc.CANARY_DECISION_ROLLED_BACK and st.last_canary.reason == outcome.reason
    assert st.last_canary.figures.candidate.requests == 15
    assert await send(client, 4) == {active: 4}
    assert telemetry.REGISTRY.get_sample_value("learning_engine_canary_decisions_total",
                                               {"decision": "ROLLED_BACK"}) == decided + 1

    # Again, and now its users like it better: 1 of 10 thumbs down against 3 of 10. Promoted.
    await start(client, v11, policy)
    assert await send(client, 20) == {active: 10, candidate: 10}
    await rate(client, v11, up=9, down=1)
    await rate(client, active, up=7, down=3)
    outcome = await asyncio.wait_for(controller.wait_canary(v11), 30)
    assert outcome.decision is CanaryDecision.PROMOTED, outcome.reason
    assert outcome.reason.startswith("not worse than the active version: negative feedback 10.0% vs 30.0%")
    st = await status(client)
    assert (st.active_version, st.previous_version, st.known_good_version) == (v11, v10, v10)
    assert st.last_operation.kind == lc.LORA_OPERATION_KIND_CANARY_PROMOTE and "to_serving" in (
        st.last_operation.phase_durations)
    assert st.last_canary.decision == lc.CANARY_DECISION_PROMOTED
    assert await send(client, 3) == {candidate: 3}
    assert (await controller.wait_canary(v11)).decision is CanaryDecision.PROMOTED  # at once: decided already

    async with client.app.owned.pool.acquire() as conn:
        ops = await conn.fetch("SELECT kind, version, traffic FROM lora_operations WHERE kind LIKE 'CANARY%'"
                               " AND error IS NULL ORDER BY id")  # the refused start is recorded too
        splits = await conn.fetch("SELECT decision, end_time FROM lora_traffic_splits ORDER BY id")
    assert [(o["kind"], o["version"], o["traffic"] is not None) for o in ops] == [
        ("CANARY_START", v11, False), ("CANARY_ROLLBACK", v11, True),
        ("CANARY_START", v11, False), ("CANARY_PROMOTE", v11, True)]
    assert [(s["decision"], s["end_time"] is not None) for s in splits] == [("ROLLED_BACK", True), ("PROMOTED", True)]


@pytest.mark.slow
async def test_manual_split_bad_input_and_the_engine_losing_the_candidate(make_server, tiny_model_dir):
    backend = await start_backend(ReferenceModel(tiny_model_dir, TINY))
    client = await make_server(serving_url=backend.url, **RETIRE_FAST)
    v10 = await train(client)
    v11 = await train(client, parent=v10)
    control = stub(client)
    await _fails(start(client, v11, fast()), grpc.StatusCode.FAILED_PRECONDITION, "NO_ACTIVE_VERSION")
    await activate(client, v10)

    # bad input, each naming its field
    assert await _fails(start(client, v11, fast(share=1.5)), grpc.StatusCode.INVALID_ARGUMENT,
                        "INVALID_CANARY_POLICY") == [("policy.share", "must be in (0, 1), e.g. 0.1 for 10%")]
    violations = await _fails(start(client, v11, fast(share=0, min_feedback=-1)), grpc.StatusCode.INVALID_ARGUMENT,
                              "INVALID_CANARY_POLICY")
    assert [f for f, _ in violations] == ["policy.share", "policy.min_feedback"]
    await _fails(start(client, "v9.9", fast()), grpc.StatusCode.NOT_FOUND, "ADAPTER_NOT_FOUND")
    await _fails(start(client, "latest", fast()), grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_VERSION")
    assert await _fails(start(client, v10, fast()), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TRAFFIC_SPLIT") == [
        ("version", "is the active version")]
    await _fails(control.AbortCanary(lc.AbortCanaryRequest()), grpc.StatusCode.FAILED_PRECONDITION,
                 "NO_CANARY_RUNNING")
    assert await _fails(control.SetTrafficSplit(lc.SetTrafficSplitRequest(version=v11, share=1.0)),
                        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TRAFFIC_SPLIT") == [
        ("share", "must be in [0, 1); 0 ends the split")]
    await _fails(control.SetTrafficSplit(lc.SetTrafficSplitRequest(share=0.3)), grpc.StatusCode.INVALID_ARGUMENT,
                 "MISSING_VERSION")
    st = await status(client)
    assert not st.HasField("traffic_split") and [a.version for a in st.loaded] == [v10]  # nothing changed

    # A manual A/B split: no decision, sticky per user, a new share, then ended with share 0.
    candidate, active = f"{TINY}@{v11}", f"{TINY}@{v10}"
    resp = await control.SetTrafficSplit(lc.SetTrafficSplitRequest(version=v11, share=0.5, reason="A/B"),
                                         metadata=ACTOR)
    assert resp.status.traffic_split.kind == lc.TRAFFIC_SPLIT_KIND_MANUAL and not resp.status.traffic_split.HasField(
        "policy")
    await _fails(start(client, v11, fast()), grpc.StatusCode.FAILED_PRECONDITION, "TRAFFIC_SPLIT_RUNNING")
    await _fails(control.SetTrafficSplit(lc.SetTrafficSplitRequest(version=v10, share=0.5)),
                 grpc.StatusCode.FAILED_PRECONDITION, "TRAFFIC_SPLIT_RUNNING")
    per_user = {user: await send(client, 3, user) for user in ("ann", "bob", "cy", "dee", "eve", "fay")}
    assert all(len(served) == 1 for served in per_user.values())  # each user stays on one side
    assert {next(iter(s)) for s in per_user.values()} == {active, candidate}
    resp = await control.SetTrafficSplit(lc.SetTrafficSplitRequest(version=v11, share=0.25, reason="less"))
    assert resp.status.traffic_split.share == 0.25 and resp.status.traffic_split.figures.candidate.requests == 0
    changed = resp.status.last_operation
    assert changed.kind == lc.LORA_OPERATION_KIND_TRAFFIC_SPLIT and changed.traffic.candidate.requests + (
        changed.traffic.active.requests) == 18
    assert "load" not in changed.phase_durations  # still loaded
    resp = await control.SetTrafficSplit(lc.SetTrafficSplitRequest(share=0, reason="done"))
    assert not resp.status.HasField("traffic_split")
    assert await loaded_when(client, [v10]) == [v10]  # the candidate is retired
    assert not resp.status.HasField("last_canary")  # a manual split decides nothing

    # Activating the version already active ends the split in force too, as every activation does (it returned at
    # once, the split going on, with the status before it: the last operation another one)
    await control.SetTrafficSplit(lc.SetTrafficSplitRequest(version=v11, share=0.5, reason="again"))
    again = (await activate(client, v10)).status
    assert not again.HasField("traffic_split"), again.traffic_split
    assert (again.last_operation.kind, again.last_operation.version) == (lc.LORA_OPERATION_KIND_ACTIVATE, v10)
    assert again.active_version == v10 and await loaded_when(client, [v10]) == [v10]

    # The serving engine loses the candidate mid-canary (as an engine restarted without it): its requests fail over
    # to the active version, and the canary is aborted and recorded.
    await start(client, v11, fast(share=0.5, min_requests=1000))
    assert await send(client, 4) == {active: 2, candidate: 2}
    backend.model.unload(candidate)
    assert await send(client, 6) == {active: 6}  # every client still gets an answer
    outcome = await asyncio.wait_for(client.app.owned.lora.controller.wait_canary(v11), 10)
    assert outcome.decision is CanaryDecision.ABORTED
    assert outcome.reason == f"fail-over to the active version: the serving engine answered {candidate} with HTTP 404"
    assert (outcome.figures.candidate.requests, outcome.figures.candidate.failovers) == (3, 1)
    st = await status(client)
    assert not st.HasField("traffic_split") and st.active_version == v10
    assert st.last_operation.kind == lc.LORA_OPERATION_KIND_CANARY_ABORT and st.last_operation.actor == "gateway"
    assert st.last_canary.decision == lc.CANARY_DECISION_ABORTED
    await client.app.stop(0)
    await backend.stop()


@pytest.mark.slow
async def test_a_restarted_server_resumes_the_canary_with_its_counts(make_server, tiny_model_dir, tmp_path):
    backend = await start_backend(ReferenceModel(tiny_model_dir, TINY))
    client = await make_server(serving_url=backend.url)
    v10 = await train(client)
    v11 = await train(client, parent=v10)
    await activate(client, v10)
    await start(client, v11, fast(share=0.5, min_requests=10, min_feedback=4))
    assert await send(client, 10) == {f"{TINY}@{v10}": 5, f"{TINY}@{v11}": 5}
    await asyncio.sleep(0.5)  # a check keeps the counts

    # another serving process of the target routes the same split, counting its own requests (kept as it stops)
    (tmp_path / "replica2" / "datasets").mkdir(parents=True)
    two = await make_server(serving_url=backend.url, data_dir=tmp_path / "replica2")
    assert (await status(two)).traffic_split.candidate_version == v11
    assert await send(two, 4) == {f"{TINY}@{v10}": 2, f"{TINY}@{v11}": 2}
    await two.app.stop(0)
    await client.app.stop(0)

    restarted = await make_server(serving_url=backend.url)
    st = await status(restarted)
    assert st.traffic_split.candidate_version == v11 and st.traffic_split.figures.candidate.requests == 7
    assert sorted(a.version for a in st.loaded) == [v10, v11]
    assert await send(restarted, 10) == {f"{TINY}@{v10}": 5, f"{TINY}@{v11}": 5}
    await rate(restarted, v11, up=4, down=0)
    await rate(restarted, v10, up=4, down=0)
    outcome = await asyncio.wait_for(restarted.app.owned.lora.controller.wait_canary(v11), 30)
    assert outcome.decision is CanaryDecision.PROMOTED
    assert (outcome.figures.candidate.requests, outcome.figures.active.requests) == (12, 12)
    assert (await status(restarted)).active_version == v11
    await restarted.app.stop(0)
    await backend.stop()


@pytest.mark.slow
async def test_two_serving_processes_count_one_canary_and_the_other_decides_when_the_first_stops(
        make_server, tiny_model_dir, tmp_path):
    """Replicas behind a load balancer: each gateway counts its share of the canary's traffic, the decision is
    on the sum, and when the process deciding it stops, the other takes the decisions over."""
    backend = await start_backend(ReferenceModel(tiny_model_dir, TINY))
    one = await make_server(serving_url=backend.url, serving_follow_seconds=0.2)
    v10 = await train(one)
    v11 = await train(one, parent=v10)
    await activate(one, v10)
    (tmp_path / "replica2" / "datasets").mkdir(parents=True)
    two = await make_server(serving_url=backend.url, data_dir=tmp_path / "replica2", serving_follow_seconds=0.2)
    await start(one, v11, fast(share=0.5, min_requests=10, min_feedback=4))
    assert await send(one, 6) == {f"{TINY}@{v10}": 3, f"{TINY}@{v11}": 3}
    await followed(two, v11)
    assert await send(two, 8) == {f"{TINY}@{v10}": 4, f"{TINY}@{v11}": 4}

    await counted(one, 7, 7)  # both gateways' requests, in each process's view
    await counted(two, 7, 7)
    await one.app.stop(0)  # the deciding process stops, with 7 of the 10 candidate requests the policy wants
    await rate(two, v11, up=4, down=0)
    await rate(two, v10, up=4, down=0)
    assert await send(two, 6) == {f"{TINY}@{v10}": 3, f"{TINY}@{v11}": 3}
    outcome = await asyncio.wait_for(two.app.owned.lora.controller.wait_canary(v11), 30)
    assert outcome.decision is CanaryDecision.PROMOTED and outcome.reason.startswith("not worse"), outcome
    assert (outcome.figures.candidate.requests, outcome.figures.active.requests) == (10, 10)
    st = await status(two)
    assert st.active_version == v11 and st.last_operation.actor == "canary"
    await two.app.stop(0)
    await backend.stop()
