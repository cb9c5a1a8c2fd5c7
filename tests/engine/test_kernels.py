"""engine.training.kernels: Liger's kernels on CUDA only, and only those that keep the model's outputs.

Every test here passes on a CPU host and on a CUDA host, with or without liger-kernel installed:
``test_on_this_device`` checks whichever of the three cases the host is.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from engine.training import kernels
from engine.training.kernels import apply_kernels, on_cuda
from engine.training.models import DevicePlan, load_base_model, select_device
from engine.training.spec import Precision, Quantization

CPU = DevicePlan("cpu", None, "cpu, fp32")


def liger_modules(model: torch.nn.Module) -> list[str]:
    return [m._get_name() for m in model.modules() if m._get_name().startswith("Liger")]


def test_nothing_off_cuda(tiny_model_dir: Path) -> None:
    model, _ = load_base_model(tiny_model_dir, plan=CPU, quantization=Quantization.NONE)
    assert apply_kernels(model, CPU) == "no fused kernels: not CUDA (cpu)"
    assert liger_modules(model) == []
    assert not any("forward" in vars(m) for m in model.modules())  # no instance's forward replaced


def test_cuda_without_liger(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA with liger-kernel missing (here: made unimportable) it says so and leaves the model alone."""
    model, _ = load_base_model(tiny_model_dir, plan=CPU, quantization=Quantization.NONE)
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # `import liger_kernel...` raises ImportError
    said = apply_kernels(model, DevicePlan("cuda", None, "cuda:0 (not used), fp32"))
    assert said.startswith("no fused kernels: liger-kernel not installed")
    assert liger_modules(model) == []


def test_on_cuda_dispatches_by_the_tensors_device() -> None:
    def original(q: object, *rest: object) -> str:
        return "original"

    def kernel(q: object, *rest: object) -> str:
        return "kernel"

    both = on_cuda(kernel, original)
    assert both(torch.zeros(2), torch.zeros(2)) == "original"
    assert both(q=torch.zeros(2)) == "original"
    assert both(types.SimpleNamespace(is_cuda=True), None) == "kernel"


def test_liger_is_kept_to_the_instance() -> None:
    """What Liger changes in a family's modeling module: classes are put back, functions become device-aware;
    patching twice does not nest the dispatchers."""
    family = types.ModuleType("fake_modeling")

    class Norm:
        pass

    class LigerNorm:
        pass

    def rotary(q: object) -> str:
        return "transformers"

    def liger_rotary(q: object) -> str:
        return "liger"

    family.Norm, family.rotary = Norm, rotary  # type: ignore[attr-defined]
    for _ in range(2):  # a second model loaded later in the same process
        before = dict(vars(family))
        family.Norm, family.rotary = LigerNorm, liger_rotary  # type: ignore[attr-defined]  # what Liger does
        assert kernels._scope_to_instance(family, before) == ["rotary"]
        assert family.Norm is Norm  # type: ignore[attr-defined]
        assert family.rotary(torch.zeros(1)) == "transformers"  # type: ignore[attr-defined]
        assert family.rotary(types.SimpleNamespace(is_cuda=True)) == "liger"  # type: ignore[attr-defined]
        assert family.rotary.__wrapped__ is rotary  # type: ignore[attr-defined]


def test_on_this_device(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU: nothing. CUDA without liger-kernel: nothing, and says so. CUDA with it: the norms and MLPs are
    Liger's, and a forward over a packed row (position ids restarting) gives the same logits."""
    plan = select_device(Precision.FP32)
    model, _ = load_base_model(tiny_model_dir, plan=plan, quantization=Quantization.NONE)
    if plan.device != "cuda":
        assert apply_kernels(model, plan).startswith("no fused kernels: not CUDA")
        return
    if importlib.util.find_spec("liger_kernel") is None:
        assert apply_kernels(model, plan).startswith("no fused kernels: liger-kernel not installed")
        assert liger_modules(model) == []
        return
    from transformers.models.llama import modeling_llama

    # the module-level names Liger replaces are restored after the test, whatever apply_kernels leaves
    for name in ("apply_rotary_pos_emb", "LlamaRMSNorm", "LlamaMLP"):
        monkeypatch.setattr(modeling_llama, name, getattr(modeling_llama, name))
    model.eval()
    input_ids = torch.randint(0, model.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(0))
    position_ids = torch.cat([torch.arange(10), torch.arange(14)])[None]
    inputs = {"input_ids": input_ids.to("cuda"), "position_ids": position_ids.to("cuda")}
    with torch.no_grad():
        want = model(**inputs).logits
    said = apply_kernels(model, plan)
    assert said.startswith("Liger kernels on llama"), said
    layers = model.config.num_hidden_layers
    assert sorted(set(liger_modules(model))) == ["LigerRMSNorm", "LigerSwiGLUMLP"]
    assert liger_modules(model).count("LigerRMSNorm") == 2 * layers + 1
    assert modeling_llama.LlamaRMSNorm.__name__ == "LlamaRMSNorm"  # later models are built unpatched
    with torch.no_grad():
        got = model(**inputs).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
