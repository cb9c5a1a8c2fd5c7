"""Evaluation jobs through gRPC: a version against the gate's suites and a named golden suite, as a job with
progress, its decision on the version and its reports in the store; bad specs refused before a job exists."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from learning.v1 import adapter_pb2 as ad
from learning.v1 import adapter_pb2_grpc as ad_grpc
from learning.v1 import common_pb2 as common
from learning.v1 import evaluation_pb2 as pb
from learning.v1 import evaluation_pb2_grpc as pb_grpc
from learning.v1 import lora_control_pb2 as lc
from tests.server.conftest import error_details
from tests.server.lora_helpers import stub
from tests.server.test_gate import FIRST, facts, trained


async def test_an_evaluation_job(make_server, data_dir: Path):
    client = await make_server(eval_gate=True, eval_max_tokens=8)
    jobs = pb_grpc.EvaluationServiceStub(client.channel)
    v10 = await trained(client, facts(data_dir, "first.jsonl", FIRST))
    (data_dir / "datasets" / "quiz.jsonl").write_text("".join(
        json.dumps({"prompt": q, "expected": f"The answer is {a}.", "answer": a}) + "\n" for q, a in FIRST))

    spec = pb.EvaluationJobSpec(version=v10, suite_paths=["quiz.jsonl"])
    job = (await jobs.CreateEvaluationJob(pb.CreateEvaluationJobRequest(spec=spec, request_id="r1"))).evaluation_job
    assert job.name.startswith("evaluationJobs/") and job.state == common.JOB_STATE_QUEUED
    again = (await jobs.CreateEvaluationJob(pb.CreateEvaluationJobRequest(spec=spec, request_id="r1")))
    assert again.evaluation_job.name == job.name  # idempotent by request_id
    updates = [m async for m in jobs.WatchEvaluationJob(pb.WatchEvaluationJobRequest(name=job.name))]
    events = [m.event for m in updates if m.HasField("event")]
    progress = [e.progress for e in events if e.HasField("progress")]
    total = 2 * (4 + 4)  # the quiz and the target suite (v1.0's four facts), each asked of both sides
    assert progress and progress[-1].answered == progress[-1].total == total
    assert [p.answered for p in progress] == sorted(p.answered for p in progress)
    assert [p.suite for p in progress][0] == "quiz" and progress[-1].suite == "target"

    done = (await jobs.GetEvaluationJob(pb.GetEvaluationJobRequest(name=job.name))).evaluation_job
    assert done.state == common.JOB_STATE_SUCCEEDED and done.progress.fraction == 1.0
    suites = {v.name: v for v in done.eval.suites}
    assert list(suites) == ["quiz", "target", "retention", "base"] and done.eval.baseline_version == ""
    assert suites["quiz"].kind == ad.EVAL_SUITE_KIND_GOLDEN and suites["quiz"].cases == 4
    assert done.eval.passed == all(v.passed for v in done.eval.suites)
    recorded = (await ad_grpc.AdapterServiceStub(client.channel).GetAdapter(ad.GetAdapterRequest(version=v10)))
    assert recorded.adapter.eval.evaluation_id == done.eval.evaluation_id  # on the version, as an activation's
    report = await stub(client).GetEvaluationReport(lc.GetEvaluationReportRequest(
        version=v10, evaluation_id=done.eval.evaluation_id, format=lc.REPORT_FORMAT_JSON))
    assert [s["name"] for s in json.loads(report.content)["suites"]] == list(suites)
    assert (await stub(client).GetLoraStatus(lc.GetLoraStatusRequest())).status.active_version == ""  # not shipped
    listed = (await jobs.ListEvaluationJobs(pb.ListEvaluationJobsRequest(
        states=[common.JOB_STATE_SUCCEEDED]))).evaluation_jobs
    assert [j.name for j in listed] == [job.name]


@pytest.mark.parametrize(("spec", "code", "reason", "field"), [
    (pb.EvaluationJobSpec(), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EVALUATION_SPEC", "spec.version"),
    (pb.EvaluationJobSpec(version="v9.0"), grpc.StatusCode.NOT_FOUND, "ADAPTER_NOT_FOUND", ""),
    (pb.EvaluationJobSpec(version="v1.0", suite_paths=["../etc/passwd"]), grpc.StatusCode.INVALID_ARGUMENT,
     "DATASET_PATH_OUTSIDE_ROOT", ""),
    (pb.EvaluationJobSpec(version="v1.0", suite_paths=["x.jsonl"] * 17), grpc.StatusCode.INVALID_ARGUMENT,
     "INVALID_EVALUATION_SPEC", "spec.suite_paths"),
    (pb.EvaluationJobSpec(version="v1.0", judge_model="grader"), grpc.StatusCode.INVALID_ARGUMENT,
     "INVALID_EVALUATION_SPEC", "spec.judge_model"),  # a judge model without the judge on
    (pb.EvaluationJobSpec(version="v1.0", judge=7), grpc.StatusCode.INVALID_ARGUMENT,
     "INVALID_EVALUATION_SPEC", "spec.judge"),
    (pb.EvaluationJobSpec(version="v1.0", suite_paths=["missing.jsonl"]), grpc.StatusCode.INVALID_ARGUMENT,
     "DATASET_NOT_FOUND", "spec.suite_paths[0]"),
    (pb.EvaluationJobSpec(version="v1.0", suite_paths=["bad.jsonl"]), grpc.StatusCode.INVALID_ARGUMENT,
     "EVAL_SUITE_INVALID", "line[2].source"),
])
async def test_bad_specs_are_refused_before_a_job_exists(make_server, data_dir: Path, spec, code, reason, field):
    client = await make_server()
    if spec.version == "v1.0":
        await trained(client, facts(data_dir, "first.jsonl", FIRST), epochs=1)
    (data_dir / "datasets" / "bad.jsonl").write_text('{"prompt": "a", "expected": "b"}\n'
                                                     '{"prompt": "c", "expected": "d", "source": 7}\n')
    jobs = pb_grpc.EvaluationServiceStub(client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.CreateEvaluationJob(pb.CreateEvaluationJobRequest(spec=spec))
    assert err.value.code() == code, err.value.details()
    info, violations = error_details(err.value)
    assert info.reason == reason
    if field:
        assert [f for f, _ in violations] == [field]
    assert (await jobs.ListEvaluationJobs(pb.ListEvaluationJobsRequest())).evaluation_jobs == []
