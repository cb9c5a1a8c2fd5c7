"""The base model itself as the evaluated candidate (``base_model_itself``), through gRPC on the tiny model: scored on
golden suites only (it has no training data or lineage of its own), against itself when no version is active
(answered once) and against the active version once one is; its reports apart from every version's; and the
combinations that make no sense refused with a clear status."""

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
from tests.server.lora_helpers import activate, stub
from tests.server.test_gate import FIRST, facts, trained


def quiz(data_dir: Path) -> None:
    (data_dir / "datasets" / "quiz.jsonl").write_text("".join(
        json.dumps({"prompt": q, "expected": f"The answer is {a}.", "answer": a}) + "\n" for q, a in FIRST))


async def report(client, fmt: lc.ReportFormat, evaluation_id: str = "") -> lc.GetEvaluationReportResponse:
    return await stub(client).GetEvaluationReport(lc.GetEvaluationReportRequest(
        base_model_itself=True, evaluation_id=evaluation_id, format=fmt))


async def test_the_base_model_itself_as_the_candidate(make_server, data_dir: Path):
    quiz(data_dir)
    client = await make_server(eval_gate=True, eval_max_tokens=8, eval_suite_path="quiz.jsonl")
    jobs = pb_grpc.EvaluationServiceStub(client.channel)

    # Nothing active: the base model against itself, on the configured golden suite only, each case answered once.
    spec = pb.EvaluationJobSpec(base_model_itself=True)
    job = (await jobs.CreateEvaluationJob(pb.CreateEvaluationJobRequest(spec=spec))).evaluation_job
    assert job.spec.base_model_itself and job.spec.version == "" and job.spec.base_model == "tiny-llama"
    updates = [m async for m in jobs.WatchEvaluationJob(pb.WatchEvaluationJobRequest(name=job.name))]
    progress = [m.event.progress for m in updates if m.HasField("event") and m.event.HasField("progress")]
    assert progress[-1].answered == progress[-1].total == len(FIRST)  # one side answers for both
    states = [m.event.state_change for m in updates if m.HasField("event") and m.event.HasField("state_change")]
    assert "evaluating the base model against the active version" in [s.message for s in states]
    done = (await jobs.GetEvaluationJob(pb.GetEvaluationJobRequest(name=job.name))).evaluation_job
    assert done.state == common.JOB_STATE_SUCCEEDED, done.error
    alone = done.eval
    assert [(s.name, s.kind, s.cases) for s in alone.suites] == [("quiz", ad.EVAL_SUITE_KIND_GOLDEN, len(FIRST))]
    assert alone.baseline_version == "" and alone.regressions == 0 and alone.evaluation_id.endswith("-vs-base")
    shown = json.loads((await report(client, lc.REPORT_FORMAT_JSON)).content)
    assert (shown["version"], shown["base_model_itself"], shown["baseline_version"]) == ("", True, "")
    cases = shown["suites"][0]["results"]
    assert [c["prompt"] for c in cases] == [q for q, _ in FIRST]
    assert all(c["candidate"] == c["baseline"] and not c["regressed"] for c in cases)
    page = await report(client, lc.REPORT_FORMAT_HTML)
    assert page.eval.evaluation_id == alone.evaluation_id and page.uri.endswith(
        f"evaluations/tiny-llama/base-model/{alone.evaluation_id}/report.html")
    assert "Eval of the base model against the base model" in page.content.decode()

    # A version active: the base model against it, on a named suite (the gate's own suites still do not apply).
    v10 = await trained(client, facts(data_dir, "first.jsonl", FIRST), epochs=1)
    gate = (await activate(client, v10, force=True)).eval
    assert {s.name for s in gate.suites} == {"quiz", "target", "retention", "base"}  # a version's gate: all of them
    against = (await stub(client).EvaluateAdapter(lc.EvaluateAdapterRequest(
        base_model_itself=True, suite_path="quiz.jsonl"))).eval
    assert against.baseline_version == v10 and [s.name for s in against.suites] == ["quiz"]
    shown = json.loads((await report(client, lc.REPORT_FORMAT_JSON)).content)  # the latest: this one
    assert shown["baseline_version"] == v10 and "Eval of the base model against v1.0" in (
        await report(client, lc.REPORT_FORMAT_MARKDOWN)).content.decode()
    first = await report(client, lc.REPORT_FORMAT_PNG, alone.evaluation_id)  # an earlier one, by its id
    assert first.content[:8] == b"\x89PNG\r\n\x1a\n" and first.eval.baseline_version == ""
    recorded = (await ad_grpc.AdapterServiceStub(client.channel).GetAdapter(ad.GetAdapterRequest(version=v10)))
    assert recorded.adapter.eval.evaluation_id == gate.evaluation_id  # a version's record is its own evaluations'


REFUSED = [  # (call, code, reason, field)
    ("job", pb.EvaluationJobSpec(version="v1.0", base_model_itself=True, suite_paths=["quiz.jsonl"]),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EVALUATION_SPEC", "spec.version"),
    ("job", pb.EvaluationJobSpec(suite_paths=["quiz.jsonl"]),  # neither a version nor the base model
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EVALUATION_SPEC", "spec.version"),
    ("job", pb.EvaluationJobSpec(base_model_itself=True),  # no golden suite named, none configured
     grpc.StatusCode.FAILED_PRECONDITION, "EVAL_SUITE_NOT_CONFIGURED", ""),
    ("job", pb.EvaluationJobSpec(base_model="another-model", base_model_itself=True, suite_paths=["quiz.jsonl"]),
     grpc.StatusCode.FAILED_PRECONDITION, "BASE_MODEL_MISMATCH", ""),
    ("evaluate", lc.EvaluateAdapterRequest(version="v1.0", base_model_itself=True, suite_path="quiz.jsonl"),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EVALUATION_SPEC", "version"),
    ("evaluate", lc.EvaluateAdapterRequest(base_model_itself=True),
     grpc.StatusCode.FAILED_PRECONDITION, "EVAL_SUITE_NOT_CONFIGURED", ""),
    ("evaluate", lc.EvaluateAdapterRequest(suite_path="quiz.jsonl"),
     grpc.StatusCode.INVALID_ARGUMENT, "MISSING_VERSION", "version"),
    ("report", lc.GetEvaluationReportRequest(version="v1.0", base_model_itself=True),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REPORT_REQUEST", "version"),
    ("report", lc.GetEvaluationReportRequest(base_model_itself=True),  # never evaluated
     grpc.StatusCode.NOT_FOUND, "EVALUATION_NOT_FOUND", ""),
]


async def test_combinations_that_make_no_sense_are_refused(make_server, data_dir: Path):
    quiz(data_dir)
    client = await make_server()  # the gate off, no eval_suite_path
    jobs = pb_grpc.EvaluationServiceStub(client.channel)
    calls = {"job": lambda r: jobs.CreateEvaluationJob(pb.CreateEvaluationJobRequest(spec=r)),
             "evaluate": stub(client).EvaluateAdapter, "report": stub(client).GetEvaluationReport}
    for call, request, code, reason, field in REFUSED:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await calls[call](request)
        assert err.value.code() == code, (call, request, err.value.details())
        info, violations = error_details(err.value)
        assert info.reason == reason, (call, request, err.value.details())
        assert [f for f, _ in violations] == ([field] if field else []), (call, request, violations)
        if reason == "EVAL_SUITE_NOT_CONFIGURED":
            assert "the base model itself is scored on golden suites only" in err.value.details()
        if reason == "EVALUATION_NOT_FOUND":
            assert err.value.details() == "the base model has no evaluation with stored reports"
    assert (await jobs.ListEvaluationJobs(pb.ListEvaluationJobsRequest())).evaluation_jobs == []
