"""A job continuing a parent adapter keeps the parent's LoRA shape: unset fields are inherited, a set one that
differs is FAILED_PRECONDITION with its field, and dropout (a training setting) may differ."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from learning.v1 import adapter_pb2 as apb
from learning.v1 import adapter_pb2_grpc as apb_grpc
from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as pb
from tests.fixtures.peft_adapters import build_peft_adapter, tar_dir
from tests.server.conftest import TINY, error_details, spec, watch_all


# These tests are about the servicers and the engine behind them, not the stores: they run over the engine on
# in-memory stores (tests/fixtures/memory_engine.py).
@pytest.fixture
async def client(memory_client):
    return memory_client

async def _import(stub: apb_grpc.AdapterServiceStub, data: bytes) -> apb.Adapter:
    async def requests():
        yield apb.ImportAdapterRequest(metadata=apb.ImportAdapterMetadata(base_model=TINY))
        yield apb.ImportAdapterRequest(chunk=data)

    return (await stub.ImportAdapter(requests())).adapter


def _continuing(parent: str, lora: common.LoraConfig | None = None) -> pb.CreateTrainingJobRequest:
    request = pb.CreateTrainingJobRequest(spec=spec(epochs=1))
    request.spec.parent_adapter_version = parent
    request.spec.ewc.disabled = True  # an imported parent has no training data to measure a Fisher on
    if lora is not None:
        request.spec.lora.CopyFrom(lora)
    return request


async def test_parent_lora_shape_is_inherited_or_must_match(client, tiny_model_dir: Path, tmp_path: Path):
    adapters = apb_grpc.AdapterServiceStub(client.channel)
    parent_dir = build_peft_adapter(tiny_model_dir, tmp_path / "rank4", rank=4, targets=("q_proj", "v_proj"))
    parent = await _import(adapters, tar_dir(parent_dir))
    assert (parent.version, parent.lora_config.rank) == ("v1.0", 4)

    for lora, fields in (
        (common.LoraConfig(rank=16), ["spec.lora.rank"]),
        (common.LoraConfig(target_modules=["q_proj", "k_proj"]), ["spec.lora.target_modules"]),
        (common.LoraConfig(rank=8, alpha=3), ["spec.lora.rank", "spec.lora.alpha"]),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.training.CreateTrainingJob(_continuing("v1.0", lora))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        info, violations = error_details(err.value)
        assert info.reason == "PARENT_LORA_MISMATCH" and info.metadata["parent"] == "v1.0"
        assert [f for f, _ in violations] == fields
        assert "leave it unset" in violations[0][1]
    listed = await client.training.ListTrainingJobs(pb.ListTrainingJobsRequest())
    assert list(listed.training_jobs) == []  # nothing was created by the refused requests

    same = common.LoraConfig(rank=4, alpha=8, target_modules=["v_proj", "q_proj"], dropout=0.2)
    job = (await client.training.CreateTrainingJob(_continuing("v1.0", same))).training_job
    assert job.spec.lora.dropout == pytest.approx(0.2)  # dropout may differ from the parent's 0.0
    inherited = (await client.training.CreateTrainingJob(_continuing("v1.0"))).training_job
    assert (inherited.spec.lora.rank, inherited.spec.lora.alpha) == (4, 8)
    assert sorted(inherited.spec.lora.target_modules) == ["q_proj", "v_proj"]
    for name in (job.name, inherited.name):
        await watch_all(client.training, name)
        done = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=name))).training_job
        assert done.state == common.JOB_STATE_SUCCEEDED, done.error
        child = (await adapters.GetAdapter(apb.GetAdapterRequest(base_model=TINY,
                                                                 version=done.output_adapter_version))).adapter
        assert child.parent_version == "v1.0" and child.lora_config.rank == 4
        assert sorted(child.lora_config.target_modules) == ["q_proj", "v_proj"]
