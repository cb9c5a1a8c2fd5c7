"""Every create looks its request_id up before it converts the request (engine.jobs.manager.RetriedCreates): a spec
the conversion refuses under a used request_id is a reuse (ALREADY_EXISTS REQUEST_ID_REUSED), not INVALID_ARGUMENT,
and the same request again is answered with its job. Evaluation's conversion checks the spec's shape (a version
with base_model_itself), so it shows the order; training's is held in test_create_retry_before_validation.py."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from learning.v1 import evaluation_pb2 as pb
from learning.v1 import evaluation_pb2_grpc as pb_grpc
from tests.server.test_datasets import refused


async def test_a_reused_request_id_is_refused_before_the_spec_is_converted(make_server, data_dir: Path):
    client = await make_server()
    (data_dir / "datasets" / "quiz.jsonl").write_text(json.dumps({"prompt": "Capital of France?",
                                                                  "expected": "Paris"}) + "\n")
    jobs = pb_grpc.EvaluationServiceStub(client.channel)
    spec = pb.EvaluationJobSpec(base_model_itself=True, suite_paths=["quiz.jsonl"])
    made = await jobs.CreateEvaluationJob(pb.CreateEvaluationJobRequest(spec=spec, request_id="r-1"))
    bad = pb.EvaluationJobSpec(base_model_itself=True, version="v1.0", suite_paths=["quiz.jsonl"])
    code, reason, _ = await refused(jobs.CreateEvaluationJob(pb.CreateEvaluationJobRequest(spec=bad, request_id="r-1")))
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    code, _, _ = await refused(jobs.CreateEvaluationJob(pb.CreateEvaluationJobRequest(spec=bad)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT  # the conversion's refusal, with no request_id to find
    again = await jobs.CreateEvaluationJob(pb.CreateEvaluationJobRequest(spec=spec, request_id="r-1"))
    assert again.evaluation_job.name == made.evaluation_job.name
