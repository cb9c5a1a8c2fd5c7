"""A pipeline run cancelled while no worker holds it (paused, or queued again after its worker stopped) aborts the
canary it started, by its version, as a run cancelled while it runs does: no runner code runs for such a cancel (the
job manager ends the job in the store), so the runner's hook for it does. A canary of another version in force then
is left alone, and the run's events say what became of its canary."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from learning.v1 import common_pb2 as common
from learning.v1 import lora_control_pb2 as lc
from learning.v1 import pipeline_pb2 as pp
from tests.server.lora_helpers import ACTOR, RETIRE_FAST, loaded_when, status, stub, train
from tests.server.test_canary_abort_scope import undecided
from tests.server.test_pipelines import from_file, pipelines
from tests.server.test_pipelines_canary import canary_of


async def _state(client, name: str, state: int) -> pp.PipelineRun:
    for _ in range(600):
        run = (await pipelines(client).GetPipelineRun(pp.GetPipelineRunRequest(name=name))).run
        if run.state == state:
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} never became {common.JobState.Name(state)}: {run}")


async def _notices(client, name: str) -> list[tuple[str, str, str]]:
    """The run's notices and warnings (kind, code, message), from its whole stored log."""
    seen = []
    async for update in pipelines(client).WatchPipelineRun(pp.WatchPipelineRunRequest(name=name)):
        if update.HasField("event") and update.event.WhichOneof("kind") in ("notice", "warning"):
            kind = update.event.WhichOneof("kind")
            note = getattr(update.event, kind)
            seen.append((kind, note.code, note.message))
    return seen


async def _canary_run(client) -> tuple[str, str]:
    """A run of the pipeline "careful" whose canary takes traffic: (the run's name, its canary's version)."""
    run = (await pipelines(client).RunPipeline(pp.RunPipelineRequest(name="pipelines/careful"))).run
    return run.name, await canary_of(client, run.name)


async def _aborts(client) -> list[tuple[str, str, str]]:
    """The target's canary aborts, newest first: (version, actor, the reason it was refused for, if it was)."""
    controller = client.app.owned.lora.controller
    return [(op.version, op.actor, op.error.reason if op.error else "")
            for op in await controller._store.history(controller.target, 50) if op.kind.value == "CANARY_ABORT"]


async def _careful(client) -> None:
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="careful", pipeline=from_file(
        rollout=pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_CANARY, canary=undecided()))))
    first = (await pipelines(client).RunPipeline(pp.RunPipelineRequest(name="pipelines/careful"))).run
    assert (await _state(client, first.name, common.JOB_STATE_SUCCEEDED)).rollout == "ACTIVATED"


@pytest.mark.slow
async def test_a_run_cancelled_while_paused_aborts_its_canary_and_only_its_own(make_server):
    client = await make_server(pipeline_poll_seconds=0.2, **RETIRE_FAST)  # an aborted candidate is retired soon
    await _careful(client)
    manager = client.app.engine.pipelines._manager  # pausing a run has no RPC; the job core's pause is the one
    name, mine = await _canary_run(client)
    await manager.pause(name.split("/", 1)[1])
    await _state(client, name, common.JOB_STATE_PAUSED)
    # A pause leaves the canary to the run (resumed, it waits for that canary again)...
    assert (await status(client)).traffic_split.candidate_version == mine

    # ... a cancel does not: the run is not coming back for it, and its version must not be promoted.
    await pipelines(client).CancelPipelineRun(pp.CancelPipelineRunRequest(name=name))
    ended = await _state(client, name, common.JOB_STATE_CANCELLED)
    assert ended.rollout == "ABORTED"  # it read CANARY
    # the stage it had begun ended with it, as a running run's does
    assert (ended.stages[-1].stage, ended.stages[-1].state) == (pp.PIPELINE_STAGE_ROLLOUT, pp.STAGE_STATE_CANCELLED)
    assert [s.stage for s in ended.stages].count(pp.PIPELINE_STAGE_ROLLOUT) == 1, ended.stages
    st = await status(client)
    assert not st.HasField("traffic_split"), st.traffic_split
    assert (st.last_canary.version, st.last_canary.decision) == (mine, lc.CANARY_DECISION_ABORTED)
    kept = sorted({st.active_version, st.known_good_version} - {""})
    assert mine not in await loaded_when(client, kept)  # (retired)
    assert await _aborts(client) == [(mine, "pipelines/careful", "")]
    notices = await _notices(client, name)
    assert [(kind, code) for kind, code, _ in notices] == [("notice", "CANARY_ABORTED")], notices

    # The next run's canary, paused: an operator ends it and starts one of their own; cancelling the run then leaves
    # the operator's canary running (it is not the run's to end).
    other = await train(client, parent=st.active_version)
    name, theirs = await _canary_run(client)
    await manager.pause(name.split("/", 1)[1])
    await _state(client, name, common.JOB_STATE_PAUSED)
    control = stub(client)
    await control.AbortCanary(lc.AbortCanaryRequest(version=theirs, reason="not this one"), metadata=ACTOR)
    await control.StartCanary(lc.StartCanaryRequest(version=other, policy=undecided()), metadata=ACTOR)
    await pipelines(client).CancelPipelineRun(pp.CancelPipelineRunRequest(name=name))
    await _state(client, name, common.JOB_STATE_CANCELLED)
    split = (await status(client)).traffic_split
    assert (split.kind, split.candidate_version) == (lc.TRAFFIC_SPLIT_KIND_CANARY, other), split
    assert (await _aborts(client))[:2] == [(theirs, "pipelines/careful", "NO_CANARY_RUNNING"),
                                           (theirs, "alice@example.com", "")]
    assert await _notices(client, name) == []  # nothing of the run's was left to abort


@pytest.mark.slow
async def test_a_run_cancelled_once_its_worker_stopped_aborts_its_canary(make_server):
    client = await make_server(pipeline_poll_seconds=0.2)
    await _careful(client)
    name, mine = await _canary_run(client)
    # The worker holding the run stops (this process's pipeline worker shutting down): the run is QUEUED again for
    # any worker, its canary left running for the one that takes it; none does before the cancel.
    await client.app.engine.pipelines._manager.shutdown()
    await _state(client, name, common.JOB_STATE_QUEUED)
    assert (await status(client)).traffic_split.candidate_version == mine

    await pipelines(client).CancelPipelineRun(pp.CancelPipelineRunRequest(name=name))
    ended = await _state(client, name, common.JOB_STATE_CANCELLED)
    assert (ended.stages[-1].stage, ended.stages[-1].state) == (pp.PIPELINE_STAGE_ROLLOUT, pp.STAGE_STATE_CANCELLED)
    st = await status(client)
    assert not st.HasField("traffic_split"), st.traffic_split
    assert (st.last_canary.version, st.last_canary.decision) == (mine, lc.CANARY_DECISION_ABORTED)
    assert await _aborts(client) == [(mine, "pipelines/careful", "")]
    assert [code for _, code, _ in await _notices(client, name)] == ["CANARY_ABORTED"]


@pytest.mark.slow
async def test_a_cancel_whose_abort_fails_stands_and_the_run_says_its_canary_goes_on(make_server, monkeypatch):
    client = await make_server(pipeline_poll_seconds=0.2)
    await _careful(client)
    name, mine = await _canary_run(client)
    await client.app.engine.pipelines._manager.pause(name.split("/", 1)[1])
    await _state(client, name, common.JOB_STATE_PAUSED)
    controller = client.app.owned.lora.controller
    store = controller._store
    running_split = store.running_split

    async def gone(target: str):  # the serving target's database, away while the abort reads the split in force
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")

    monkeypatch.setattr(store, "running_split", gone)
    ended = (await pipelines(client).CancelPipelineRun(pp.CancelPipelineRunRequest(name=name))).run
    monkeypatch.setattr(store, "running_split", running_split)
    assert ended.state == common.JOB_STATE_CANCELLED
    notices = await _notices(client, name)
    assert [(kind, code) for kind, code, _ in notices] == [("warning", "CANARY_NOT_ABORTED")], notices
    assert f"AbortCanary with version {mine}" in notices[0][2]
    # The canary goes on, as the warning says, until someone aborts it.
    assert (await status(client)).traffic_split.candidate_version == mine
    await stub(client).AbortCanary(lc.AbortCanaryRequest(version=mine, reason="its run was cancelled"),
                                   metadata=ACTOR)
    assert not (await status(client)).HasField("traffic_split")
