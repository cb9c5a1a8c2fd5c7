"""The server's training_* settings are what a job gets for what its request leaves unset; what it sets wins."""

from __future__ import annotations

import pytest

from engine.domain import BaseProtectionMethod
from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as pb
from server.settings import SettingsError, load_settings
from tests.server.conftest import spec


async def test_settings_fill_what_a_request_leaves_unset(make_memory_server) -> None:
    client = await make_memory_server(
        training_lora_rank=8, training_lora_alpha=8.0, training_lora_dropout=0.0,
        training_lora_target_modules=["q_proj", "v_proj"], training_epochs=2, training_learning_rate=1e-3,
        training_warmup_steps=5, training_lr_schedule="COSINE", training_max_grad_norm=0.5, training_batch_size=4,
        training_gradient_accumulation_steps=2, training_max_seq_length=2048, training_packing=False,
        training_gradient_checkpointing=True, training_num_devices=4, base_protection_method="SELF_REHEARSAL",
        base_rehearsal_fraction=0.3, base_kl_weight=0.25, base_prompt_kl_weight=0.75, training_eval_fraction=0.1,
    )
    bare = pb.TrainingJobSpec(jsonl=common.JsonlDataset(path="capitals.jsonl"))
    job = (await client.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=bare, validate_only=True))).training_job
    lora, h = job.spec.lora, job.spec.hyperparameters
    assert (lora.rank, lora.alpha, lora.dropout, list(lora.target_modules)) == (8, 8.0, 0.0, ["q_proj", "v_proj"])
    assert (h.epochs, h.learning_rate, h.warmup_steps, h.batch_size, h.gradient_accumulation_steps,
            h.max_seq_length, h.packing, h.gradient_checkpointing) == (2, 1e-3, 5, 4, 2, 2048, False, True)
    assert h.num_devices == 4 and round(h.eval_fraction, 6) == 0.1 and h.max_grad_norm == 0.5
    assert h.lr_schedule == pb.LR_SCHEDULE_COSINE
    assert (job.spec.base_protection.method, round(job.spec.base_protection.fraction, 6),
            job.spec.base_protection.kl_weight) == (common.BASE_PROTECTION_METHOD_SELF_REHEARSAL, 0.3, 0.25)
    assert job.spec.base_protection.prompt_kl_weight == 0.75
    none = pb.TrainingJobSpec(jsonl=common.JsonlDataset(path="capitals.jsonl"),
                              base_protection=common.BaseProtection(method=common.BASE_PROTECTION_METHOD_NONE))
    job = (await client.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=none, validate_only=True))).training_job
    assert job.spec.base_protection.prompt_kl_weight == 0  # the default has nothing to ride on: not applied

    asked = spec(epochs=1, batch_size=2, learning_rate=5e-3, max_seq_length=128, packing=True, eval_fraction=0.0,
                 max_grad_norm=2.0, lr_schedule=pb.LR_SCHEDULE_CONSTANT)
    asked.lora.CopyFrom(common.LoraConfig(rank=4, alpha=16, dropout=0.1, target_modules=["k_proj"]))
    job = (await client.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=asked, validate_only=True))).training_job
    lora, h = job.spec.lora, job.spec.hyperparameters
    assert (lora.rank, lora.alpha, round(lora.dropout, 6), list(lora.target_modules)) == (4, 16.0, 0.1, ["k_proj"])
    assert (h.epochs, h.batch_size, h.learning_rate, h.max_seq_length, h.packing, h.max_grad_norm) == (
        1, 2, 5e-3, 128, True, 2.0)
    assert h.lr_schedule == pb.LR_SCHEDULE_CONSTANT
    assert h.eval_fraction == 0.0  # set to 0: every example trained on, whatever the server's default


async def test_an_unconfigured_server_keeps_the_built_in_values(make_memory_server) -> None:
    client = await make_memory_server()
    bare = pb.TrainingJobSpec(jsonl=common.JsonlDataset(path="capitals.jsonl"))
    h = (await client.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=bare, validate_only=True))).training_job.spec.hyperparameters
    assert (h.max_grad_norm, h.weight_decay, h.learning_rate, h.warmup_steps) == (1.0, 0.0, 2e-4, 0)
    assert h.lr_schedule == pb.LR_SCHEDULE_LINEAR


@pytest.mark.parametrize("value", ["0", "-1", "1e7", "nan"])
def test_a_training_default_out_of_range_stops_the_server(value: str) -> None:
    with pytest.raises(SettingsError, match="training_max_grad_norm"):
        load_settings({"training_max_grad_norm": value})


def test_the_built_in_base_protection_is_a_kl_term_to_the_base_model() -> None:
    """What a server applies to a job that says nothing about it (chosen by bench/base_retention.py and
    bench/base_protection_cost.py: docs/continual-learning.md)."""
    protection = load_settings({}).training_defaults.base_protection
    assert (protection.method, protection.fraction, protection.kl_weight) == (BaseProtectionMethod.BASE_KL, 0.3, 2.0)
