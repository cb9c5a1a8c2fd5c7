"""Fuzzing every RPC the server lists by reflection: no request, however hostile, gets INTERNAL or UNKNOWN.

Each RPC gets ``FUZZ_CALLS_PER_RPC`` (default 60) requests from a seeded fuzzer (``FUZZ_SEED``, default
1515): random messages, one hostile value planted in a plausible message, and raw bytes that are not a
message at all (see tests/fixtures/fuzz.py). Client streams send one to three of them; server streams are
cancelled after their first response. Every error must carry exactly one ErrorInfo, and
the server must still answer its health check at the end. Health and reflection
are fuzzed too, for INTERNAL and UNKNOWN only. A larger run for the README's figures:

    FUZZ_CALLS_PER_RPC=240 FUZZ_SEED=7 .venv/bin/pytest -q -s tests/server/test_fuzz.py
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from tests.fixtures.fuzz import Fuzzer, Rpc, discover

CALLS_PER_RPC = int(os.environ.get("FUZZ_CALLS_PER_RPC", "60"))
SEED = int(os.environ.get("FUZZ_SEED", "1515"))
SKIP = ("grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")
FORBIDDEN = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
# Ends the client chose (server streams are cut short on purpose) or transport limits; not the server's answer.
CLIENT_SIDE = (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)


async def _call(channel: grpc.aio.Channel, rpc: Rpc, payloads: list[bytes]) -> grpc.aio.Call:
    path = rpc.path
    if rpc.client_streaming and rpc.server_streaming:
        call = channel.stream_stream(path)(iter(payloads), timeout=20)
    elif rpc.client_streaming:
        call = channel.stream_unary(path)(iter(payloads), timeout=20)
    elif rpc.server_streaming:
        call = channel.unary_stream(path)(payloads[0], timeout=20)
    else:
        call = channel.unary_unary(path)(payloads[0], timeout=20)
    try:
        if rpc.server_streaming:  # the first response shows the server coped; a watch would go on forever
            async for _ in call:
                call.cancel()
                break
        else:
            await call
    except grpc.aio.AioRpcError:
        pass  # judged from the call's status
    return call


def _problem(rpc: Rpc, payloads: list[bytes], code: grpc.StatusCode, details: str | None, trailers) -> str | None:
    """Why this outcome is wrong, or None."""
    if code in FORBIDDEN:
        return f"{rpc.path} answered {code.name}: {(details or '')[:300]!r} to {payloads[0][:80]!r}"
    if code == grpc.StatusCode.OK or code in CLIENT_SIDE or not rpc.path.startswith("/learning.v1."):
        return None  # health and reflection answer in their own protocols' terms
    status = None
    for key, value in trailers or ():
        if key == "grpc-status-details-bin":
            status = rpc_status.status_pb2.Status.FromString(value)
    if status is None:
        return f"{rpc.path} answered {code.name} without a google.rpc.Status: {(details or '')[:200]!r}"
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    if len(infos) != 1:
        return f"{rpc.path} answered {code.name} with {len(infos)} ErrorInfo details"
    return None


@pytest.mark.slow
async def test_every_rpc_survives_hostile_and_garbage_requests(make_server):
    client = await make_server(rate_limit_feedback_per_second=0)
    target = f"127.0.0.1:{client.app.port}"
    rpcs = await asyncio.to_thread(discover, target, SKIP)
    names = {r.path for r in rpcs}
    assert "/learning.v1.FeedbackService/StreamFeedback" in names and "/grpc.health.v1.Health/Check" in names
    fuzzer = Fuzzer(SEED)
    plan = []
    for rpc in rpcs:
        payloads = list(fuzzer.requests(rpc, CALLS_PER_RPC * 3 if rpc.client_streaming else CALLS_PER_RPC))
        if rpc.client_streaming:  # one to three messages a call
            calls = [payloads[i:i + 1 + i % 3] for i in range(0, len(payloads), 3)][:CALLS_PER_RPC]
        else:
            calls = [[p] for p in payloads]
        plan.extend((rpc, call) for call in calls)
    fuzzer.random.shuffle(plan)

    codes: Counter[str] = Counter()
    problems: list[str] = []
    limit = asyncio.Semaphore(8)
    started = time.monotonic()

    async def one(rpc: Rpc, payloads: list[bytes]) -> None:
        async with limit:
            call = await _call(client.channel, rpc, payloads)
            code = await call.code()
            codes[code.name] += 1
            problem = _problem(rpc, payloads, code, await call.details(), await call.trailing_metadata())
            if problem:
                problems.append(problem)

    await asyncio.gather(*(one(rpc, payloads) for rpc, payloads in plan))
    elapsed = time.monotonic() - started
    print(f"\nfuzz: {len(plan)} calls over {len(rpcs)} RPCs (seed {SEED}) in {elapsed:.1f}s: {dict(codes)}")
    assert not problems, f"{len(problems)} bad answers, e.g.:\n" + "\n".join(sorted(set(problems))[:15])
    health = health_pb2_grpc.HealthStub(client.channel)
    assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING
