"""Request ids of the forms trainingJobs/<id>/result and onlineSessions/<id>/publish/<n> are the server's: a
training job publishes its result under its own (engine.training.job_results.result_request_id), a session its
publications, and the registry answers a request id it knows with the version registered under it. A client's
ImportAdapter or PublishCheckpoint under one registered a version the job took for its own result: it ended
SUCCEEDED with it untrained, or had its own publish answered with it. They are refused INVALID_ARGUMENT
INVALID_REQUEST_ID with a field violation, as every request's request_id is checked
(server.convert_jobs.check_request_id); other ids naming a job are not."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest

from engine.errors import InvalidArgument
from engine.training.job_results import result_request_id
from learning.v1 import adapter_pb2 as adapter_pb
from learning.v1 import training_pb2 as pb
from server.convert_jobs import check_request_id
from tests.server.conftest import error_details
from tests.server.test_import_metadata_early import _refused_while_sent

RESERVED = result_request_id(SimpleNamespace(name="trainingJobs/0123abcd"))  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [RESERVED, "trainingJobs/anything/result", "onlineSessions/0123abcd/publish/3"])
def test_the_request_id_of_a_training_jobs_result_or_a_sessions_publication_is_refused(value: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_request_id(value, "request_id", 256)
    assert err.value.reason == "INVALID_REQUEST_ID"
    assert [v.field for v in err.value.violations] == ["request_id"]


@pytest.mark.parametrize("value", ["", "pick-1", "trainingJobs/0123abcd", "trainingJobs/0123abcd/checkpoint-7",
                                   "my/result", "trainingJobs/0123abcd/results", "onlineSessions/0123abcd",
                                   "onlineSessions/0123abcd/publish/"])
def test_other_request_ids_naming_a_job_are_taken(value: str) -> None:
    check_request_id(value, "request_id", 256)


async def test_import_adapter_refuses_a_training_jobs_result_request_id(memory_client) -> None:
    err = await _refused_while_sent(memory_client, adapter_pb.ImportAdapterMetadata(request_id=RESERVED))
    info, violations = error_details(err)
    assert info.reason == "INVALID_REQUEST_ID" and [f for f, _ in violations] == ["metadata.request_id"], violations


async def test_publish_checkpoint_refuses_a_training_jobs_result_request_id(memory_client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await memory_client.training.PublishCheckpoint(pb.PublishCheckpointRequest(
            name="trainingJobs/0123abcd", step=1, request_id=RESERVED))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    info, violations = error_details(err.value)
    assert info.reason == "INVALID_REQUEST_ID" and [f for f, _ in violations] == ["request_id"], violations
