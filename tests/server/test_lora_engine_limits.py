"""A training job or an import the serving engine cannot load is refused when it is asked for, not at activation.

MAX Serve 26.7 (the image docker-compose.yaml pins, started with --max-lora-rank=16) refuses a rank above its
--max-lora-rank (max/pipelines/lora/lora.py:671-674; vLLM likewise, PEFTHelper.validate_legal) and LoRA on any module
but q_proj, k_proj, v_proj and o_proj (lora.py:342-373). The servers here run in the default serving mode, max,
against the reference backend; serving_max_lora_rank is the engine's --max-lora-rank.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError

from engine.domain import LoraSpec
from engine.errors import InvalidArgument
from engine.registry import adapter_registry, peft_checks
from engine.registry.peft_checks import MAX_SERVE_TARGET_MODULES, ServingLimits
from learning.v1 import adapter_pb2 as pb
from learning.v1 import adapter_pb2_grpc as pb_grpc
from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as tpb
from server.settings import Settings
from tests.fixtures.peft_adapters import build_peft_adapter, tar_dir
from tests.server.conftest import error_details, spec
from tests.server.test_adapter_service import import_archive


async def _create_fails(client, lora: common.LoraConfig) -> grpc.aio.AioRpcError:
    request = tpb.CreateTrainingJobRequest(spec=spec(epochs=1))
    request.spec.lora.CopyFrom(lora)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.training.CreateTrainingJob(request)
    listed = await client.training.ListTrainingJobs(tpb.ListTrainingJobsRequest())
    assert list(listed.training_jobs) == [], "a refused request left a job behind"
    return err.value


async def test_a_job_above_the_engines_max_lora_rank_is_refused(make_server):
    client = await make_server()
    err = await _create_fails(client, common.LoraConfig(rank=32, alpha=64))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = error_details(err)
    assert info.reason == "LORA_NOT_SERVABLE"
    assert [f for f, _ in violations] == ["spec.lora.rank"]
    assert "16" in violations[0][1] and "serving_max_lora_rank" in violations[0][1]


async def test_max_mode_refuses_a_job_on_modules_max_cannot_load(make_server):
    client = await make_server()
    err = await _create_fails(client, common.LoraConfig(target_modules=["q_proj", "gate_proj", "down_proj"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = error_details(err)
    assert info.reason == "LORA_NOT_SERVABLE"
    assert [f for f, _ in violations] == ["spec.lora.target_modules"]
    description = violations[0][1]
    assert "gate_proj, down_proj" in description and "k_proj, o_proj, q_proj, v_proj" in description


async def test_imports_the_engine_cannot_load_are_refused(make_server, tiny_model_dir: Path, tmp_path: Path):
    client = await make_server()
    stub = pb_grpc.AdapterServiceStub(client.channel)
    cases = [
        (build_peft_adapter(tiny_model_dir, tmp_path / "mlp", targets=("q_proj", "gate_proj", "down_proj")),
         "adapter_config.json.target_modules"),
        (build_peft_adapter(tiny_model_dir, tmp_path / "r32", rank=32), "adapter_config.json.r"),
    ]
    for folder, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await import_archive(stub, tar_dir(folder))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info, violations = error_details(err.value)
        assert (info.reason, [f for f, _ in violations]) == ("LORA_NOT_SERVABLE", [field])
    listed = await stub.ListAdapters(pb.ListAdaptersRequest())
    assert list(listed.adapters) == []


async def test_serving_max_lora_rank_is_the_engines_limit(make_server, tiny_model_dir: Path, tmp_path: Path):
    client = await make_server(serving_max_lora_rank=32, serving_mode="vllm")
    stub = pb_grpc.AdapterServiceStub(client.channel)
    adapter = await import_archive(stub, tar_dir(build_peft_adapter(
        tiny_model_dir, tmp_path / "r32", rank=32, targets=("q_proj", "gate_proj"))))
    assert adapter.lora_config.rank == 32 and sorted(adapter.lora_config.target_modules) == ["gate_proj", "q_proj"]


def test_the_settings_keep_the_engines_limits(tmp_path: Path):
    assert Settings(data_dir=tmp_path).serving_limits == ServingLimits(16, MAX_SERVE_TARGET_MODULES, "MAX Serve")
    assert Settings(data_dir=tmp_path, serving_mode="vllm", serving_max_lora_rank=64).serving_limits.target_modules \
        is None
    with pytest.raises(ValidationError, match="serving_max_lora_rank"):
        Settings(data_dir=tmp_path, serving_max_lora_rank=257)
    with pytest.raises(ValidationError, match="training_lora_rank 32 is above serving_max_lora_rank 16"):
        Settings(data_dir=tmp_path, training_lora_rank=32)
    with pytest.raises(ValidationError, match="training_lora_target_modules names up_proj"):
        Settings(data_dir=tmp_path, training_lora_target_modules=("q_proj", "up_proj"))
    Settings(data_dir=tmp_path, serving_mode="vllm", training_lora_target_modules=("q_proj", "up_proj"))


def test_validate_lora_checks_the_engines_limits(tiny_model_dir: Path):
    available = peft_checks.module_names(tiny_model_dir)
    limits = ServingLimits.for_engine("max", 16)
    peft_checks.validate_lora(LoraSpec(rank=32, alpha=64.0), available)  # no engine: the model's limits only
    with pytest.raises(InvalidArgument) as err:
        peft_checks.validate_lora(LoraSpec(rank=32, alpha=64.0, target_modules=("q_proj", "up_proj")), available,
                                  "pipeline.training", limits)
    assert err.value.reason == "LORA_NOT_SERVABLE"
    assert [v.field for v in err.value.violations] == ["pipeline.training.lora.rank",
                                                        "pipeline.training.lora.target_modules"]
    with pytest.raises(InvalidArgument) as err:  # what the model cannot have comes first
        peft_checks.validate_lora(LoraSpec(rank=32, target_modules=("nope",)), available, limits=limits)
    assert err.value.reason == "UNKNOWN_TARGET_MODULES"


def test_the_import_check_names_the_adapter_config(tiny_model_dir: Path, tmp_path: Path):
    adapter = build_peft_adapter(tiny_model_dir, tmp_path / "mlp", rank=32, targets=("q_proj", "gate_proj"))
    adapter_registry._validate_peft_dir(adapter, tiny_model_dir)  # no engine limits: the model's only
    with pytest.raises(InvalidArgument) as err:
        adapter_registry._validate_peft_dir(adapter, tiny_model_dir, ServingLimits.for_engine("max", 16))
    assert err.value.reason == "LORA_NOT_SERVABLE"
    assert [v.field for v in err.value.violations] == ["adapter_config.json.r", "adapter_config.json.target_modules"]
