"""LLM-as-judge and hallucination checks through gRPC on the tiny model: a judge on another engine grades every
answer (its prompts and verdicts in the report), a judge that cannot be read or reached fails the evaluation with
UNAVAILABLE and a reason, and the HTML report of a real evaluation renders its charts in headless Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from learning.v1 import common_pb2 as common
from learning.v1 import evaluation_pb2 as pb
from learning.v1 import evaluation_pb2_grpc as pb_grpc
from learning.v1 import lora_control_pb2 as lc
from tests.engine.test_judge import judge_engine
from tests.fixtures import chromium
from tests.server.conftest import error_details
from tests.server.lora_helpers import activate, status, stub
from tests.server.test_gate import FIRST, facts, trained

SOURCES = {"Capital of Veloria?": "Veloria is a small country. Its capital is Marnesse, on the Orl river.",
           "Capital of Quorvia?": "Quorvia's capital, Talameth, has 12,000 inhabitants.",
           "Capital of Brinmark?": "Brinmark: capital Oskerholm.",
           "Capital of Dunmoor?": "The capital of Dunmoor is Pellacre."}


def quiz(data_dir: Path) -> str:
    (data_dir / "datasets" / "quiz.jsonl").write_text("".join(
        json.dumps({"prompt": q, "expected": f"The capital is {a}.", "answer": a, "source": SOURCES[q]}) + "\n"
        for q, a in FIRST))
    return "quiz.jsonl"


def lenient(prompt: str) -> str:
    """A judge that calls every answer correct and supported, and says so in a chatty, decorated way."""
    return ("Here is my grading.\n**RELEVANCE:** 3/5\n**CORRECTNESS:** 4\n**COMPLETENESS:** 2\n"
            + ("**SUPPORTED:** yes\n" if "Source text:" in prompt else "") + "**CORRECT:** yes\nHope this helps!")


def job_reason(job: pb.EvaluationJob) -> str:
    for detail in job.error.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


async def evaluated(client, version: str, suite: str, **spec_fields) -> pb.EvaluationJob:
    jobs = pb_grpc.EvaluationServiceStub(client.channel)
    spec = pb.EvaluationJobSpec(version=version, suite_paths=[suite], **spec_fields)
    job = (await jobs.CreateEvaluationJob(pb.CreateEvaluationJobRequest(spec=spec))).evaluation_job
    _ = [m async for m in jobs.WatchEvaluationJob(pb.WatchEvaluationJobRequest(name=job.name))]
    return (await jobs.GetEvaluationJob(pb.GetEvaluationJobRequest(name=job.name))).evaluation_job


async def test_a_judge_on_another_engine_grades_every_answer(make_server, data_dir: Path):
    """The server leaves the judge off; the job asks for it, on the engine and model the settings name."""
    runner, url, asked = await judge_engine(lenient)
    try:
        client = await make_server(eval_gate=False, eval_max_tokens=8, eval_judge_url=url,
                                   eval_judge_model="grader", eval_max_hallucination_rate=1.0)
        v10 = await trained(client, facts(data_dir, "first.jsonl", FIRST), epochs=1)
        unjudged = await evaluated(client, v10, quiz(data_dir))
        assert unjudged.state == common.JOB_STATE_SUCCEEDED and asked == []  # off, as the server is
        assert not any(m.name.startswith("quiz.judge") for m in unjudged.eval.metrics)
        done = await evaluated(client, v10, quiz(data_dir), judge=pb.EVALUATION_JUDGE_ON)
        assert done.spec.judge == pb.EVALUATION_JUDGE_ON
    finally:
        await runner.cleanup()
    assert done.state == common.JOB_STATE_SUCCEEDED, done.error
    assert done.progress.completed_steps == done.progress.total_steps == 4 * 4  # 4 cases: 2 answers, 2 verdicts each
    assert {a["model"] for a in asked} == {"grader"} and len(asked) == 8
    report = json.loads((await stub(client).GetEvaluationReport(lc.GetEvaluationReportRequest(
        version=v10, evaluation_id=done.eval.evaluation_id, format=lc.REPORT_FORMAT_JSON))).content)
    assert report["judge"]["model"] == "grader" and report["judge"]["target"] == url
    results = report["suites"][0]["results"]
    # What the judge was asked and what it said are in the report, verbatim.
    assert sorted(r[f"{side}_judge"]["prompt"] for r in results for side in ("candidate", "baseline")) == sorted(
        a["messages"][0]["content"] for a in asked)
    assert all(r["candidate_judge"]["raw"] == lenient(r["candidate_judge"]["prompt"]) for r in results)
    assert all(SOURCES[r["prompt"]] in r["candidate_judge"]["prompt"] for r in results)
    # The tiny model answers nonsense; the judge's word passes every case (a judge this lenient is the operator's
    # choice), and its scores are the suite's.
    assert all(r["candidate_right"] for r in results) and all(r["candidate_by_judge"] for r in results)
    metrics = {m.name: m.value for m in done.eval.metrics}
    assert metrics["quiz.pass_rate"] == 1.0 and metrics["quiz.judge_correct"] == 1.0
    assert metrics["quiz.judge_score"] == pytest.approx((0.5 + 0.75 + 0.25) / 3)
    assert metrics["quiz.judge_unparseable"] == 0.0 and metrics["quiz.sourced_cases"] == 4
    flagged = sum(bool(r["candidate_unsupported"]) for r in results)  # the judge said supported: only the check
    assert metrics["quiz.hallucination_rate"] == pytest.approx(flagged / 4)
    assert all(r["candidate_hallucinated"] == bool(r["candidate_unsupported"]) for r in results)
    assert {m.name: m.value for m in unjudged.eval.metrics}["quiz.pass_rate"] < 1.0  # without the judge's word


async def test_a_judge_that_rambles_fails_the_evaluation(make_server, data_dir: Path):
    """The default judge is the base model; the tiny random one writes no verdict at all."""
    client = await make_server(eval_gate=False, eval_max_tokens=8, eval_judge=True, eval_judge_max_tokens=24)
    v10 = await trained(client, facts(data_dir, "first.jsonl", FIRST), epochs=1)
    done = await evaluated(client, v10, quiz(data_dir))
    assert done.state == common.JOB_STATE_FAILED and not done.HasField("eval")
    assert done.error.code == grpc.StatusCode.UNAVAILABLE.value[0] and job_reason(done) == "JUDGE_UNPARSEABLE"
    assert re.search(r"the judge tiny-llama answered 8 of 8 verdicts of suite quiz in no readable format",
                     done.error.message)
    unjudged = await evaluated(client, v10, "quiz.jsonl", judge=pb.EVALUATION_JUDGE_OFF)  # this job without it
    assert unjudged.state == common.JOB_STATE_SUCCEEDED and unjudged.HasField("eval")


async def test_a_judge_that_is_down_fails_the_evaluation_and_the_activation(make_server, data_dir: Path):
    runner, url, _ = await judge_engine(lenient)
    await runner.cleanup()  # nothing listens there any more
    client = await make_server(eval_gate=False, eval_max_tokens=8, eval_judge=True, eval_judge_url=url,
                               eval_suite_path="quiz.jsonl")
    v10 = await trained(client, facts(data_dir, "first.jsonl", FIRST), epochs=1)
    quiz(data_dir)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(client).EvaluateAdapter(lc.EvaluateAdapterRequest(version=v10))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    info, _ = error_details(err.value)
    assert info.reason == "JUDGE_UNAVAILABLE" and info.metadata["cause"] == "SERVING_UNAVAILABLE"
    assert info.metadata["target"] == url and url in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:  # never a silent pass: the version does not ship
        await activate(client, v10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and error_details(err.value)[0].reason == "JUDGE_UNAVAILABLE"
    assert (await status(client)).active_version == ""


@pytest.mark.slow
@pytest.mark.skipif(chromium.binary() is None, reason=chromium.MISSING)
async def test_a_real_evaluation_report_renders_its_charts_in_chromium(make_server, data_dir: Path,
                                                                        tmp_path: Path):
    runner, url, _ = await judge_engine(lenient)
    try:
        client = await make_server(eval_gate=True, eval_max_tokens=8, eval_judge=True, eval_judge_url=url)
        v10 = await trained(client, facts(data_dir, "first.jsonl", FIRST), epochs=1)
        done = await evaluated(client, v10, quiz(data_dir))
    finally:
        await runner.cleanup()
    assert done.state == common.JOB_STATE_SUCCEEDED, done.error
    page = (await stub(client).GetEvaluationReport(lc.GetEvaluationReportRequest(
        version=v10, evaluation_id=done.eval.evaluation_id, format=lc.REPORT_FORMAT_HTML))).content
    shown = chromium.assert_report_charts_render(page, tmp_path)
    assert f"Eval of {v10} against the base model" in shown.dom
    for suite in ("quiz", "target", "retention", "base"):
        assert f"<td>{suite}</td>" in shown.dom
