"""Aborting a canary names the one meant: AbortCanary with a version ends only that version's canary (another
version's canary in force is FAILED_PRECONDITION NO_CANARY_RUNNING naming both), without one whatever canary is in
force as before; and a pipeline run cancelled after its canary ended leaves alone the canary an operator started
meanwhile on another serving process, one the run's process had not yet followed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from learning.v1 import common_pb2 as common
from learning.v1 import lora_control_pb2 as lc
from learning.v1 import pipeline_pb2 as pp
from tests.server.conftest import error_details
from tests.server.lora_helpers import ACTOR, RETIRE_FAST, activate, loaded_when, status, stub, train
from tests.server.test_pipelines import from_file, pipelines
from tests.server.test_pipelines_canary import canary_of


def undecided() -> lc.CanaryPolicy:
    """A canary that decides nothing while a test runs: it waits for far more requests than are sent."""
    return lc.CanaryPolicy(share=0.5, min_requests=100_000, check_interval=duration_pb2.Duration(nanos=200_000_000))


async def refused(call) -> tuple[grpc.StatusCode, str, dict[str, str], list[tuple[str, str]]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    info, violations = error_details(caught.value)
    return caught.value.code(), info.reason, dict(info.metadata), violations


@pytest.mark.slow
async def test_abort_canary_with_a_version_ends_only_that_versions_canary(make_server):
    client = await make_server(**RETIRE_FAST)  # the aborted candidate is retired in the background, soon
    v10 = await train(client)
    v11 = await train(client, parent=v10)
    await activate(client, v10)
    control = stub(client)
    await control.StartCanary(lc.StartCanaryRequest(version=v11, policy=undecided()), metadata=ACTOR)

    assert await refused(control.AbortCanary(lc.AbortCanaryRequest(version="latest"))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_VERSION", {},
        [("version", "must look like vMAJOR.MINOR or vMAJOR.MINOR.PATCH, e.g. v1.2")])
    # A canary of another version is in force: refused, naming both, and that canary goes on.
    code, reason, metadata, _ = await refused(control.AbortCanary(lc.AbortCanaryRequest(version="v9.9")))
    assert (code, reason, metadata) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_CANARY_RUNNING",
                                        {"version": "v9.9", "running_version": v11})
    st = await status(client)
    assert st.traffic_split.candidate_version == v11 and sorted(a.version for a in st.loaded) == [v10, v11]
    refusal = st.last_operation  # recorded as every refused operation is, under the version it named
    assert (refusal.kind, refusal.version, refusal.error.code) == (
        lc.LORA_OPERATION_KIND_CANARY_ABORT, "v9.9", grpc.StatusCode.FAILED_PRECONDITION.value[0])

    # Its own version: aborted as without one.
    resp = await control.AbortCanary(lc.AbortCanaryRequest(version=v11, reason="enough"), metadata=ACTOR)
    st = resp.status
    assert not st.HasField("traffic_split")
    assert (st.last_operation.kind, st.last_operation.version, st.last_operation.reason) == (
        lc.LORA_OPERATION_KIND_CANARY_ABORT, v11, "enough")
    assert await loaded_when(client, [v10]) == [v10]  # the candidate, retired
    assert st.last_canary.version == v11 and st.last_canary.decision == lc.CANARY_DECISION_ABORTED
    code, reason, metadata, _ = await refused(control.AbortCanary(lc.AbortCanaryRequest(version=v11)))
    assert (code, reason, metadata) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_CANARY_RUNNING", {"version": v11})

    # No version: whatever canary is in force, as before the field existed.
    await control.StartCanary(lc.StartCanaryRequest(version=v11, policy=undecided()), metadata=ACTOR)
    st = (await control.AbortCanary(lc.AbortCanaryRequest(reason="any"))).status
    assert not st.HasField("traffic_split") and st.last_operation.version == v11
    assert (await refused(control.AbortCanary(lc.AbortCanaryRequest())))[:3] == (
        grpc.StatusCode.FAILED_PRECONDITION, "NO_CANARY_RUNNING", {})


@pytest.mark.slow
async def test_a_cancelled_run_leaves_alone_a_canary_it_did_not_start(make_server, data_dir: Path, tmp_path: Path):
    # The run's process takes up what the other process records only when asked for its status (and every ten
    # minutes): the other's abort and start stay unseen there until the cancel's own abort reads the store. That is
    # the window a cancel can fall into whatever the follow interval, held open.
    client = await make_server(pipeline_poll_seconds=0.2, serving_follow_seconds=600)
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="careful", pipeline=from_file(
        rollout=pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_CANARY, canary=undecided()))))
    first = (await pipelines(client).RunPipeline(pp.RunPipelineRequest(name="pipelines/careful"))).run
    assert (await _ended(client, first.name)).rollout == "ACTIVATED"
    active = (await status(client)).active_version
    other = await train(client, parent=active)  # the version an operator tries next
    run = (await pipelines(client).RunPipeline(pp.RunPipelineRequest(name="pipelines/careful"))).run
    mine = await canary_of(client, run.name)
    assert mine not in (active, other)

    # On another serving process of the target, an operator ends the run's canary and starts one of their own.
    (tmp_path / "replica2").mkdir()
    two = await make_server(data_dir=tmp_path / "replica2", datasets_path=data_dir / "datasets",
                            artifacts_path=data_dir / "artifacts")
    await stub(two).AbortCanary(lc.AbortCanaryRequest(reason="not this one"), metadata=ACTOR)
    await stub(two).StartCanary(lc.StartCanaryRequest(version=other, policy=undecided()), metadata=ACTOR)

    await pipelines(client).CancelPipelineRun(pp.CancelPipelineRunRequest(name=run.name))
    ended = await _ended(client, run.name)
    assert ended.state == common.JOB_STATE_CANCELLED, ended
    for replica in (two, client):  # the operator's canary goes on, seen by both
        split = (await status(replica)).traffic_split
        assert (split.kind, split.candidate_version) == (lc.TRAFFIC_SPLIT_KIND_CANARY, other), split
    controller = two.app.owned.lora.controller
    aborts = [(op.version, op.actor, op.error.reason if op.error else "")
              for op in await controller._store.history(controller.target, 50) if op.kind.value == "CANARY_ABORT"]
    assert aborts == [(mine, "pipelines/careful", "NO_CANARY_RUNNING"), (mine, "alice@example.com", "")], aborts


async def _ended(client, name: str) -> pp.PipelineRun:
    for _ in range(1200):
        run = (await pipelines(client).GetPipelineRun(pp.GetPipelineRunRequest(name=name))).run
        if run.state in (common.JOB_STATE_SUCCEEDED, common.JOB_STATE_FAILED, common.JOB_STATE_CANCELLED):
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} did not end")
