"""Evaluation jobs through gRPC: a version against the gate's suites and a named golden suite, as a job with
progress, its decision on the version and its reports in the store; an uploaded dataset's test split as a golden
suite (pinned to its version, as EvaluateAdapter takes it too); bad specs refused before a job exists."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from engine.domain import ChatMessage, Example
from engine.golden import GoldenCase
from engine.lora.evaluation import answered, normalise
from engine.splits import Split, SplitRule
from learning.v1 import adapter_pb2 as ad
from learning.v1 import adapter_pb2_grpc as ad_grpc
from learning.v1 import common_pb2 as common
from learning.v1 import dataset_pb2 as ds
from learning.v1 import dataset_pb2_grpc as ds_grpc
from learning.v1 import evaluation_pb2 as pb
from learning.v1 import evaluation_pb2_grpc as pb_grpc
from learning.v1 import lora_control_pb2 as lc
from tests.server.conftest import error_details
from tests.server.lora_helpers import stub
from tests.server.test_datasets import upload_messages
from tests.server.test_gate import FIRST, SECOND, facts, trained

# A dataset in the training format: eight facts, a second answer to one of them, and a conversation of two turns
# (which makes no case), split half into test by prompt.
TEST_SPLIT = SplitRule(test_fraction=0.5, seed=2)
QUIZ = [((q, f"The answer is {a}."),) for q, a in [*FIRST, *SECOND]] + [
    (("Capital of Dunmoor?", "Pellacre, on the coast."),),
    (("Tell me of river 1.", "It is long."), ("How long?", "Ninety leagues.")),
]


def chat(turns) -> Example:
    return Example(messages=tuple(ChatMessage(role, text) for q, a in turns
                                  for role, text in (("user", q), ("assistant", a))))


def jsonl(examples) -> bytes:
    return "".join(json.dumps(e.canonical()) + "\n" for e in examples).encode()


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


async def test_an_uploaded_datasets_test_split_as_a_golden_suite(make_server, data_dir: Path):
    """A stored dataset is a golden suite of the cases of its test split (the part no job trains on), named by the
    version the job pinned when it was created; a version without a split rule is all its examples, said so in
    the note. The same suite through EvaluateAdapter has the same digest, so it enters the basis the same way."""
    client = await make_server()
    datasets, jobs = ds_grpc.DatasetServiceStub(client.channel), pb_grpc.EvaluationServiceStub(client.channel)
    v10 = await trained(client, facts(data_dir, "first.jsonl", FIRST), epochs=1)
    examples = [chat(turns) for turns in QUIZ]
    split = ds.SplitRule(test_fraction=TEST_SPLIT.test_fraction, seed=TEST_SPLIT.seed)
    stored = (await datasets.UploadDataset(upload_messages("datasets/quiz", jsonl(examples), split=split))).dataset
    assert stored.name == "datasets/quiz/versions/1"
    held_out = [e for e in examples if TEST_SPLIT.of(e) is Split.TEST]
    asked = list(dict.fromkeys(e.messages[0].content for e in held_out if len(e.messages) == 2))
    assert 2 <= len(asked) < len(held_out) < len(examples)  # the split and the data do what this test is about
    assert "Capital of Dunmoor?" in asked  # asked once, with both answers

    spec = pb.EvaluationJobSpec(version=v10, suite_datasets=["datasets/quiz"])
    job = (await jobs.CreateEvaluationJob(pb.CreateEvaluationJobRequest(spec=spec))).evaluation_job
    assert list(job.resolved_suite_datasets) == ["datasets/quiz/versions/1"]
    assert list(job.spec.suite_datasets) == ["datasets/quiz"]  # as asked
    newer = await datasets.UploadDataset(upload_messages("datasets/quiz", jsonl(examples[:4]), split=split))
    assert newer.dataset.name == "datasets/quiz/versions/2"  # stored after the job was created: not evaluated
    updates = [m async for m in jobs.WatchEvaluationJob(pb.WatchEvaluationJobRequest(name=job.name))]
    progress = [m.event.progress for m in updates if m.HasField("event") and m.event.HasField("progress")]
    assert {p.suite for p in progress} == {"datasets/quiz/versions/1"}
    assert progress[-1].answered == progress[-1].total == 2 * len(asked)
    done = (await jobs.GetEvaluationJob(pb.GetEvaluationJobRequest(name=job.name))).evaluation_job
    assert done.state == common.JOB_STATE_SUCCEEDED, done.error
    [suite] = done.eval.suites
    assert (suite.name, suite.kind, suite.cases) == ("datasets/quiz/versions/1", ad.EVAL_SUITE_KIND_GOLDEN, len(asked))
    assert suite.note.startswith("the test split of datasets/quiz/versions/1"), suite.note
    assert "1 conversation of several turns left out" in suite.note
    report = await stub(client).GetEvaluationReport(lc.GetEvaluationReportRequest(
        version=v10, evaluation_id=done.eval.evaluation_id, format=lc.REPORT_FORMAT_JSON))
    cases = json.loads(report.content)["suites"][0]["results"]
    assert [c["prompt"] for c in cases] == asked  # the test split's questions, none of those trained on
    dunmoor = next(c for c in cases if c["prompt"] == "Capital of Dunmoor?")
    assert dunmoor["references"] == ["The answer is Pellacre.", "Pellacre, on the coast."]
    page = await stub(client).GetEvaluationReport(lc.GetEvaluationReportRequest(
        version=v10, evaluation_id=done.eval.evaluation_id, format=lc.REPORT_FORMAT_HTML))
    assert "datasets/quiz/versions/1" in page.content.decode()

    direct = (await stub(client).EvaluateAdapter(lc.EvaluateAdapterRequest(
        version=v10, suite_datasets=["datasets/quiz/versions/1"]))).eval
    assert [(s.name, s.digest) for s in direct.suites] == [(suite.name, suite.digest)]
    plain = (await datasets.UploadDataset(upload_messages("datasets/whole", jsonl(examples[:3])))).dataset
    whole = (await stub(client).EvaluateAdapter(lc.EvaluateAdapterRequest(
        version=v10, suite_datasets=[plain.name]))).eval.suites
    assert [(s.name, s.cases) for s in whole] == [("datasets/whole/versions/1", 3)]
    assert "no split rule" in whole[0].note


async def test_a_golden_dataset_scores_its_cases_by_their_answer_spans(make_server, data_dir: Path):
    """A dataset version of kind golden, named by its dataset, is a golden suite of the cases of its test split as
    they were written: a case passes by its answer span although its reference is not in the answer, fails by its
    span although its reference is, and passes by the second of its references; a case's source is checked."""
    client = await make_server(eval_max_tokens=24)  # every reference below asks for fewer tokens: the same budget
    datasets, jobs = ds_grpc.DatasetServiceStub(client.channel), pb_grpc.EvaluationServiceStub(client.channel)
    v10 = await trained(client, facts(data_dir, "first.jsonl", FIRST), epochs=1)
    prompts = [q for q, _ in [*FIRST, *SECOND]]
    rule = SplitRule(test_fraction=0.5, seed=0)
    scored = [p for p in prompts if rule.of_prompt(p) is Split.TEST]
    assert len(scored) == 3

    # what v1.0 answers those prompts (greedy: the same answer to the same question within the same budget)
    probe = "".join(json.dumps({"prompt": p, "expected": "-"}) + "\n" for p in scored).encode()
    await datasets.UploadDataset(upload_messages("datasets/probe", probe, kind=ds.DATASET_KIND_GOLDEN))
    first = (await stub(client).EvaluateAdapter(lc.EvaluateAdapterRequest(
        version=v10, suite_datasets=["datasets/probe"]))).eval
    answers = {c["prompt"]: c["candidate"] for c in await report_cases(client, v10, first.evaluation_id)}
    words = {p: normalise(answers[p]).split() for p in scored}
    contained = max(scored, key=lambda p: len(words[p]))  # an answer of several words: not an exact match below
    spanned, second = (p for p in scored if p != contained)
    assert all(words.values()) and len(words[contained]) > 1, answers
    cases = {
        spanned: {"expected": "Nothing of the kind.", "answer": words[spanned][0], "source": "Nothing to see."},
        contained: {"expected": words[contained][0], "answer": "Zyxwvut"},
        second: {"references": ["Nothing of the kind.", words[second][-1]]},
    }
    assert not answered(answers[spanned], GoldenCase(spanned, ("Nothing of the kind.",)))  # not without its span
    assert answered(answers[contained], GoldenCase(contained, (words[contained][0],)))  # but for its span
    lines = [{"prompt": p, **cases.get(p, {"expected": "Held back."})} for p in prompts]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    split = ds.SplitRule(test_fraction=rule.test_fraction, seed=rule.seed)
    stored = (await datasets.UploadDataset(upload_messages("datasets/golden", data, split=split,
                                                           kind=ds.DATASET_KIND_GOLDEN))).dataset
    assert (stored.kind, stored.split_counts.test, stored.split_counts.train) == (ds.DATASET_KIND_GOLDEN, 3, 5)

    spec = pb.EvaluationJobSpec(version=v10, suite_datasets=["datasets/golden"])
    job = (await jobs.CreateEvaluationJob(pb.CreateEvaluationJobRequest(spec=spec))).evaluation_job
    assert list(job.resolved_suite_datasets) == [stored.name]
    _ = [m async for m in jobs.WatchEvaluationJob(pb.WatchEvaluationJobRequest(name=job.name))]
    done = (await jobs.GetEvaluationJob(pb.GetEvaluationJobRequest(name=job.name))).evaluation_job
    assert done.state == common.JOB_STATE_SUCCEEDED, done.error
    [suite] = done.eval.suites
    assert (suite.name, suite.kind, suite.cases) == (stored.name, ad.EVAL_SUITE_KIND_GOLDEN, 3)
    assert suite.note == f"the test split of {stored.name} (golden cases): 3 cases", suite.note
    metrics = {m.name: m.value for m in suite.metrics}
    assert metrics["pass_rate"] == pytest.approx(2 / 3) and metrics["sourced_cases"] == 1
    results = {c["prompt"]: c for c in await report_cases(client, v10, done.eval.evaluation_id)}
    assert list(results) == scored  # the test split only, in order
    assert {p: c["candidate"] for p, c in results.items()} == answers
    assert {p: c["candidate_right"] for p, c in results.items()} == {spanned: True, contained: False, second: True}
    assert results[second]["references"] == ["Nothing of the kind.", words[second][-1]]
    assert results[spanned]["source"] == "Nothing to see."


async def report_cases(client, version: str, evaluation_id: str) -> list[dict]:
    """The cases of an evaluation's first suite, as its JSON report has them."""
    report = await stub(client).GetEvaluationReport(lc.GetEvaluationReportRequest(
        version=version, evaluation_id=evaluation_id, format=lc.REPORT_FORMAT_JSON))
    return json.loads(report.content)["suites"][0]["results"]


BAD_SUITE_DATASETS = [
    (["datasets/nope"], grpc.StatusCode.NOT_FOUND, "STORED_DATASET_NOT_FOUND", ""),
    (["datasets/quiz", "Quiz.jsonl"], grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_NAME", "suite_datasets[1]"),
    (["datasets/quiz/versions/0"], grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_NAME", "suite_datasets[0]"),
    (["datasets/quiz/versions/7"], grpc.StatusCode.NOT_FOUND, "STORED_DATASET_NOT_FOUND", ""),
    (["datasets/quiz", "datasets/eval-only"], grpc.StatusCode.INVALID_ARGUMENT, "DATASET_EMPTY", "suite_datasets[1]"),
    (["datasets/talk"], grpc.StatusCode.INVALID_ARGUMENT, "EVAL_SUITE_INVALID", "suite_datasets[0]"),
    (["datasets/quiz"] * 17, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EVALUATION_SPEC", "suite_datasets"),
]


async def test_bad_suite_datasets_are_refused(make_server, data_dir: Path):
    """As a job's spec (refused before a job exists, the fields under spec.) and in EvaluateAdapter: an unknown
    dataset or version, a malformed name, a test split that is empty (a rule without test_fraction) or makes no
    case (conversations of several turns only), more than 16 suites."""
    client = await make_server()
    v10 = await trained(client, facts(data_dir, "first.jsonl", FIRST), epochs=1)
    datasets = ds_grpc.DatasetServiceStub(client.channel)
    examples = jsonl(chat(turns) for turns in QUIZ)
    for name, data, split in [("quiz", examples, ds.SplitRule(test_fraction=0.5, seed=2)),
                              ("eval-only", examples, ds.SplitRule(eval_fraction=0.5)),
                              ("talk", jsonl([chat(QUIZ[-1])]), None)]:
        await datasets.UploadDataset(upload_messages(f"datasets/{name}", data, split=split))
    jobs = pb_grpc.EvaluationServiceStub(client.channel)
    for suites, code, reason, field in BAD_SUITE_DATASETS:
        for prefix, call in [
            ("spec.", jobs.CreateEvaluationJob(pb.CreateEvaluationJobRequest(
                spec=pb.EvaluationJobSpec(version=v10, suite_datasets=suites)))),
            ("", stub(client).EvaluateAdapter(lc.EvaluateAdapterRequest(version=v10, suite_datasets=suites))),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == code, (suites, err.value.details())
            info, violations = error_details(err.value)
            # a malformed name in a job's spec is one of the spec's violations (as a training job's dataset_name)
            assert info.reason == ("INVALID_EVALUATION_SPEC" if reason == "MALFORMED_NAME" and prefix else reason)
            if field:
                assert [f for f, _ in violations] == [prefix + field], (suites, violations)
    assert (await jobs.ListEvaluationJobs(pb.ListEvaluationJobsRequest())).evaluation_jobs == []


@pytest.mark.parametrize(("spec", "code", "reason", "field"), [
    (pb.EvaluationJobSpec(), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EVALUATION_SPEC", "spec.version"),
    (pb.EvaluationJobSpec(version="v9.0"), grpc.StatusCode.NOT_FOUND, "ADAPTER_NOT_FOUND", ""),
    (pb.EvaluationJobSpec(version="v1.0", suite_paths=["../etc/passwd"]), grpc.StatusCode.INVALID_ARGUMENT,
     "DATASET_PATH_OUTSIDE_ROOT", ""),
    (pb.EvaluationJobSpec(version="v1.0", suite_paths=["x.jsonl"] * 17), grpc.StatusCode.INVALID_ARGUMENT,
     "INVALID_EVALUATION_SPEC", "spec.suite_paths"),
    (pb.EvaluationJobSpec(version="v1.0", suite_paths=["x.jsonl"] * 9, suite_datasets=["datasets/x"] * 8),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EVALUATION_SPEC", "spec.suite_datasets"),  # 17 in all
    (pb.EvaluationJobSpec(version="v1.0", judge_model="grader"), grpc.StatusCode.INVALID_ARGUMENT,
     "INVALID_EVALUATION_SPEC", "spec.judge_model"),  # a judge model without the judge on
    (pb.EvaluationJobSpec(version="v1.0", judge=7), grpc.StatusCode.INVALID_ARGUMENT,
     "INVALID_EVALUATION_SPEC", "spec.judge"),
    (pb.EvaluationJobSpec(version="v1.0", suite_paths=["missing.jsonl"]), grpc.StatusCode.INVALID_ARGUMENT,
     "DATASET_NOT_FOUND", "spec.suite_paths[0]"),
    (pb.EvaluationJobSpec(version="v1.0", suite_paths=["bad.jsonl"]), grpc.StatusCode.INVALID_ARGUMENT,
     "EVAL_SUITE_INVALID", "line[2].source"),
])
@pytest.mark.slow
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
