"""An RPC stopped from outside its handler is counted under the code gRPC gives it: CANCELLED when the client
cancels it (the usual end of a WatchTrainingJob on a job not yet ended), DEADLINE_EXCEEDED when its deadline
passed; not UNKNOWN, which is a server error. Streams and unary calls (uploads among them) alike."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from engine import telemetry
from learning.v1 import training_pb2 as pb
from server.telemetry import RpcMetricsInterceptor
from tests.server.conftest import spec

WATCH = "/learning.v1.TrainingService/WatchTrainingJob"


def _streams(method: str) -> dict[str, float]:
    return {s.labels["code"]: s.value for family in telemetry.REGISTRY.collect() for s in family.samples
            if s.name == "learning_engine_rpc_streams_total" and s.labels["method"] == method}


async def _grew(method: str, before: dict[str, float]) -> dict[str, float]:
    """What the counter of ``method`` grew by, once it grew (the server ends the call after the client left)."""
    for _ in range(100):
        after = _streams(method)
        if sum(after.values()) > sum(before.values()):
            break
        await asyncio.sleep(0.05)
    return {code: n - before.get(code, 0) for code, n in after.items() if n != before.get(code, 0)}


async def test_a_watch_the_client_cancels_is_counted_as_cancelled(make_server) -> None:
    server = await make_server(embedded_worker=False)  # no worker: the job stays QUEUED, the watch waits
    job = (await server.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=1)))).training_job
    before = _streams(WATCH)
    call = server.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=job.name))
    await call.read()  # the stream is open and has sent the job as it is
    call.cancel()
    assert await _grew(WATCH, before) == {"CANCELLED": 1}


async def test_a_watch_past_its_deadline_is_counted_as_deadline_exceeded(make_server) -> None:
    server = await make_server(embedded_worker=False)
    job = (await server.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=1)))).training_job
    before = _streams(WATCH)
    call = server.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=job.name), timeout=1.0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await _grew(WATCH, before) == {"DEADLINE_EXCEEDED": 1}


class _StoppedCall:
    """What a handler's context holds when gRPC stops the call from outside: no code set, and the time left."""

    def __init__(self, time_remaining: float | None) -> None:
        self._time_remaining = time_remaining

    def code(self) -> None:
        return None

    def time_remaining(self) -> float | None:
        return self._time_remaining


@pytest.mark.parametrize(("time_remaining", "code"), [(None, "CANCELLED"), (30.0, "CANCELLED"),
                                                      (0.0, "DEADLINE_EXCEEDED"),
                                                      (0.01, "DEADLINE_EXCEEDED")])  # the client's passed first
@pytest.mark.parametrize("stop", [asyncio.CancelledError, GeneratorExit])
async def test_a_unary_or_upload_call_stopped_from_outside_is_counted_as_gRPC_ends_it(
        time_remaining: float | None, code: str, stop: type[BaseException]) -> None:
    async def behavior(request: object, context: object) -> object:
        raise stop()

    handlers = {"/t.S/Unary": grpc.unary_unary_rpc_method_handler(behavior),
                "/t.S/Upload": grpc.stream_unary_rpc_method_handler(behavior)}
    for method, handler in handlers.items():
        async def continuation(details: object, handler: grpc.RpcMethodHandler = handler) -> grpc.RpcMethodHandler:
            return handler

        wrapped = await RpcMetricsInterceptor().intercept_service(continuation, _Details(method))
        call = wrapped.unary_unary or wrapped.stream_unary
        latency = telemetry.REGISTRY.get_sample_value("learning_engine_rpc_duration_seconds_count",
                                                      {"method": method, "code": code}) or 0.0
        before = _streams(method)
        with pytest.raises(stop):
            await call(object(), _StoppedCall(time_remaining))
        if handler.request_streaming:
            assert await _grew(method, before) == {code: 1}
        else:
            assert telemetry.REGISTRY.get_sample_value("learning_engine_rpc_duration_seconds_count",
                                                       {"method": method, "code": code}) == latency + 1


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()
