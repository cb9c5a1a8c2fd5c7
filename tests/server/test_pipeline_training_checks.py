"""A pipeline's training template is checked as a training job's spec is, by the same request-only checks: a
template no training job could run (KTO on a JSONL file, EWC settings out of range, a LoRA target the base model
does not have) is refused by CreatePipeline and UpdatePipeline, on the template's fields under
``pipeline.training``, instead of being stored and failing the training stage of each run it starts. So is KTO,
which no run can train with."""

from __future__ import annotations

import grpc
import pytest

from learning.v1 import common_pb2 as common
from learning.v1 import pipeline_pb2 as pp
from learning.v1 import pipeline_pb2_grpc as pp_grpc
from learning.v1 import training_pb2 as pb
from tests.server.conftest import error_details


def jsonl(**fields) -> pb.TrainingJobSpec:
    return pb.TrainingJobSpec(jsonl=common.JsonlDataset(path="capitals.jsonl"), **fields)


async def refused(call) -> tuple[grpc.StatusCode, str, list[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    info, violations = error_details(caught.value)
    return caught.value.code(), info.reason, [field for field, _ in violations]


async def test_a_kto_pipeline_on_a_jsonl_file_is_refused(client):
    # The same spec as a training job: refused up front.
    kto_jsonl = jsonl(objective=pb.OBJECTIVE_KTO)
    with pytest.raises(grpc.aio.AioRpcError) as job:
        await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=kto_jsonl))
    assert (job.value.code(), error_details(job.value)[0].reason) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                                      "KTO_NEEDS_FEEDBACK")
    # As a pipeline's template.
    stub = pp_grpc.PipelineServiceStub(client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as made:
        await stub.CreatePipeline(pp.CreatePipelineRequest(
            pipeline_id="kto-file", pipeline=pp.Pipeline(training=kto_jsonl, enabled=True)))
    assert made.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert any(field.endswith("objective") for field, _ in error_details(made.value)[1])


@pytest.mark.parametrize(("training", "reason", "fields"), [
    (jsonl(objective=pb.OBJECTIVE_KTO), "KTO_NEEDS_FEEDBACK", ["pipeline.training.objective"]),
    (jsonl(ewc=pb.EwcConfig(gamma=2.0, replay_fraction=0.95)), "INVALID_EWC_CONFIG",
     ["pipeline.training.ewc.gamma", "pipeline.training.ewc.replay_fraction"]),
    (jsonl(lora=common.LoraConfig(target_modules=["q_proj", "no_such_proj"])), "UNKNOWN_TARGET_MODULES",
     ["pipeline.training.lora.target_modules"]),
    (jsonl(lora=common.LoraConfig(target_modules=["q_proj", "q_proj"])), "INVALID_LORA_CONFIG",
     ["pipeline.training.lora.target_modules"]),
])
async def test_a_template_no_training_job_could_run_is_refused_on_create_and_update(client, training, reason,
                                                                                     fields):
    code, job_reason, job_fields = await refused(client.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=training, validate_only=True)))
    assert (code, job_reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert job_fields == [f.replace("pipeline.training.", "spec.") for f in fields]
    stub = pp_grpc.PipelineServiceStub(client.channel)
    made = await refused(stub.CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="never", pipeline=pp.Pipeline(training=training, enabled=True))))
    assert made == (grpc.StatusCode.INVALID_ARGUMENT, reason, fields)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.GetPipeline(pp.GetPipelineRequest(name="pipelines/never"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND

    fine = (await stub.CreatePipeline(pp.CreatePipelineRequest(pipeline_id="fine", pipeline=pp.Pipeline(
        training=jsonl(), enabled=True)))).pipeline
    changed = await refused(stub.UpdatePipeline(pp.UpdatePipelineRequest(
        pipeline=pp.Pipeline(name="pipelines/fine", training=training), update_mask={"paths": ["training"]})))
    assert changed == (grpc.StatusCode.INVALID_ARGUMENT, reason, fields)
    assert (await stub.GetPipeline(pp.GetPipelineRequest(name="pipelines/fine"))).pipeline == fine


async def test_a_kto_template_on_feedback_is_refused(client):
    """A run freezes its feedback window into a dataset version, which holds no desirable/undesirable labels, and
    trains on that: a KTO template would fail every run's training stage (KTO_NEEDS_FEEDBACK)."""
    stub = pp_grpc.PipelineServiceStub(client.channel)
    training = pb.TrainingJobSpec(feedback=common.FeedbackDataset(days=1), objective=pb.OBJECTIVE_KTO)
    made = await refused(stub.CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="kto-loop", pipeline=pp.Pipeline(training=training, enabled=True))))
    assert made == (grpc.StatusCode.INVALID_ARGUMENT, "KTO_NEEDS_FEEDBACK", ["pipeline.training.objective"])
    sft = (await stub.CreatePipeline(pp.CreatePipelineRequest(pipeline_id="sft-loop", pipeline=pp.Pipeline(
        training=pb.TrainingJobSpec(feedback=common.FeedbackDataset(days=1)), enabled=True)))).pipeline
    assert sft.training.objective in (pb.OBJECTIVE_SFT, pb.OBJECTIVE_UNSPECIFIED)
