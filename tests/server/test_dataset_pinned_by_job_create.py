"""A stored dataset version and the training job created on it: DeleteDataset refuses (FAILED_PRECONDITION
DATASET_IN_USE) while a training job that has not ended names the version, and CreateTrainingJob reads and pins the
version first and stores the job after its whole validation. The job's insert pins the version (engine.domain.Pin:
its row checked READY and held FOR SHARE in the insert's transaction, which a delete's FOR UPDATE waits for): a delete
landing before the insert makes the create NOT_FOUND (no job on a deleted version), one landing while the job is
stored waits for it and refuses."""

from __future__ import annotations

import asyncio

import grpc

from engine.stores import dataset_store
from engine.training.stored_datasets import StoredDatasets
from learning.v1 import dataset_pb2 as dpb
from learning.v1 import training_pb2 as pb
from tests.fixtures.held import held_after
from tests.server.conftest import error_details
from tests.server.test_datasets import stub, upload_messages

HYPER = pb.Hyperparameters(epochs=1, batch_size=4, learning_rate=5e-3, max_seq_length=128, seed=7, max_steps=1)


async def _uploaded(client, data_dir):
    data = (data_dir / "datasets" / "capitals.jsonl").read_bytes()
    return (await stub(client).UploadDataset(upload_messages("datasets/capitals", data))).dataset


def _create(client):
    return asyncio.ensure_future(client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(
        spec=pb.TrainingJobSpec(dataset_name="datasets/capitals", hyperparameters=HYPER))))


async def test_a_version_deleted_after_the_create_read_it_is_not_trained_on(make_pg_server, data_dir, monkeypatch):
    client = await make_pg_server()
    version = await _uploaded(client, data_dir)
    hold = held_after(monkeypatch, StoredDatasets, "training_examples")  # the create has read (and pinned) it
    create = _create(client)
    await hold.reached.wait()
    deleted = (await stub(client).DeleteDataset(dpb.DeleteDatasetRequest(name=version.name))).deleted
    assert list(deleted) == [version.name]
    hold.go.set()
    try:
        job = (await create).training_job
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
        info, _ = error_details(err)
        assert info.reason == "STORED_DATASET_NOT_FOUND" and info.metadata["name"] == version.name
    else:
        raise AssertionError(f"{job.name} was created on {job.dataset.dataset_name}, deleted before it was stored")
    listed = await client.training.ListTrainingJobs(pb.ListTrainingJobsRequest())
    assert not listed.training_jobs


async def test_a_delete_while_the_job_is_being_stored_waits_for_it_and_refuses(make_pg_server, data_dir,
                                                                                 monkeypatch):
    client = await make_pg_server()
    version = await _uploaded(client, data_dir)
    # the job's insert has checked its version and holds it, uncommitted
    hold = held_after(monkeypatch, dataset_store._LiveVersion, "check")
    create = _create(client)
    await hold.reached.wait()
    delete = asyncio.ensure_future(stub(client).DeleteDataset(dpb.DeleteDatasetRequest(name=version.name)))
    done, _ = await asyncio.wait([delete], timeout=2)  # a delete not held off would be done by now
    hold.go.set()
    job = (await create).training_job
    assert job.dataset.dataset_name == version.name
    try:
        await delete
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
        info, _ = error_details(err)
        assert info.reason == "DATASET_IN_USE" and job.name in info.metadata["used_by"]
    else:
        raise AssertionError(f"{version.name} was deleted ({'at once' if done else 'after the job was stored'}) "
                             f"while {job.name} was being created on it")
    await client.training.CancelTrainingJob(pb.CancelTrainingJobRequest(name=job.name))
