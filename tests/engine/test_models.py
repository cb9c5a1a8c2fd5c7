from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from engine.domain import LoraSpec
from engine.errors import FailedPrecondition, InvalidArgument
from engine.registry.peft_checks import module_names, validate_lora
from engine.training import models
from engine.training.models import device_count, resolve_base_model, select_device
from engine.training.spec import Precision

LLAMA_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})


def test_select_device_follows_the_machine() -> None:
    plan = select_device(Precision.AUTO)
    if torch.cuda.is_available():  # a CUDA host: the GPU, in bf16 where it has it
        bf16 = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else None
        assert (plan.device, plan.autocast_dtype) == ("cuda", bf16)
    else:
        assert (plan.device, plan.autocast_dtype) == ("cpu", None)
    assert select_device(Precision.FP32).autocast_dtype is None
    assert select_device(Precision.FP32).device == plan.device


def test_select_device_bf16_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU branch, on any machine
    monkeypatch.setattr(models, "cpu_supports_bf16", lambda: True)
    assert select_device(Precision.BF16).autocast_dtype == torch.bfloat16
    monkeypatch.setattr(models, "cpu_supports_bf16", lambda: False)
    with pytest.raises(FailedPrecondition) as info:
        select_device(Precision.BF16)
    assert info.value.reason == "BF16_UNSUPPORTED"


def fake_gpu(monkeypatch: pytest.MonkeyPatch, name: str, major: int) -> None:
    """A CUDA host with one GPU of compute capability ``major``.x, seen through torch's own is_bf16_supported."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: name)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: SimpleNamespace(major=major, minor=5))
    # as on a 7.x GPU: a bf16 tensor can be made there (emulated), so torch's default calls bf16 supported
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)


@pytest.mark.parametrize("name", ["Tesla T4", "Tesla V100-SXM2-16GB"])
def test_select_device_on_a_gpu_that_only_emulates_bf16(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    fake_gpu(monkeypatch, name, major=7)
    assert torch.cuda.is_bf16_supported()  # torch's default counts the emulation
    plan = select_device(Precision.AUTO)  # AUTO: fp32 on the GPU, not emulated bf16
    assert (plan.device, plan.autocast_dtype) == ("cuda", None) and name in plan.description
    assert select_device(Precision.FP32).autocast_dtype is None
    with pytest.raises(FailedPrecondition) as info:
        select_device(Precision.BF16)
    assert info.value.reason == "BF16_UNSUPPORTED" and name in str(info.value)


def test_select_device_on_a_gpu_with_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpu(monkeypatch, "NVIDIA A100-SXM4-40GB", major=8)
    assert select_device(Precision.AUTO).autocast_dtype == torch.bfloat16
    assert select_device(Precision.BF16).autocast_dtype == torch.bfloat16
    assert select_device(Precision.FP32).autocast_dtype is None


def test_select_device_refuses_cuda_on_a_machine_without(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FailedPrecondition) as info:
        select_device(Precision.AUTO, require_cuda=True)
    assert info.value.reason == "CUDA_UNAVAILABLE"


def test_device_count_refuses_more_devices_than_the_machine_has() -> None:
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    wanted = max(2, available + 1)
    with pytest.raises(FailedPrecondition) as info:
        device_count(wanted)
    assert info.value.reason == "NOT_ENOUGH_DEVICES"
    assert info.value.metadata == {"requested": str(wanted), "available": str(available)}


def test_device_count_zero_means_every_gpu_or_one_device() -> None:
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert device_count(0) == max(available, 1)
    assert device_count(1) == 1


def test_device_count_on_a_machine_without_gpus_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_count(0) == 1
    with pytest.raises(FailedPrecondition) as info:
        device_count(2)
    assert info.value.reason == "NOT_ENOUGH_DEVICES"
    assert info.value.metadata == {"requested": "2", "available": "0"}


def test_module_names_lists_the_lora_targetable_leaves(tiny_model_dir: Path) -> None:
    names = module_names(tiny_model_dir)
    assert LLAMA_MODULES <= names
    assert "input_layernorm" not in names and "layers" not in names


def test_validate_lora_accepts_the_defaults() -> None:
    validate_lora(LoraSpec(), LLAMA_MODULES)


@pytest.mark.parametrize("rank", [0, 300])
def test_validate_lora_rejects_a_bad_rank(rank: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_lora(LoraSpec(rank=rank), LLAMA_MODULES)
    assert info.value.reason == "INVALID_LORA_CONFIG"
    assert [v.field for v in info.value.violations] == ["spec.lora.rank"]


def test_validate_lora_rejects_unknown_target_modules() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_lora(LoraSpec(target_modules=("q_proj", "c_attn")), LLAMA_MODULES)
    assert info.value.reason == "UNKNOWN_TARGET_MODULES"
    assert [v.field for v in info.value.violations] == ["spec.lora.target_modules"]
    assert "c_attn" in info.value.violations[0].description


def test_validate_lora_reports_all_problems_together() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_lora(LoraSpec(rank=0, alpha=0, dropout=1.0, target_modules=("nope",)), LLAMA_MODULES)
    assert info.value.reason == "INVALID_LORA_CONFIG"
    assert [v.field for v in info.value.violations] == [
        "spec.lora.rank",
        "spec.lora.alpha",
        "spec.lora.dropout",
        "spec.lora.target_modules",
    ]


def test_resolve_base_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    configured = {"tiny": tiny_model_dir}
    assert resolve_base_model("tiny", models=configured, cache_dir=tmp_path) == tiny_model_dir
    with pytest.raises(InvalidArgument) as info:
        resolve_base_model("gpt-9", models=configured, cache_dir=tmp_path)
    assert info.value.reason == "UNKNOWN_BASE_MODEL"
    assert info.value.violations[0].field == "spec.base_model"
    with pytest.raises(FailedPrecondition):
        resolve_base_model("broken", models={"broken": tmp_path / "nothing"}, cache_dir=tmp_path)


def test_smollm2_gguf_path_finds_the_packaged_file() -> None:
    path = models.smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
