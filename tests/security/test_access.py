"""Every RPC of the five services against every role (and no/wrong token), plus limits and deadlines."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import grpc
import pytest
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc

from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as pb
from learning_engine import AsyncClient, errors
from server import access, roles
from server.roles import GRANTS, Role
from server.settings import AuthToken, SettingsError, load_settings
from tests.server.conftest import error_details, spec

TOKENS = {role: f"{role.value}-secret-token-0123456789" for role in Role}
AUTH = tuple(AuthToken(name=f"{r.value}-user", role=r.value, sha256=access.hash_token(t)) for r, t in TOKENS.items())
METHODS = {f"/{s.full_name}/{m.name}": m for s in roles.SERVICE_DESCRIPTORS for m in s.methods}
CREDENTIALS = [*Role, "none", "wrong"]


def test_every_rpc_has_a_role_and_the_table_has_nothing_else():
    assert len(METHODS) >= 30
    missing = [m for m in METHODS if roles.role_for(m) is None]
    assert missing == [], f"RPCs without a role in server/roles.py METHOD_ROLES: {missing}"
    roles.check_method_roles()  # and no stale entries


def _metadata(credential) -> tuple[tuple[str, str], ...]:
    if credential == "none":
        return ()
    if credential == "wrong":
        return (("authorization", "Bearer not-a-configured-token"),)
    return (("authorization", f"Bearer {TOKENS[credential]}"),)


async def _call(channel: grpc.aio.Channel, path: str, credential) -> grpc.StatusCode:
    """Call ``path`` with an empty request; return the status code (OK if it answered)."""
    method = METHODS[path]
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    kind = ("stream" if method.client_streaming else "unary") + "_" + ("stream" if method.server_streaming else "unary")
    callable_ = getattr(channel, kind)(
        path, request_serializer=request_cls.SerializeToString, response_deserializer=response_cls.FromString
    )
    request = iter(()) if method.client_streaming else request_cls()
    kwargs = {"metadata": _metadata(credential), "timeout": 3.0}
    try:
        if method.server_streaming:
            async for _ in callable_(request, **kwargs):
                break
        else:
            await callable_(request, **kwargs)
    except grpc.aio.AioRpcError as err:
        if err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            info, _ = error_details(err)
            assert info.reason in ("UNAUTHENTICATED", "ROLE_REQUIRED")
        return err.code()
    return grpc.StatusCode.OK


async def test_every_role_against_every_rpc(make_server):
    server = await make_server(auth_tokens=AUTH, rate_limit_jobs_per_minute=0, rate_limit_feedback_per_second=0)
    results = {}
    for path in METHODS:
        for credential in CREDENTIALS:
            results[(path, credential)] = await _call(server.channel, path, credential)
    wrong = []
    for (path, credential), code in results.items():
        needed = roles.role_for(path)
        if credential in ("none", "wrong"):
            expected_denial = grpc.StatusCode.UNAUTHENTICATED
        elif needed not in GRANTS[credential]:
            expected_denial = grpc.StatusCode.PERMISSION_DENIED
        else:
            expected_denial = None
        denied = code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
        if expected_denial is None and denied or expected_denial is not None and code != expected_denial:
            wrong.append((path, str(credential), code.name, expected_denial.name if expected_denial else "allowed"))
    assert wrong == [], "\n".join(map(str, wrong))
    # operator may do everything; the table really distinguishes roles
    assert not any(results[(p, Role.OPERATOR)] == grpc.StatusCode.PERMISSION_DENIED for p in METHODS)
    assert (
        results[("/learning.v1.LoraControlService/ActivateAdapter", Role.TRAINER)] == grpc.StatusCode.PERMISSION_DENIED
    )
    assert results[("/learning.v1.FeedbackService/SubmitFeedback", Role.READER)] == grpc.StatusCode.PERMISSION_DENIED


async def test_denials_do_not_reveal_whether_a_job_exists(make_server):
    server = await make_server(auth_tokens=AUTH)
    async with AsyncClient(f"127.0.0.1:{server.app.port}", token=TOKENS[Role.TRAINER]) as trainer:
        job = await trainer.create_training_job(spec(epochs=1))
        missing = "trainingJobs/" + "0" * 32
        with pytest.raises(errors.NotFound):
            await trainer.get_training_job(missing)  # a reader-level role sees the difference...
    seen = []
    for token in (TOKENS[Role.FEEDBACK], "wrong-token"):
        async with AsyncClient(f"127.0.0.1:{server.app.port}", token=token) as other:
            for name in (job.name, missing):
                with pytest.raises((errors.PermissionDenied, errors.Unauthenticated)) as err:
                    await other.get_training_job(name)
                seen.append((token, type(err.value), err.value.reason, err.value.message, err.value.metadata))
    # ...a role without access gets the same answer for an existing and a missing job
    assert seen[0][1:] == seen[1][1:] and seen[2][1:] == seen[3][1:]
    async with AsyncClient(f"127.0.0.1:{server.app.port}", token=TOKENS[Role.READER]) as reader:
        async for _ in reader.watch_training_job(job.name):
            pass


async def test_health_and_reflection_stay_open(make_server):
    server = await make_server(auth_tokens=AUTH)
    health = health_pb2_grpc.HealthStub(server.channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service="learning.v1.TrainingService"))
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    async for reply in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])):
        names = {s.name for s in reply.list_services_response.service}
        assert "learning.v1.TrainingService" in names
        break


async def test_job_creation_is_rate_limited_per_principal(make_server):
    server = await make_server(auth_tokens=AUTH, rate_limit_jobs_per_minute=6, rate_limit_jobs_burst=2)
    target = f"127.0.0.1:{server.app.port}"
    async with AsyncClient(target, token=TOKENS[Role.TRAINER]) as trainer:
        for _ in range(2):
            await trainer.create_training_job(spec(), validate_only=True)
        with pytest.raises(errors.RateLimited) as err:
            await trainer.create_training_job(spec(), validate_only=True)
        assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED and err.value.reason == "RATE_LIMITED"
        assert 5 < err.value.retry_after_seconds <= 10  # one token per 10 s
    async with AsyncClient(target, token=TOKENS[Role.OPERATOR]) as operator:  # another principal, own bucket
        await operator.create_training_job(spec(), validate_only=True)


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    bucket = access.TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    now[0] = 1.0
    assert bucket.take() == 0.0 and bucket.take() == 0.0 and bucket.take() > 0


async def test_oversized_message_is_resource_exhausted(make_server):
    server = await make_server(max_message_bytes=4096)
    request = pb.CreateTrainingJobRequest(spec=spec())
    request.spec.labels["blob"] = "x" * 8192
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.training.CreateTrainingJob(request)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    listed = await server.training.ListTrainingJobs(pb.ListTrainingJobsRequest())
    assert list(listed.training_jobs) == []


async def test_expired_deadline_ends_the_server_side_watch_but_not_the_job(client):
    from engine import telemetry

    job = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=4)))).training_job
    method = "/learning.v1.TrainingService/WatchTrainingJob"

    def watches_ended() -> float:
        return sum(
            s.value
            for m in telemetry.REGISTRY.collect()
            for s in m.samples
            if s.name == "learning_engine_rpc_streams_total" and s.labels["method"] == method
        )

    before = watches_ended()
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in client.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=job.name), timeout=0.5):
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 3
    for _ in range(50):  # the server-side handler was cancelled and has returned
        if watches_ended() > before:
            break
        await asyncio.sleep(0.05)
    assert watches_ended() == before + 1
    final = [m async for m in client.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=job.name))]
    assert final[-1].event.state_change.state == common.JOB_STATE_SUCCEEDED
    done = await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))
    assert done.training_job.output_adapter_version


def test_without_auth_only_loopback_may_be_bound():
    with pytest.raises(SettingsError, match="not a loopback address"):
        load_settings({"host": "0.0.0.0"})
    assert load_settings({"host": "::1"}).host == "::1"
    assert load_settings({"host": "0.0.0.0", "auth_tokens": AUTH}).host == "0.0.0.0"
    with pytest.raises(SettingsError, match="sha256"):
        load_settings({"auth_tokens": [{"name": "x", "role": "reader", "sha256": "plaintext-token"}]})


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
async def test_a_server_on_the_ipv6_loopback_answers_there(make_server):
    """``host: "::1"`` passes the settings' loopback rule; the gRPC port is bound as ``[::1]:port`` and answers."""
    server = await make_server(host="::1")
    async with grpc.aio.insecure_channel(f"[::1]:{server.app.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_start_log_says_auth_is_off(make_server, caplog):
    caplog.set_level(logging.INFO, logger="server.main")
    await make_server()
    assert any("auth disabled" in r.getMessage() and "loopback" in r.getMessage() for r in caplog.records)


async def test_the_feedback_limit_counts_events_and_stream_messages_as_they_arrive(make_server):
    from learning.v1 import feedback_pb2 as fb
    from learning.v1 import feedback_pb2_grpc as fb_grpc

    server = await make_server(rate_limit_feedback_per_second=0.001, rate_limit_feedback_burst=10)

    def events(prefix: str, n: int) -> list[fb.FeedbackEvent]:
        return [fb.FeedbackEvent(client_event_id=f"{prefix}-{i}", kind=fb.FEEDBACK_KIND_THUMBS_UP, user_id="u",
                                 interaction=fb.Interaction(prompt="q", response="a")) for i in range(n)]

    stub = fb_grpc.FeedbackServiceStub(server.channel)
    assert (await stub.SubmitFeedback(fb.SubmitFeedbackRequest(events=events("a", 7)))).stored == 7

    async def messages():
        yield fb.StreamFeedbackRequest(events=events("b", 2))
        yield fb.StreamFeedbackRequest(events=events("c", 2))  # 9 of 10 spent before it: over the budget

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.StreamFeedback(messages())
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, _ = error_details(err.value)
    assert info.reason == "RATE_LIMITED" and info.metadata["committed_messages"] == "1"
    # Without auth every caller is "anonymous": another connection shares the (now spent) budget.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.app.port}") as other:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fb_grpc.FeedbackServiceStub(other).SubmitFeedback(fb.SubmitFeedbackRequest(events=events("d", 2)))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
