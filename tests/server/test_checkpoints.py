"""Checkpoints through the API: a paused job keeps its newest checkpoints (policy steps and the pause's own),
ListTrainingCheckpoints lists them, a resumed job continues from the newest usable one (a corrupt one is
skipped with a warning), and PublishCheckpoint makes a version of a chosen one (idempotent by request_id)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import grpc
import pytest

from learning.v1 import adapter_pb2, adapter_pb2_grpc
from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as pb
from tests.server.conftest import aiter_events, error_details, spec

pytestmark = pytest.mark.model


async def test_pause_resume_from_checkpoints_and_publish_one(memory_client) -> None:
    client = memory_client
    job_spec = spec(epochs=4)  # 24 examples in batches of 4: 24 steps
    job_spec.checkpoints.CopyFrom(pb.CheckpointPolicy(every_steps=3, every_minutes=0, keep=2))
    job = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=job_spec))).training_job
    saved, paused_at = [], 0
    async for event in aiter_events(client.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=job.name))):
        if event.HasField("checkpoint"):
            saved.append(event.checkpoint.step)
        if event.HasField("step_metrics") and event.step_metrics.step == 7:
            await client.training.PauseTrainingJob(pb.PauseTrainingJobRequest(name=job.name))
        if event.HasField("step_metrics"):
            paused_at = event.step_metrics.step
    job = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert job.state == common.JOB_STATE_PAUSED
    assert not job.HasField("metrics_artifacts")  # paused is not ended: its metrics are stored at the end
    assert saved[:2] == [3, 6] and saved[-1] == paused_at and paused_at >= 7  # the pause's own checkpoint
    listed = (await client.training.ListTrainingCheckpoints(
        pb.ListTrainingCheckpointsRequest(name=job.name))).checkpoints
    assert [c.step for c in listed] == [paused_at, saved[-2]]  # newest first, keep=2: older ones deleted
    assert all(len(c.sha256) == 64 and c.size_bytes > 0 and c.uri.startswith("file://") for c in listed)
    assert len(list(Path(urlparse(listed[0].uri).path).parent.iterdir())) == 2

    # The newest is corrupted: the resumed job skips it, with a warning, for the one before.
    newest = Path(urlparse(listed[0].uri).path)
    newest.chmod(0o644)
    newest.write_bytes(newest.read_bytes()[:-10] + b"0123456789")
    resumed = (await client.training.ResumeTrainingJob(pb.ResumeTrainingJobRequest(name=job.name))).training_job
    assert resumed.state == common.JOB_STATE_QUEUED
    after = [e async for e in aiter_events(client.training.WatchTrainingJob(
        pb.WatchTrainingJobRequest(name=job.name, after_sequence=job.last_sequence)))]
    warnings = [e.warning for e in after if e.HasField("warning")]
    # (the tiny model answers too few general questions right for base retention: the second warning)
    assert [w.code for w in warnings] == ["CHECKPOINT_SKIPPED", "BASE_RETENTION_NOT_MEASURED"]
    assert f"step {paused_at}" in warnings[0].message
    assert "does not match its sha256" in warnings[0].message and ".tar does not" not in warnings[0].message  # named
    # by its step and stored key, not by the scratch file it was fetched into
    notices = [e.notice for e in after if e.HasField("notice")]
    assert [n.code for n in notices] == ["RESUMED"] and f"step {listed[1].step} " in notices[0].message
    steps = [e.step_metrics.step for e in after if e.HasField("step_metrics")]
    assert steps == list(range(listed[1].step + 1, 25))
    assert after[-1].state_change.state == common.JOB_STATE_SUCCEEDED

    # Publish a checkpoint the job kept: a version of its own, labelled with the step; a repeat is the same.
    done = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    # Steps after the checkpoint it resumed from were reported twice; its metrics hold each step once, the last.
    rows = (await client.training.GetTrainingMetrics(pb.GetTrainingMetricsRequest(name=job.name))).rows
    assert [r.step for r in rows] == list(range(1, 25)) and done.metrics_artifacts.row_count == 24
    resumed_losses = [e.step_metrics.loss for e in after if e.HasField("step_metrics")]
    assert [r.loss for r in rows[listed[1].step:]] == resumed_losses  # those of the resumed run
    kept = (await client.training.ListTrainingCheckpoints(pb.ListTrainingCheckpointsRequest(name=job.name))).checkpoints
    assert done.output_adapter_version == "v1.0" and len(kept) >= 2 and all(c.step < 24 for c in kept)
    request = pb.PublishCheckpointRequest(name=job.name, step=kept[-1].step, request_id="pick-1")
    version = (await client.training.PublishCheckpoint(request)).adapter_version
    assert version == "v2.0" and (await client.training.PublishCheckpoint(request)).adapter_version == version
    adapters = adapter_pb2_grpc.AdapterServiceStub(client.channel)
    record = (await adapters.GetAdapter(adapter_pb2.GetAdapterRequest(version=version))).adapter
    assert dict(record.labels)["checkpoint_step"] == str(kept[-1].step) and record.training_job == job.name
    # The same request_id for another checkpoint is not a retry: refused, not answered with the earlier version.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.training.PublishCheckpoint(pb.PublishCheckpointRequest(name=job.name, step=kept[0].step,
                                                                            request_id="pick-1"))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info, _ = error_details(err.value)
    assert info.reason == "REQUEST_ID_REUSED" and info.metadata["version"] == version, err.value.details()

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.training.PublishCheckpoint(pb.PublishCheckpointRequest(name=job.name, step=999))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    info, _ = error_details(err.value)
    assert info.reason == "CHECKPOINT_NOT_FOUND" and info.metadata["step"] == "999"
