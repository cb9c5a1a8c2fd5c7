"""A golden suite line that is deeply nested JSON (``"[" * 100000``, on which json.loads raises RecursionError)
is a bad line through gRPC: INVALID_ARGUMENT EVAL_SUITE_INVALID with a ``line[N]`` violation, never INTERNAL."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from learning.v1 import evaluation_pb2 as pb
from learning.v1 import evaluation_pb2_grpc as pb_grpc
from tests.server.conftest import error_details


async def test_a_deeply_nested_line_of_a_golden_suite_is_invalid_argument(client, data_dir: Path):
    (data_dir / "datasets").mkdir(parents=True, exist_ok=True)
    (data_dir / "datasets" / "deep.jsonl").write_text(
        '{"prompt": "Capital of France?", "expected": "Paris"}\n' + "[" * 100_000 + "\n")
    jobs = pb_grpc.EvaluationServiceStub(client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.CreateEvaluationJob(pb.CreateEvaluationJobRequest(
            spec=pb.EvaluationJobSpec(base_model_itself=True, suite_paths=["deep.jsonl"])))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    info, violations = error_details(err.value)
    assert info.reason == "EVAL_SUITE_INVALID" and [f for f, _ in violations] == ["line[2]"]
