"""A training job cancelled while PAUSED ends as a job cancelled while running does: its metrics.csv and
loss.png stored and recorded on its output (engine.training.runner), although no run of it is left to store them
(a paused job has none stored: it has not ended)."""

from __future__ import annotations

import pytest

from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as pb
from tests.server.conftest import aiter_events, spec

pytestmark = pytest.mark.model


async def test_a_job_cancelled_while_paused_stores_its_metrics(memory_client):
    await cancelled_while_paused(memory_client)


async def test_a_job_cancelled_while_paused_stores_its_metrics_in_postgres(client):
    await cancelled_while_paused(client)


async def cancelled_while_paused(client) -> None:
    job = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=500)))).training_job
    async for event in aiter_events(client.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=job.name))):
        if event.HasField("step_metrics") and event.step_metrics.step == 2:
            await client.training.PauseTrainingJob(pb.PauseTrainingJobRequest(name=job.name))
    paused = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert paused.state == common.JOB_STATE_PAUSED and not paused.HasField("metrics_artifacts")
    await client.training.CancelTrainingJob(pb.CancelTrainingJobRequest(name=job.name))
    cancelled = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert cancelled.state == common.JOB_STATE_CANCELLED
    rows = (await client.training.GetTrainingMetrics(pb.GetTrainingMetricsRequest(name=job.name))).rows
    assert len(rows) >= 2
    assert cancelled.HasField("metrics_artifacts") and cancelled.metrics_artifacts.row_count == len(rows), \
        "cancelled while paused: no metrics.csv / loss.png stored, unlike a job cancelled while it ran"
