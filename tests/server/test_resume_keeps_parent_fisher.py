"""A continuation job (EWC, no snapshot named: the parent's Fisher measured before training) paused while it
trains and resumed continues against the snapshot its first run stored: it does not measure the parent's Fisher
again (the long PREPARING phase redone, the resumed steps anchored to another snapshot) nor store a second
snapshot that no version names. That snapshot deleted meanwhile, the job fails as one naming a missing snapshot
does."""

from __future__ import annotations

import grpc
import pytest

from learning.v1 import common_pb2, fisher_pb2, fisher_pb2_grpc
from learning.v1 import training_pb2 as pb
from tests.server.conftest import aiter_events, spec, watch_all

pytestmark = pytest.mark.model


@pytest.fixture
def make_server(make_memory_server):
    return make_memory_server


async def paused_continuation(client) -> pb.TrainingJob:
    """A continuation of v1.0 (EWC, its Fisher measured by the job), paused at step 3 of 8."""
    v10 = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=1)))).training_job
    await watch_all(client.training, v10.name)
    child = spec(epochs=4)
    child.parent_adapter_version = "v1.0"
    child.ewc.CopyFrom(pb.EwcConfig(ewc_lambda=50.0))
    child.checkpoints.CopyFrom(pb.CheckpointPolicy(every_steps=2, every_minutes=0, keep=2))
    job = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=child))).training_job
    async for event in aiter_events(client.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=job.name))):
        if event.HasField("step_metrics") and event.step_metrics.step == 3:
            await client.training.PauseTrainingJob(pb.PauseTrainingJobRequest(name=job.name))
    paused = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert paused.state == common_pb2.JOB_STATE_PAUSED and paused.ewc_lineage.fisher_snapshot
    return paused


async def resumed(client, paused: pb.TrainingJob) -> tuple[pb.TrainingJob, list[str]]:
    """The job resumed and ended, and the codes of the notices it recorded after its pause."""
    await client.training.ResumeTrainingJob(pb.ResumeTrainingJobRequest(name=paused.name))
    after = [e async for e in aiter_events(client.training.WatchTrainingJob(
        pb.WatchTrainingJobRequest(name=paused.name, after_sequence=paused.last_sequence)))]
    done = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=paused.name))).training_job
    return done, [e.notice.code for e in after if e.HasField("notice")]


@pytest.mark.slow
async def test_a_resumed_continuation_does_not_measure_its_parents_fisher_again(make_server):
    client = await make_server()
    fisher = fisher_pb2_grpc.FisherServiceStub(client.channel)
    paused = await paused_continuation(client)
    done, notices = await resumed(client, paused)
    assert done.state == common_pb2.JOB_STATE_SUCCEEDED, done.error
    assert "RESUMED" in notices and "FISHER_OF_EARLIER_RUN" in notices

    listed = (await fisher.ListFisherSnapshots(
        fisher_pb2.ListFisherSnapshotsRequest(adapter_version="v1.0"))).fisher_snapshots
    recomputed = notices.count("FISHER_COMPUTED_AUTOMATICALLY")
    assert recomputed == 0 and [s.name for s in listed] == [done.ewc_lineage.fisher_snapshot], (
        f"the resumed job measured the parent's Fisher {recomputed} more time(s); snapshots of v1.0: "
        f"{[s.name for s in listed]}, the version names {done.ewc_lineage.fisher_snapshot}")
    assert done.ewc_lineage.fisher_snapshot == paused.ewc_lineage.fisher_snapshot


async def test_a_resumed_continuation_whose_snapshot_was_deleted_fails(make_server):
    client = await make_server()
    fisher = fisher_pb2_grpc.FisherServiceStub(client.channel)
    paused = await paused_continuation(client)
    await fisher.DeleteFisherSnapshot(fisher_pb2.DeleteFisherSnapshotRequest(name=paused.ewc_lineage.fisher_snapshot))
    done, notices = await resumed(client, paused)
    assert done.state == common_pb2.JOB_STATE_FAILED
    assert done.error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert paused.ewc_lineage.fisher_snapshot in done.error.message
    assert "FISHER_COMPUTED_AUTOMATICALLY" not in notices
