"""A published adapter version and the training job created to continue it: DeleteAdapter refuses (FAILED_PRECONDITION
ADAPTER_PROTECTED) while a training job that has not ended continues the version, and CreateTrainingJob reads the
parent during its validation and stores the job after it. The job's insert pins the parent (engine.domain.Pin: its
row checked PUBLISHED and held FOR SHARE in the insert's transaction, engine.stores.adapter_index's ``pin``): a
delete landing before the insert makes the create NOT_FOUND (no job continues a deleted version), one landing while
the job is stored waits for it and refuses. On PostgreSQL: the in-memory index knows no jobs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from engine.stores import adapter_index
from engine.training.preparation import JobPreparer
from learning.v1 import adapter_pb2 as apb
from learning.v1 import adapter_pb2_grpc as apb_grpc
from learning.v1 import training_pb2 as pb
from tests.fixtures.held import held_after
from tests.fixtures.peft_adapters import build_peft_adapter, tar_dir
from tests.server.conftest import TINY, error_details, spec, watch_all


async def _parent(client, tiny_model_dir: Path, tmp_path: Path) -> apb.Adapter:
    """A published version (imported: a trained one's row is the same)."""
    async def requests():
        yield apb.ImportAdapterRequest(metadata=apb.ImportAdapterMetadata(base_model=TINY))
        yield apb.ImportAdapterRequest(chunk=tar_dir(build_peft_adapter(tiny_model_dir, tmp_path / "parent")))

    return (await apb_grpc.AdapterServiceStub(client.channel).ImportAdapter(requests())).adapter


def _create(client, parent: str) -> asyncio.Future[pb.CreateTrainingJobResponse]:
    request = pb.CreateTrainingJobRequest(spec=spec(epochs=1, max_steps=1))
    request.spec.parent_adapter_version = parent
    request.spec.ewc.disabled = True  # an imported parent has no training data to measure a Fisher on
    return asyncio.ensure_future(client.training.CreateTrainingJob(request))


def _delete(client, version: str):
    return apb_grpc.AdapterServiceStub(client.channel).DeleteAdapter(
        apb.DeleteAdapterRequest(base_model=TINY, version=version))


async def test_a_parent_deleted_after_the_create_read_it_is_not_continued(make_pg_server, tiny_model_dir, tmp_path,
                                                                           monkeypatch):
    client = await make_pg_server()
    parent = await _parent(client, tiny_model_dir, tmp_path)
    hold = held_after(monkeypatch, JobPreparer, "validate")  # the create has read the parent (validated it all)
    create = _create(client, parent.version)
    await hold.reached.wait()
    validated = hold.results[0].parent
    assert validated is not None and validated.version == parent.version
    await _delete(client, parent.version)  # no job names it yet
    hold.go.set()
    try:
        job = (await create).training_job
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
        info, _ = error_details(err)
        assert info.reason == "ADAPTER_NOT_FOUND" and info.metadata["version"] == parent.version
    else:
        raise AssertionError(f"{job.name} was created to continue {parent.version}, deleted before it was stored")
    listed = await client.training.ListTrainingJobs(pb.ListTrainingJobsRequest())
    assert not listed.training_jobs


async def test_a_delete_while_the_job_is_being_stored_waits_for_it_and_refuses(make_pg_server, tiny_model_dir,
                                                                                 tmp_path, monkeypatch):
    client = await make_pg_server()
    parent = await _parent(client, tiny_model_dir, tmp_path)
    # the job's insert has checked its parent and holds it, uncommitted
    hold = held_after(monkeypatch, adapter_index._Published, "check")
    create = _create(client, parent.version)
    await hold.reached.wait()
    delete = asyncio.ensure_future(_delete(client, parent.version))
    done, _ = await asyncio.wait([delete], timeout=2)  # a delete not held off would be done by now
    hold.go.set()
    job = (await create).training_job
    assert job.spec.parent_adapter_version == parent.version
    try:
        await delete
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
        info, _ = error_details(err)
        assert info.reason == "ADAPTER_PROTECTED" and info.metadata["training_job"] == job.name
    else:
        raise AssertionError(f"{parent.version} was deleted ({'at once' if done else 'after the job was stored'}) "
                             f"while {job.name} was being created to continue it")
    await client.training.CancelTrainingJob(pb.CancelTrainingJobRequest(name=job.name))


async def test_a_checkpoint_published_on_a_kept_parent_prunes_after_it(make_pg_server, tiny_model_dir, tmp_path):
    """PublishCheckpoint pins the job's parent as it registers the version, and the retention after the publish then
    deletes it (the job has ended: nothing protects it), without waiting on the publish's own hold."""
    client = await make_pg_server(adapter_retention_keep=1)
    parent = await _parent(client, tiny_model_dir, tmp_path)
    request = pb.CreateTrainingJobRequest(spec=spec(epochs=1, max_steps=2))
    request.spec.parent_adapter_version = parent.version
    request.spec.ewc.disabled = True
    request.spec.checkpoints.CopyFrom(pb.CheckpointPolicy(every_steps=1, every_minutes=0, keep=2))
    job = (await client.training.CreateTrainingJob(request)).training_job
    await watch_all(client.training, job.name)
    done = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert done.output_adapter_version, done.error
    checkpoints = (await client.training.ListTrainingCheckpoints(
        pb.ListTrainingCheckpointsRequest(name=job.name))).checkpoints
    publish = client.training.PublishCheckpoint(pb.PublishCheckpointRequest(name=job.name, step=checkpoints[-1].step))
    version = (await asyncio.wait_for(publish, timeout=60)).adapter_version
    listed = (await apb_grpc.AdapterServiceStub(client.channel).ListAdapters(apb.ListAdaptersRequest())).adapters
    assert [a.version for a in listed][0] == version and parent.version not in [a.version for a in listed]
