"""learning_engine_jobs{kind,state} counts the jobs this process's worker holds, in a state that is not final.

A job created here that no worker here runs (an API replica, ``embedded_worker: false``: a worker in another
process claims it and ends it) is never in it, so the gauge does not keep every job ever created as QUEUED; and
a job this worker lets go of (paused) leaves it, with its training series. Jobs by state, whoever holds them,
are learning_engine_jobs_stored.
"""

from __future__ import annotations

import asyncio

import asyncpg

from engine import telemetry
from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as pb
from tests.server.conftest import aiter_events, spec


def _held(state: str) -> float:
    return telemetry.REGISTRY.get_sample_value("learning_engine_jobs", {"kind": "training", "state": state}) or 0.0


async def test_a_job_created_here_and_ended_by_another_worker_is_never_held_here(make_server, database_url) -> None:
    api = await make_server(metrics_port=0, embedded_worker=False)
    before = _held("QUEUED")
    jobs = []
    for _ in range(3):
        job = (await api.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=1)))).training_job
        jobs.append(job.name.split("/")[1])
    created = telemetry.REGISTRY.get_sample_value("learning_engine_job_transitions_total",
                                                  {"kind": "training", "state": "QUEUED"})
    assert created is not None and created >= 3  # their creation is counted here
    assert _held("QUEUED") == before and not [j for j in jobs if ("training", j) in telemetry._job_states]

    # a worker in another process claims and finishes them (what its store writes at the end)
    conn = await asyncpg.connect(database_url)
    try:
        for job_id in jobs:
            await conn.execute(
                "UPDATE jobs SET state = 'SUCCEEDED', doc = jsonb_set(doc, '{state}', '\"SUCCEEDED\"') WHERE id = $1",
                job_id)
    finally:
        await conn.close()
    got = await api.training.GetTrainingJob(pb.GetTrainingJobRequest(name=f"trainingJobs/{jobs[0]}"))
    assert got.training_job.state == common.JOB_STATE_SUCCEEDED

    await api.app.metrics._metrics(None)  # a scrape: refreshes learning_engine_jobs_stored from the database
    assert telemetry.REGISTRY.get_sample_value("learning_engine_jobs_stored",
                                               {"kind": "training", "state": "QUEUED"}) == 0
    assert _held("QUEUED") == before and not [j for j in jobs if ("training", j) in telemetry._job_states]


async def test_a_paused_job_leaves_the_gauge_with_its_training_series(make_server) -> None:
    server = await make_server()
    job = (await server.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=spec(epochs=50, batch_size=1)))).training_job
    job_id = job.name.split("/")[1]
    watch = server.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=job.name))
    async for event in aiter_events(watch):
        if event.HasField("step_metrics"):
            assert telemetry._job_states[("training", job_id)] == "RUNNING"  # held by this process's worker
            assert telemetry.REGISTRY.get_sample_value("learning_engine_training_step_loss", {"job": job_id})
            await server.training.PauseTrainingJob(pb.PauseTrainingJobRequest(name=job.name))
            break
    watch.cancel()
    for _ in range(200):  # the worker lets go of the job once its pause checkpoint is stored
        got = (await server.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
        if got.state == common.JOB_STATE_PAUSED and ("training", job_id) not in telemetry._job_states:
            break
        await asyncio.sleep(0.05)
    assert got.state == common.JOB_STATE_PAUSED
    assert ("training", job_id) not in telemetry._job_states
    assert _held("PAUSED") == 0 and _held("PAUSING") == 0
    for series in ("learning_engine_training_step_loss", "learning_engine_training_tokens_per_second"):
        assert telemetry.REGISTRY.get_sample_value(series, {"job": job_id}) is None, series
