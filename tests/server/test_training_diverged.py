"""A training job that diverges (learning rate 1e30: its loss becomes NaN) ends FAILED with FAILED_PRECONDITION
TRAINING_DIVERGED, says what to change, and publishes no version (the stop itself: tests/engine/
test_training_diverged.py)."""

from __future__ import annotations

from google.rpc import error_details_pb2

from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as pb
from tests.server.conftest import spec, watch_all


async def test_a_job_that_diverges_fails_with_the_reason_and_publishes_nothing(client) -> None:
    job = (await client.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=spec(learning_rate=1e30, epochs=4)))).training_job
    messages = await watch_all(client.training, job.name)
    assert messages[-1].event.state_change.state == common.JOB_STATE_FAILED
    final = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert final.state == common.JOB_STATE_FAILED and not final.output_adapter_version
    assert final.error.code == 9  # FAILED_PRECONDITION
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in final.error.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR))
    assert info.reason == "TRAINING_DIVERGED" and "learning_rate" in final.error.message
