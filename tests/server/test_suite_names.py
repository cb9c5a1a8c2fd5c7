"""Suite paths whose suite name (the file's stem) is one of the gate's own suites or repeats another's are refused
through gRPC before anything runs, naming the path: an evaluation job's spec (INVALID_EVALUATION_SPEC), a
pipeline's (INVALID_PIPELINE) and EvaluateAdapter's ``suite_path``. The configured suite (``eval_suite_path``) is
refused when the settings are read, naming the setting, not at every activation. The rule itself:
tests/engine/test_suite_names.py."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from learning.v1 import common_pb2 as common
from learning.v1 import evaluation_pb2 as pb
from learning.v1 import evaluation_pb2_grpc as pb_grpc
from learning.v1 import lora_control_pb2 as lc
from learning.v1 import pipeline_pb2 as pp
from learning.v1 import pipeline_pb2_grpc as pp_grpc
from learning.v1 import training_pb2 as tr
from server.settings import SettingsError, load_settings
from tests.server.conftest import error_details
from tests.server.lora_helpers import stub, train

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


async def test_evaluate_adapter_with_a_suite_path_named_as_a_gate_suite_names_suite_path(client, data_dir: Path):
    # EvaluateAdapter takes one file, suite_path: its refusal names that field, not suite_paths[0] (which it lacks)
    goldens(data_dir, "target.jsonl")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(client).EvaluateAdapter(lc.EvaluateAdapterRequest(base_model_itself=True, suite_path="target.jsonl"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    info, violations = error_details(err.value)
    assert (info.reason, [f for f, _ in violations]) == ("INVALID_EVALUATION_SPEC", ["suite_path"])
    assert "'target'" in violations[0][1], violations


def test_a_configured_suite_named_as_a_gate_suite_is_a_settings_error_naming_the_setting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("LEARNING_ENGINE_CONFIG", raising=False)
    monkeypatch.delenv("LEARNING_ENGINE_SECRETS_DIR", raising=False)
    with pytest.raises(SettingsError) as caught:
        load_settings({"data_dir": tmp_path, "eval_suite_path": "checks/retention.jsonl"})
    message = str(caught.value)
    assert message.startswith("invalid settings:") and "eval_suite_path" in message, message
    assert "'checks/retention.jsonl'" in message and "'retention'" in message, message
    assert load_settings({"data_dir": tmp_path, "eval_suite_path": "checks/retained.jsonl"}).eval_suite_path


async def test_a_configured_suite_named_as_a_gate_suite_is_refused_at_start_not_at_every_activation(
        make_pg_server, data_dir: Path):
    # before: the server started, and every activation, even forced, was refused INVALID_ARGUMENT naming
    # suite_paths[0], a field ActivateAdapter does not have
    goldens(data_dir, "checks/retention.jsonl")
    try:
        client = await make_pg_server(eval_suite_path="checks/retention.jsonl")
    except Exception as exc:  # noqa: BLE001 - refusing the setting when the server starts is the fix
        assert "eval_suite_path" in str(exc), exc
        return
    version = await train(client, epochs=1)
    try:
        await stub(client).ActivateAdapter(lc.ActivateAdapterRequest(version=version, force=True))
    except grpc.aio.AioRpcError as exc:
        info, violations = error_details(exc)
        raise AssertionError(f"the server started with eval_suite_path={'checks/retention.jsonl'!r} and refuses "
                             f"every activation, even forced: {exc.code()} {info.reason} {violations}") from None
