"""A create repeated with its request_id (a retry after UNAVAILABLE, after a server restart, a pipeline run resumed
after a crash) is answered with the job the first made, looked up before anything is validated or resolved: a
repeat with the same key and the same request returns the same job (training.proto) whatever changed since. It was
validated and resolved again first, and refused when an input was gone (the dataset file, a golden suite), or
REQUEST_ID_REUSED when what the resolution reads had moved (the active version a session starts from, the server's
defaults), though the client sent exactly the same request. A job records the digest of the request as sent
(engine.jobs.codec.request_digest); the same request_id with another request is REQUEST_ID_REUSED, checked before
anything else too; a job stored before the digest was recorded is compared by spec once resolved, as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import pytest

from learning.v1 import evaluation_pb2 as ev
from learning.v1 import evaluation_pb2_grpc as ev_grpc
from learning.v1 import lora_control_pb2 as lc
from learning.v1 import online_pb2 as ol
from learning.v1 import training_pb2 as pb
from tests.server.conftest import error_details, spec
from tests.server.lora_helpers import ACTOR, stub, train
from tests.server.test_online import FAST, online


async def _refusal(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), error_details(caught.value)[0].reason


async def _end(call) -> None:
    """Stop a job the test leaves behind, unless it has ended already (FAILED_PRECONDITION)."""
    try:
        await call
    except grpc.aio.AioRpcError as err:
        if err.code() is not grpc.StatusCode.FAILED_PRECONDITION:
            raise


@pytest.fixture(params=["memory_client", "pg_client"])
def client(request):
    """The engine on in-memory stores, and on PostgreSQL (each store's lookup by request_id)."""
    return request.getfixturevalue(request.param)


async def test_a_training_job_retried_after_its_dataset_file_was_removed_is_the_job(client, data_dir: Path):
    shutil.copy(data_dir / "datasets" / "capitals.jsonl", data_dir / "datasets" / "batch-17.jsonl")
    request = pb.CreateTrainingJobRequest(spec=spec("batch-17.jsonl", epochs=1, max_steps=1), request_id="retry-17")
    first = (await client.training.CreateTrainingJob(request)).training_job
    (data_dir / "datasets" / "batch-17.jsonl").unlink()  # the client's upload area, cleaned once the job is accepted
    try:
        second = (await client.training.CreateTrainingJob(request)).training_job
        request.validate_only = True  # answered as the real request is: the job, named
        checked = (await client.training.CreateTrainingJob(request)).training_job
        request.validate_only = False
        request.priority = 5  # not part of what is asked: the same job, as it was queued
        reprioritised = (await client.training.CreateTrainingJob(request)).training_job
    finally:
        await _end(client.training.CancelTrainingJob(pb.CancelTrainingJobRequest(name=first.name)))
    assert second.name == reprioritised.name == first.name
    assert checked.name == first.name and checked.spec == first.spec
    listed = (await client.training.ListTrainingJobs(pb.ListTrainingJobsRequest())).training_jobs
    assert [j.name for j in listed] == [first.name]


async def test_the_same_request_id_with_another_spec_is_reused_before_anything_is_checked(client, data_dir: Path):
    shutil.copy(data_dir / "datasets" / "capitals.jsonl", data_dir / "datasets" / "batch-18.jsonl")
    request = pb.CreateTrainingJobRequest(spec=spec("batch-18.jsonl", epochs=1, max_steps=1), request_id="retry-18")
    first = (await client.training.CreateTrainingJob(request)).training_job
    try:
        other = pb.CreateTrainingJobRequest(spec=spec("batch-18.jsonl", epochs=2, max_steps=1), request_id="retry-18")
        assert await _refusal(client.training.CreateTrainingJob(other)) == (grpc.StatusCode.ALREADY_EXISTS,
                                                                            "REQUEST_ID_REUSED")
        (data_dir / "datasets" / "batch-18.jsonl").unlink()
        # refused as a reuse, not for its dataset: the request_id is looked up first, validate_only or not
        assert await _refusal(client.training.CreateTrainingJob(other)) == (grpc.StatusCode.ALREADY_EXISTS,
                                                                            "REQUEST_ID_REUSED")
        other.validate_only = True
        assert await _refusal(client.training.CreateTrainingJob(other)) == (grpc.StatusCode.ALREADY_EXISTS,
                                                                            "REQUEST_ID_REUSED")
        # the same settings written out where the first left them to the server's defaults: another request
        spelled = pb.CreateTrainingJobRequest(spec=spec("batch-18.jsonl", epochs=1, max_steps=1), request_id="retry-18")
        spelled.spec.lora.rank = first.spec.lora.rank
        assert await _refusal(client.training.CreateTrainingJob(spelled)) == (grpc.StatusCode.ALREADY_EXISTS,
                                                                              "REQUEST_ID_REUSED")
    finally:
        await _end(client.training.CancelTrainingJob(pb.CancelTrainingJobRequest(name=first.name)))


async def test_a_training_job_retried_against_a_server_with_other_defaults_is_the_job(make_pg_server):
    client = await make_pg_server()
    request = pb.CreateTrainingJobRequest(spec=spec(epochs=1, max_steps=1), request_id="defaults-1")
    first = (await client.training.CreateTrainingJob(request)).training_job
    assert first.spec.hyperparameters.warmup_steps == 0  # the server's default
    await _end(client.training.CancelTrainingJob(pb.CancelTrainingJobRequest(name=first.name)))
    await client.channel.close()
    await client.app.stop(0)

    restarted = await make_pg_server(training_warmup_steps=1)  # its default resolves the same request otherwise
    again = (await restarted.training.CreateTrainingJob(request)).training_job
    assert again.name == first.name and again.spec.hyperparameters.warmup_steps == 0
    fresh = pb.CreateTrainingJobRequest(spec=spec(epochs=1, max_steps=1), validate_only=True)
    assert (await restarted.training.CreateTrainingJob(fresh)).training_job.spec.hyperparameters.warmup_steps == 1


async def test_a_job_stored_without_a_digest_is_compared_by_spec(pg_client):
    """A job stored before the request's digest was recorded (its JSON has no request_digest) is found by a retry
    after validation, its spec compared with the retry's, as before."""
    client = pg_client
    request = pb.CreateTrainingJobRequest(spec=spec(epochs=1, max_steps=1), request_id="old-row")
    first = (await client.training.CreateTrainingJob(request)).training_job
    try:
        async with client.app.owned.pool.acquire() as conn:
            changed = await conn.execute("UPDATE jobs SET doc = doc - 'request_digest' WHERE request_id = $1",
                                         "old-row")
        assert changed == "UPDATE 1"
        assert (await client.training.CreateTrainingJob(request)).training_job.name == first.name
        other = pb.CreateTrainingJobRequest(spec=spec(epochs=2, max_steps=1), request_id="old-row")
        assert await _refusal(client.training.CreateTrainingJob(other)) == (grpc.StatusCode.ALREADY_EXISTS,
                                                                            "REQUEST_ID_REUSED")
    finally:
        await _end(client.training.CancelTrainingJob(pb.CancelTrainingJobRequest(name=first.name)))


@pytest.mark.slow
async def test_an_online_session_retried_after_the_active_version_changed_is_the_session(make_pg_server):
    client = await make_pg_server(**FAST)
    first = await train(client, epochs=1)
    second = await train(client, epochs=1)
    await stub(client).ActivateAdapter(lc.ActivateAdapterRequest(version=first), metadata=ACTOR)
    sessions = online(client)
    request = ol.CreateOnlineSessionRequest(  # no start_version: the active version, when it is created
        request_id="session-1", spec=ol.OnlineSessionSpec(update_every=5, publish_every=0, learning_rate=5e-3,
                                                          ewc_lambda=0, replay_fraction=0, max_seq_length=64))
    made = (await sessions.CreateOnlineSession(request)).session
    assert made.spec.start_version == first
    try:
        await stub(client).ActivateAdapter(lc.ActivateAdapterRequest(version=second), metadata=ACTOR)
        again = (await sessions.CreateOnlineSession(request)).session
        assert again.name == made.name and again.spec.start_version == first
        listed = (await sessions.ListOnlineSessions(ol.ListOnlineSessionsRequest())).sessions
        assert [s.name for s in listed] == [made.name]
        request.spec.learning_rate = 1e-3
        assert await _refusal(sessions.CreateOnlineSession(request)) == (grpc.StatusCode.ALREADY_EXISTS,
                                                                         "REQUEST_ID_REUSED")
    finally:
        await _end(sessions.StopOnlineSession(ol.StopOnlineSessionRequest(name=made.name)))


async def test_an_evaluation_job_retried_after_its_suite_file_was_removed_is_the_job(pg_client, data_dir: Path):
    jobs = ev_grpc.EvaluationServiceStub(pg_client.channel)
    (data_dir / "datasets" / "quiz-9.jsonl").write_text(
        json.dumps({"prompt": "Capital of Veloria?", "expected": "Marnesse.", "answer": "Marnesse"}) + "\n")
    request = ev.CreateEvaluationJobRequest(
        spec=ev.EvaluationJobSpec(base_model_itself=True, suite_paths=["quiz-9.jsonl"]), request_id="eval-9")
    first = (await jobs.CreateEvaluationJob(request)).evaluation_job
    (data_dir / "datasets" / "quiz-9.jsonl").unlink()
    try:
        again = (await jobs.CreateEvaluationJob(request)).evaluation_job
    finally:
        await _end(jobs.CancelEvaluationJob(ev.CancelEvaluationJobRequest(name=first.name)))
    assert again.name == first.name


async def test_a_retry_is_looked_up_before_the_spec_is_converted(client):
    """A reused request_id is looked up before anything of the request is checked, the spec's numbers included: a
    spec out of range under a used request_id is a reuse (it was refused as an invalid spec)."""
    made = (await client.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=spec(epochs=1, max_steps=1), request_id="retry-19"))).training_job
    try:
        other = pb.CreateTrainingJobRequest(spec=spec(epochs=1, max_steps=1), request_id="retry-19")
        other.spec.hyperparameters.learning_rate = -1
        assert await _refusal(client.training.CreateTrainingJob(other)) == (grpc.StatusCode.ALREADY_EXISTS,
                                                                            "REQUEST_ID_REUSED")
    finally:
        await _end(client.training.CancelTrainingJob(pb.CancelTrainingJobRequest(name=made.name)))
