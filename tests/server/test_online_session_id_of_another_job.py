"""Online sessions are jobs, and share their ids with every job (the `jobs` table). CreateOnlineSession with the
session_id of a training job is ALREADY_EXISTS (ONLINE_SESSION_ID_IN_USE, naming the id and the job's kind), storing
nothing, instead of failing INTERNAL at the session's job insert; the training job is untouched, and the same
create with another id goes on."""

from __future__ import annotations

import grpc
import pytest

from engine.errors import NotFound
from engine.stores.online_store import PostgresOnlineStore
from learning.v1 import common_pb2 as common
from learning.v1 import online_pb2 as ol
from learning.v1 import training_pb2 as tr
from tests.server.conftest import error_details
from tests.server.lora_helpers import train
from tests.server.test_online import FAST, online


async def test_a_session_id_that_is_a_training_jobs_id_is_already_exists(make_pg_server) -> None:
    client = await make_pg_server(**FAST)
    start = await train(client, epochs=1)
    job = (await client.training.ListTrainingJobs(tr.ListTrainingJobsRequest())).training_jobs[0]
    job_id = job.name.removeprefix("trainingJobs/")
    spec = ol.OnlineSessionSpec(start_version=start, update_every=5, publish_every=0, max_seq_length=64,
                                ewc_lambda=0, replay_fraction=0, live_alias="taken-live")
    for request_id in ("", "first-try"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await online(client).CreateOnlineSession(ol.CreateOnlineSessionRequest(
                session_id=job_id, spec=spec, request_id=request_id))
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS, caught.value.details()
        info, _ = error_details(caught.value)
        assert info.reason == "ONLINE_SESSION_ID_IN_USE", info
        assert dict(info.metadata) == {"session_id": job_id, "kind": "training"}, info
        assert f"session_id {job_id!r} is the id of a training job" in caught.value.details()

    with pytest.raises(NotFound):  # no controls left behind, nor the live alias taken
        await PostgresOnlineStore(client.app.owned.pool).controls(job_id)
    assert not (await online(client).ListOnlineSessions(ol.ListOnlineSessionsRequest())).sessions
    kept = (await client.training.GetTrainingJob(tr.GetTrainingJobRequest(name=job.name))).training_job
    assert kept.state == common.JOB_STATE_SUCCEEDED and kept.output_adapter_version == start
    made = (await online(client).CreateOnlineSession(ol.CreateOnlineSessionRequest(
        session_id="not-taken", spec=spec))).session  # the alias is free: the refused create did not hold it
    assert made.name == "onlineSessions/not-taken"
    await online(client).StopOnlineSession(ol.StopOnlineSessionRequest(name=made.name))
