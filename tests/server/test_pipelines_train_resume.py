"""A run stopped after it created its training job and before it stored the job's name resumes by asking for the
same job under the same request id (pipelineRuns/<run>/train) and finds it (docs/pipelines.md). It chose the parent
again at resume time, from the version active then: when another version had become active meanwhile, the spec
differed and the resumed run failed ALREADY_EXISTS REQUEST_ID_REUSED. The parent is stored on the run before the
job is created."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import Cancelled
from learning.v1 import common_pb2 as common
from learning.v1 import lora_control_pb2 as lc
from learning.v1 import pipeline_pb2 as pp
from learning.v1 import training_pb2 as pb
from tests.server.lora_helpers import status, stub, train
from tests.server.test_pipelines import finished, from_file, pipelines


@pytest.mark.slow
async def test_a_run_stopped_right_after_creating_its_training_job_finds_it_again(make_pg_server):
    client = await make_pg_server(pipeline_poll_seconds=0.2)
    first = await train(client, epochs=1)
    await stub(client).ActivateAdapter(lc.ActivateAdapterRequest(version=first))
    other = await train(client, epochs=1)  # another version, activated while the run is stopped
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="resumed", pipeline=from_file(rollout=pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_NONE))))
    manager = client.app.engine.pipelines._manager
    training = manager.runner._training
    real_create = training.create
    created = asyncio.Event()

    async def create_then_stop(spec, **kwargs):  # the process stops before the run stores the job's name
        await real_create(spec, **kwargs)
        created.set()
        while not any(live.cancel.cancelled for live in manager._live.values()):
            await asyncio.sleep(0.05)
        raise Cancelled("JOB_CANCELLED", "the process stopped")

    training.create = create_then_stop
    run = (await pipelines(client).RunPipeline(pp.RunPipelineRequest(name="pipelines/resumed"))).run
    await asyncio.wait_for(created.wait(), 60)
    await stub(client).ActivateAdapter(lc.ActivateAdapterRequest(version=other))  # e.g. an operator, meanwhile
    await client.channel.close()
    await client.app.stop(0)

    restarted = await make_pg_server(pipeline_poll_seconds=0.2)
    assert (await status(restarted)).active_version == other
    done = await finished(restarted, run.name)
    assert done.state == common.JOB_STATE_SUCCEEDED, (done.error.message if done.HasField("error") else done)
    assert done.parent_version == first, done  # the parent it chose when it created the job
    jobs = (await restarted.training.ListTrainingJobs(pb.ListTrainingJobsRequest())).training_jobs
    made_by_run = [j.name for j in jobs if dict(j.spec.labels).get("pipeline_run")]
    assert made_by_run == [done.training_job], jobs  # the one it created before the stop, found again
    job = (await restarted.training.GetTrainingJob(pb.GetTrainingJobRequest(name=done.training_job))).training_job
    assert job.spec.parent_adapter_version == first
