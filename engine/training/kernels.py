"""Fused kernels for training: Liger's Triton kernels (``liger-kernel``, the ``cuda`` extra) on a loaded model.

:func:`apply_kernels` patches one loaded model instance, on CUDA only, with the Liger kernels that leave its
outputs as they are (up to float rounding): RMSNorm, rotary embeddings (RoPE) and the SwiGLU MLP, or what
Liger has for the model's family (``MODEL_TYPE_TO_APPLY_LIGER_FN``; LayerNorm or GeGLU for some). Not Liger's
cross-entropy kernels:

* its fused linear cross-entropy replaces the model's ``forward`` with one that computes the loss from the
  hidden states without logits, from ``labels``. The recipe passes no labels: it takes logits at the target
  positions only (a boolean ``logits_to_keep``, ``engine.training.packing``) and reduces per token into
  per-example losses (example weights, KTO, EWC's Fisher). Liger's forward would return the same logits only
  where it slices them as transformers does, and it does not slice by a 2-D boolean mask;
* its plain cross-entropy is installed by replacing ``torch.nn.functional.cross_entropy`` process-wide.

Liger patches the instance's modules (their ``forward``) and also its family's modeling module
(``transformers.models.<family>.modeling_<family>``): the classes that later models are built from, and the
module-level rotary function, the only way to reach RoPE. Models built later in this process, on any device,
are left alone: the classes are put back, and the rotary function becomes a dispatcher that runs Liger's
kernel on CUDA tensors and transformers' own function on anything else (a CPU model in the same process would
otherwise hit a Triton kernel).
"""

from __future__ import annotations

import collections
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.training.models import DevicePlan

# Passed to Liger's apply function for the model's family (each takes the ones it knows).
LIGER_OPTIONS: dict[str, bool] = {
    "rope": True,
    "rms_norm": True,
    "swiglu": True,
    "cross_entropy": False,
    "fused_linear_cross_entropy": False,
}
NOT_APPLIED = "fused linear cross-entropy not applied (the recipe needs per-token losses from logits)"

_lock = threading.Lock()  # jobs load models in worker threads; the patching touches module globals


def on_cuda(kernel: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    """A function that calls ``kernel`` when its first argument is a CUDA tensor, ``original`` otherwise."""

    def dispatch(*args: Any, **kwargs: Any) -> Any:
        first = args[0] if args else next(iter(kwargs.values()), None)
        return (kernel if getattr(first, "is_cuda", False) else original)(*args, **kwargs)

    dispatch.__wrapped__ = original  # type: ignore[attr-defined]
    dispatch.liger_kernel = kernel  # type: ignore[attr-defined]
    return dispatch


def _scope_to_instance(module: Any, before: dict[str, Any]) -> list[str]:
    """Undo what Liger changed in ``module``'s globals beyond the instance: classes back, functions made
    device-aware (see the module docstring). Returns the names of the functions."""
    functions = []
    for name, value in list(vars(module).items()):
        old = before.get(name, value)
        if value is old:
            continue
        if isinstance(old, type):
            setattr(module, name, old)
        elif callable(old) and callable(value):
            original = getattr(old, "__wrapped__", old) if hasattr(old, "liger_kernel") else old
            setattr(module, name, on_cuda(value, original))
            functions.append(name)
    return functions


def apply_kernels(model: Any, plan: DevicePlan) -> str:
    """Apply Liger's output-preserving kernels to ``model`` (a transformers model, or a PEFT model around one)
    when ``plan`` is CUDA and ``liger_kernel`` imports; say what was applied, or why nothing was."""
    if plan.device != "cuda":
        return f"no fused kernels: not CUDA ({plan.device})"
    try:
        from liger_kernel.transformers import monkey_patch
    except ImportError:
        return "no fused kernels: liger-kernel not installed (the cuda extra: pip install 'learning-engine[cuda]')"
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if callable(get_base) else model
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    if model_type not in monkey_patch.MODEL_TYPE_TO_APPLY_LIGER_FN:
        return f"no fused kernels: Liger has none for model type {model_type!r}"
    family = sys.modules[type(base).__module__]
    with _lock:
        before = dict(vars(family))
        monkey_patch._apply_liger_kernel_to_instance(base, **LIGER_OPTIONS)
        functions = _scope_to_instance(family, before)
    patched = collections.Counter(
        name for name in (m._get_name() for m in base.modules()) if name.startswith("Liger"))
    parts = [f"{name} x{count}" for name, count in sorted(patched.items())] + [f"{f} (on CUDA tensors)"
                                                                               for f in functions]
    if not parts:
        return f"no fused kernels: Liger patched nothing in this {model_type} model"
    return f"Liger kernels on {model_type}: {', '.join(parts)}; {NOT_APPLIED}"
