"""A pipeline run stores the split id of its canary right after StartCanary. If that write fails (the database
restarting for a moment), the run goes on waiting for its canary (the id stays pending, stored by the run's next
write): failing the run there would leave the canary it started in force, undecided by the run and with nobody
told, free to promote the version of a failed run."""

from __future__ import annotations

import asyncio

import pytest

from learning.v1 import common_pb2 as common
from learning.v1 import pipeline_pb2 as pp
from tests.server.lora_helpers import status
from tests.server.test_pipeline_cancel_canary import _careful
from tests.server.test_pipelines import pipelines

ENDED = (common.JOB_STATE_FAILED, common.JOB_STATE_CANCELLED, common.JOB_STATE_SUCCEEDED)


@pytest.mark.slow
async def test_a_failed_write_of_the_canary_split_does_not_fail_the_run_and_leave_its_canary(make_server):
    client = await make_server(pipeline_poll_seconds=0.2)
    await _careful(client)
    controller = client.app.owned.lora.controller
    store = client.app.engine.pipelines._manager._store  # noqa: SLF001 - the run's job store, to fail one write
    real_start, real_write = controller.start_canary, store.write
    armed = {"on": False}

    async def start_canary(*args, **kwargs):
        result = await real_start(*args, **kwargs)
        armed["on"] = True  # the run's next write (its canary_split) fails once
        return result

    async def write(job, events, lease):
        if armed["on"] and lease is not None:
            armed["on"] = False
            raise ConnectionError("the database is restarting")
        return await real_write(job, events, lease)

    controller.start_canary = start_canary
    store.write = write
    run = (await pipelines(client).RunPipeline(pp.RunPipelineRequest(name="pipelines/careful"))).run
    async with asyncio.timeout(120):
        while True:
            got = (await pipelines(client).GetPipelineRun(pp.GetPipelineRunRequest(name=run.name))).run
            if got.state in ENDED:
                break
            if (await status(client)).traffic_split.candidate_version and not armed["on"] and got.rollout == "CANARY":
                await asyncio.sleep(2)  # the canary takes traffic and the failing write has happened
                got = (await pipelines(client).GetPipelineRun(pp.GetPipelineRunRequest(name=run.name))).run
                break
            await asyncio.sleep(0.1)
    split = (await status(client)).traffic_split
    assert split.candidate_version, "the canary should be in force, waiting for its policy"
    assert got.state not in ENDED, (common.JobState.Name(got.state), str(got)[:600])
    await pipelines(client).CancelPipelineRun(pp.CancelPipelineRunRequest(name=run.name))
    # Cancelled while it waited for its canary: the canary is aborted, and the run says so (its rollout read CANARY,
    # as if the canary were going on, and its ROLLOUT stage had no result)
    async with asyncio.timeout(60):
        while (ended := (await pipelines(client).GetPipelineRun(pp.GetPipelineRunRequest(name=run.name))).run
               ).state not in ENDED:
            await asyncio.sleep(0.1)
    assert ended.state == common.JOB_STATE_CANCELLED and ended.rollout == "ABORTED", ended
    assert (ended.stages[-1].stage, ended.stages[-1].state) == (pp.PIPELINE_STAGE_ROLLOUT, pp.STAGE_STATE_CANCELLED)
    assert not (await status(client)).HasField("traffic_split")
