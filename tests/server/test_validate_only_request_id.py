"""validate_only checks what the real request would, request_id reuse included: a validate_only CreateTrainingJob
whose request_id names a stored job with another spec is ALREADY_EXISTS REQUEST_ID_REUSED (it answered OK); with
the same spec, or a request_id never used, it is OK and stores nothing."""

from __future__ import annotations

import grpc
import pytest

from learning.v1 import training_pb2 as pb
from tests.server.conftest import error_details, spec


@pytest.fixture(params=["memory_client", "pg_client"])
def client(request):
    """The engine on in-memory stores, and on PostgreSQL (each store's lookup by request_id)."""
    return request.getfixturevalue(request.param)


async def test_validate_only_refuses_a_reused_request_id_like_the_real_request(client):
    stub = client.training
    first = (await stub.CreateTrainingJob(pb.CreateTrainingJobRequest(
        spec=spec(epochs=1), request_id="rid-1"))).training_job
    other = pb.CreateTrainingJobRequest(spec=spec(epochs=2), request_id="rid-1")
    with pytest.raises(grpc.aio.AioRpcError) as real:
        await stub.CreateTrainingJob(other)
    assert real.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_details(real.value)[0].reason == "REQUEST_ID_REUSED"
    other.validate_only = True
    with pytest.raises(grpc.aio.AioRpcError) as checked:
        await stub.CreateTrainingJob(other)
    assert checked.value.code() == grpc.StatusCode.ALREADY_EXISTS, checked.value.details()
    info = error_details(checked.value)[0]
    assert info.reason == "REQUEST_ID_REUSED" and info.metadata["job"] == first.name


async def test_validate_only_with_the_same_spec_or_a_new_request_id_is_ok(client):
    stub = client.training
    made = await stub.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=1), request_id="rid-2"))
    same = await stub.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=1), request_id="rid-2",
                                                                    validate_only=True))
    # answered as the real request would be: with the job it made, named (it was a nameless copy of it)
    assert same.training_job.name == made.training_job.name and same.training_job.state
    fresh = await stub.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=2), request_id="rid-3",
                                                                     validate_only=True))
    assert fresh.training_job.name == ""
    listed = await stub.ListTrainingJobs(pb.ListTrainingJobsRequest())
    assert [j.request_id for j in listed.training_jobs] == ["rid-2"]
