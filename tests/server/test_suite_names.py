"""Suite paths whose suite name (the file's stem) is one of the gate's own suites or repeats another's are refused
through gRPC before anything runs, naming the path: an evaluation job's spec (INVALID_EVALUATION_SPEC) and a
pipeline's (INVALID_PIPELINE). The rule itself: tests/engine/test_suite_names.py."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from learning.v1 import common_pb2 as common
from learning.v1 import evaluation_pb2 as pb
from learning.v1 import evaluation_pb2_grpc as pb_grpc
from learning.v1 import pipeline_pb2 as pp
from learning.v1 import pipeline_pb2_grpc as pp_grpc
from learning.v1 import training_pb2 as tr
from tests.server.conftest import error_details

LINE = '{"prompt": "Capital of France?", "expected": "Paris"}\n'


def goldens(data_dir: Path, *paths: str) -> None:
    for path in paths:
        (data_dir / "datasets" / path).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / "datasets" / path).write_text(LINE)


@pytest.mark.parametrize(("paths", "field"), [
    (["week2/retention.jsonl"], "spec.suite_paths[0]"),
    (["quiz.jsonl", "week2/quiz.jsonl"], "spec.suite_paths[1]"),
], ids=["gate-name", "repeated"])
async def test_an_evaluation_job_with_suites_not_told_apart_is_refused(client, data_dir: Path, paths, field):
    goldens(data_dir, *paths)
    jobs = pb_grpc.EvaluationServiceStub(client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.CreateEvaluationJob(pb.CreateEvaluationJobRequest(
            spec=pb.EvaluationJobSpec(base_model_itself=True, suite_paths=paths)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    info, violations = error_details(err.value)
    assert (info.reason, [f for f, _ in violations]) == ("INVALID_EVALUATION_SPEC", [field])
    listed = await jobs.ListEvaluationJobs(pb.ListEvaluationJobsRequest())
    assert not listed.evaluation_jobs  # refused before a job exists


async def test_a_pipeline_with_suites_not_told_apart_is_refused(client, data_dir: Path):
    goldens(data_dir, "base.jsonl", "a/quiz.jsonl", "b/quiz.jsonl")
    training = tr.TrainingJobSpec(jsonl=common.JsonlDataset(path="capitals.jsonl"))
    pipeline = pp.Pipeline(training=training, suite_paths=["base.jsonl", "a/quiz.jsonl", "b/quiz.jsonl"])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await pp_grpc.PipelineServiceStub(client.channel).CreatePipeline(
            pp.CreatePipelineRequest(pipeline_id="named", pipeline=pipeline))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    info, violations = error_details(err.value)
    assert (info.reason, [f for f, _ in violations]) == \
        ("INVALID_PIPELINE", ["pipeline.suite_paths[0]", "pipeline.suite_paths[2]"])
