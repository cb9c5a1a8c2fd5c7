"""Hyperparameters.sharding through the API: validated at create (unknown values, what cannot be sharded: a
quantized base, KTO), the server's training_sharding default applied only where a job can be sharded, and a job
that resolves to one device on its worker failing with the reason. The sharded training itself:
tests/engine/test_distributed.py."""

from __future__ import annotations

import grpc
import pytest
import torch

from engine.domain import FisherSpace
from engine.training.spec import Hyperparameters, Sharding, TrainingDefaults
from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as pb
from server.convert import EwcDefaults, spec_from_pb
from tests.server.conftest import error_details, spec, watch_all


@pytest.fixture
async def client(memory_client):
    return memory_client


async def create(client, asked: pb.TrainingJobSpec, validate_only: bool = True) -> pb.TrainingJob:
    return (await client.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=asked, validate_only=validate_only))).training_job


async def refused(client, asked: pb.TrainingJobSpec) -> tuple[grpc.aio.AioRpcError, object, list]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(client, asked)
    info, violations = error_details(err.value)
    return err.value, info, violations


async def test_an_unknown_sharding_is_an_invalid_argument_on_its_field(client):
    error, info, violations = await refused(client, spec(sharding=7))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and info.reason == "INVALID_TRAINING_SPEC"
    assert ("spec.hyperparameters.sharding", "unknown enum value 7") in violations


@pytest.mark.parametrize(("asked", "reason", "metadata"), [
    ({"quantization": pb.QUANTIZATION_NF4, "num_devices": 2}, "FSDP_QUANTIZED_BASE", ("quantization", "NF4")),
    ({"quantization": pb.QUANTIZATION_INT8}, "FSDP_QUANTIZED_BASE", ("quantization", "INT8")),
    ({"num_devices": 1}, "FSDP_NEEDS_SEVERAL_DEVICES", ("devices", "1")),
])
async def test_what_cannot_be_sharded_is_a_failed_precondition_with_its_reason(client, asked, reason, metadata):
    error, info, _ = await refused(client, spec(sharding=pb.SHARDING_FSDP, **asked))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and info.reason == reason
    assert dict(info.metadata)[metadata[0]] == metadata[1]


def with_base_kl(asked: pb.TrainingJobSpec, method=common.BASE_PROTECTION_METHOD_BASE_KL) -> pb.TrainingJobSpec:
    asked.base_protection.CopyFrom(common.BaseProtection(method=method, fraction=0.2, kl_weight=0.5))
    return asked


def with_prompt_kl(asked: pb.TrainingJobSpec) -> pb.TrainingJobSpec:
    asked.base_protection.CopyFrom(common.BaseProtection(method=common.BASE_PROTECTION_METHOD_BASE_KL, fraction=0.2,
                                                         kl_weight=0.5, prompt_kl_weight=1.0))
    return asked


async def test_a_kl_term_at_the_prompt_positions_is_not_sharded(client):
    error, info, _ = await refused(client, with_prompt_kl(spec(sharding=pb.SHARDING_FSDP, num_devices=2)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and info.reason == "FSDP_PROMPT_KL_UNSUPPORTED"
    assert dict(info.metadata)["prompt_kl_weight"] == "1"


async def test_kto_is_not_sharded_and_a_kl_term_to_the_base_is(client):
    asked = spec(sharding=pb.SHARDING_FSDP, num_devices=2)
    asked.objective = pb.OBJECTIVE_KTO
    error, info, _ = await refused(client, asked)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and info.reason == "FSDP_OBJECTIVE_UNSUPPORTED"
    assert dict(info.metadata)["objective"] == "KTO"
    for method in (common.BASE_PROTECTION_METHOD_BASE_KL, common.BASE_PROTECTION_METHOD_SELF_REHEARSAL):
        job = await create(client, with_base_kl(spec(sharding=pb.SHARDING_FSDP, num_devices=2), method))
        assert job.spec.hyperparameters.sharding == pb.SHARDING_FSDP
        assert (job.spec.base_protection.method, job.spec.base_protection.kl_weight) == (method, 0.5)


async def test_sharding_is_kept_on_the_job_and_unset_means_none(client):
    assert (await create(client, spec(num_devices=2))).spec.hyperparameters.sharding == pb.SHARDING_NONE
    job = await create(client, spec(sharding=pb.SHARDING_FSDP, num_devices=2))
    assert job.spec.hyperparameters.sharding == pb.SHARDING_FSDP
    assert (await create(client, spec(sharding=pb.SHARDING_NONE))).spec.hyperparameters.sharding == pb.SHARDING_NONE


async def test_the_servers_default_shards_only_jobs_that_can_be(make_memory_server):
    client = await make_memory_server(training_sharding="FSDP", training_num_devices=0)
    assert (await create(client, spec())).spec.hyperparameters.sharding == pb.SHARDING_FSDP
    assert (await create(client, with_base_kl(spec()))).spec.hyperparameters.sharding == pb.SHARDING_FSDP
    for unshardable in (spec(num_devices=1), spec(quantization=pb.QUANTIZATION_NF4), with_prompt_kl(spec())):
        assert (await create(client, unshardable)).spec.hyperparameters.sharding == pb.SHARDING_NONE
    kto = spec()  # (KTO needs a feedback dataset to be created: the conversion alone here)
    kto.objective = pb.OBJECTIVE_KTO
    defaults = TrainingDefaults(hyperparameters=Hyperparameters(sharding=Sharding.FSDP, num_devices=0))
    ewc = EwcDefaults(FisherSpace.LORA_PARAMETERS, {FisherSpace.LORA_PARAMETERS: 0.3})
    assert spec_from_pb(kto, default_base_model="tiny", ewc_defaults=ewc, defaults=defaults).hyperparameters.sharding \
        is Sharding.NONE
    sft = spec_from_pb(spec(), default_base_model="tiny", ewc_defaults=ewc, defaults=defaults)
    assert sft.hyperparameters.sharding is Sharding.FSDP
    asked = await create(client, spec(sharding=pb.SHARDING_NONE))  # a job that says wins
    assert asked.spec.hyperparameters.sharding == pb.SHARDING_NONE


async def test_a_sharded_job_on_a_worker_with_one_device_fails_with_the_reason(make_memory_server):
    if torch.cuda.is_available() and torch.cuda.device_count() >= 2:
        pytest.skip("this worker has several GPUs: the job would be sharded across them")
    client = await make_memory_server(training_num_devices=0)  # every device of the worker: known only there
    job = await create(client, spec(epochs=1, sharding=pb.SHARDING_FSDP), validate_only=False)
    await watch_all(client.training, job.name)
    failed = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert failed.state == common.JOB_STATE_FAILED and not failed.output_adapter_version
    assert failed.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "sharding FSDP splits the model across devices, and this job trains on 1" in failed.error.message


async def test_a_sharded_job_gets_the_default_protection_as_it_is(make_memory_server):
    client = await make_memory_server(base_protection_method="BASE_KL", base_rehearsal_fraction=0.15,
                                      base_kl_weight=8.0)
    for asked in (spec(sharding=pb.SHARDING_FSDP, num_devices=2), spec()):
        job = await create(client, asked)
        protection = job.spec.base_protection  # the KL term, sharded or not (tests/engine/test_distributed.py)
        assert (protection.method, round(protection.fraction, 6), protection.kl_weight) == (
            common.BASE_PROTECTION_METHOD_BASE_KL, 0.15, 8.0)
