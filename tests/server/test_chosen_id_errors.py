"""A create request's own id field (CreatePipeline's pipeline_id, CreateOnlineSession's session_id) holds the id
alone. A wrong one is refused quoting the value as sent, and one written as the resource name is told to drop the
prefix: the message used to quote 'pipelines/pipelines/weekly' and ask for 'pipelines/{pipeline_id}', the very shape
sent."""

from __future__ import annotations

import grpc
import pytest

from learning.v1 import online_pb2 as op
from learning.v1 import online_pb2_grpc as op_grpc
from learning.v1 import pipeline_pb2 as pp
from learning.v1 import pipeline_pb2_grpc as pp_grpc
from tests.server.conftest import error_details


@pytest.mark.parametrize(("sent", "told"), [
    ("pipelines/weekly", "without 'pipelines/'"),
    ("Weekly", "lowercase letters"),
    ("-weekly", "lowercase letters"),
])
async def test_create_pipeline_quotes_a_wrong_id_as_sent(client, sent: str, told: str) -> None:
    stub = pp_grpc.PipelineServiceStub(client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreatePipeline(pp.CreatePipelineRequest(pipeline_id=sent, pipeline=pp.Pipeline()))
    info, violations = error_details(err.value)
    assert (err.value.code(), info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_NAME")
    assert f"pipeline_id {sent!r} is not an id" in err.value.details() and told in err.value.details(), \
        err.value.details()
    assert [field for field, _ in violations] == ["pipeline_id"]
    assert not any("pipelines/{" in description for _, description in violations), violations


async def test_create_online_session_quotes_a_wrong_id_as_sent(client) -> None:
    stub = op_grpc.OnlineLearningServiceStub(client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateOnlineSession(op.CreateOnlineSessionRequest(session_id="onlineSessions/notes"))
    info, violations = error_details(err.value)
    assert (err.value.code(), info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_NAME")
    assert "session_id 'onlineSessions/notes' is not an id: the id alone, without 'onlineSessions/'" \
        in err.value.details(), err.value.details()
    assert [field for field, _ in violations] == ["session_id"]
