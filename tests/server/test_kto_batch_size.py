"""A KTO training job whose every optimiser step would hold one example (batch_size 1, no gradient accumulation) is
refused at creation: a step of one example has no other example's answer to estimate KTO's KL reference point from
(engine/training/kto.py; TRL's KTOTrainer refuses a per-device batch size of 1 for the same reason)."""

from __future__ import annotations

import grpc
import pytest

from engine.domain import FisherSpace
from engine.errors import InvalidArgument
from engine.training.spec import Hyperparameters, TrainingDefaults
from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as pb
from server.convert import EwcDefaults, spec_from_pb
from tests.server.conftest import error_details, spec

FIELD = "spec.hyperparameters.batch_size"
EWC = EwcDefaults(FisherSpace.LORA_PARAMETERS, {FisherSpace.LORA_PARAMETERS: 0.3})


@pytest.fixture
async def client(memory_client):
    return memory_client


def kto_spec(**hyper) -> pb.TrainingJobSpec:
    hp = {"epochs": 1, "learning_rate": 5e-3, "max_seq_length": 96, "seed": 3}
    hp.update(hyper)
    return pb.TrainingJobSpec(feedback=common.FeedbackDataset(days=1, min_samples=4), objective=pb.OBJECTIVE_KTO,
                              hyperparameters=pb.Hyperparameters(**hp))


async def _refused(client, asked: pb.TrainingJobSpec, validate_only: bool = False):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=asked, validate_only=validate_only))
    listed = await client.training.ListTrainingJobs(pb.ListTrainingJobsRequest())
    assert list(listed.training_jobs) == [], "a rejected request left a job behind"
    return err.value


@pytest.mark.parametrize("validate_only", [False, True])
async def test_a_kto_job_of_one_example_per_step_is_an_invalid_argument_on_its_batch_size(client, validate_only):
    err = await _refused(client, kto_spec(batch_size=1), validate_only)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = error_details(err)
    assert info.reason == "INVALID_TRAINING_SPEC"
    assert [f for f, _ in violations] == [FIELD]
    assert "OBJECTIVE_KTO" in violations[0][1] and "gradient_accumulation_steps" in violations[0][1]


async def test_a_servers_default_batch_size_of_one_refuses_a_kto_job_that_sets_none(make_memory_server):
    client = await make_memory_server(training_batch_size=1)
    err = await _refused(client, kto_spec())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = error_details(err)
    assert info.reason == "INVALID_TRAINING_SPEC" and [f for f, _ in violations] == [FIELD]
    assert "training_batch_size, 1" in violations[0][1]


async def test_an_sft_job_of_batch_size_one_is_still_accepted(client):
    checked = await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(batch_size=1),
                                                                                  validate_only=True))
    assert checked.training_job.spec.hyperparameters.batch_size == 1


@pytest.mark.parametrize(("batch_size", "accumulation"), [(2, 0), (1, 2), (4, 1)])
def test_kto_steps_of_two_examples_or_more_pass_the_check(batch_size: int, accumulation: int):
    """Steps hold batch_size * gradient_accumulation_steps examples (engine.training.batching)."""
    converted = spec_from_pb(kto_spec(batch_size=batch_size, gradient_accumulation_steps=accumulation),
                             default_base_model="tiny", ewc_defaults=EWC)
    assert converted.hyperparameters.batch_size == batch_size
    refused = kto_spec(batch_size=1, gradient_accumulation_steps=1)
    with pytest.raises(InvalidArgument) as err:
        spec_from_pb(refused, default_base_model="tiny", ewc_defaults=EWC,
                     defaults=TrainingDefaults(hyperparameters=Hyperparameters(batch_size=8)))
    assert [v.field for v in err.value.violations] == [FIELD]
