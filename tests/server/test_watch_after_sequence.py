"""Watch* after_sequence is a uint64; the stores' sequences are PostgreSQL bigints. A value past 2**63 - 1 was
INTERNAL (bigint overflow); it is clamped to the largest sequence, so the stream is the job's snapshot and no
event, as for any value past the job's last event. Held for WatchTrainingJob and WatchFisherJob on PostgreSQL, and
for every Watch* entry point through server.convert_jobs.after_sequence_from_pb."""

from __future__ import annotations

import pytest

from learning.v1 import common_pb2 as common
from learning.v1 import fisher_pb2, fisher_pb2_grpc
from learning.v1 import training_pb2 as pb
from tests.server.conftest import spec, watch_all


@pytest.mark.parametrize("after", [2**63, 2**64 - 1])
async def test_watch_training_job_after_a_huge_sequence(pg_client, after: int):
    job = (await pg_client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=1)))).training_job
    await watch_all(pg_client.training, job.name)  # let it end
    messages = await watch_all(pg_client.training, job.name, after=after)
    assert [m.WhichOneof("update") for m in messages] == ["snapshot"]  # no event comes after that sequence
    assert messages[0].snapshot.state == common.JOB_STATE_SUCCEEDED


async def test_watch_fisher_job_after_a_huge_sequence(pg_client):
    await watch_all(pg_client.training, (await pg_client.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=spec(epochs=1)))).training_job.name)  # v1.0
    fisher = fisher_pb2_grpc.FisherServiceStub(pg_client.channel)
    job = (await fisher.CreateFisherJob(fisher_pb2.CreateFisherJobRequest(spec=fisher_pb2.FisherJobSpec(
        adapter_version="v1.0", jsonl=common.JsonlDataset(path="capitals.jsonl"), num_samples=4)))).fisher_job
    [m async for m in fisher.WatchFisherJob(fisher_pb2.WatchFisherJobRequest(name=job.name))]
    messages = [m async for m in fisher.WatchFisherJob(fisher_pb2.WatchFisherJobRequest(name=job.name,
                                                                                        after_sequence=2**64 - 1))]
    assert [m.WhichOneof("update") for m in messages] == ["snapshot"]


def test_after_sequence_is_clamped_to_the_largest_sequence():
    from server.convert_jobs import MAX_SEQUENCE, after_sequence_from_pb  # noqa: PLC0415 - new with the fix

    assert after_sequence_from_pb(0) == 0
    assert after_sequence_from_pb(17) == 17
    assert after_sequence_from_pb(MAX_SEQUENCE) == MAX_SEQUENCE == 2**63 - 1
    assert after_sequence_from_pb(2**64 - 1) == MAX_SEQUENCE
