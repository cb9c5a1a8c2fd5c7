"""EWC against the base model in the product space (``BaseProtectionMethod.EWC_BASE``).

The third way a job can keep what the base model knew, beside self-rehearsal and BASE_KL (engine.continual.rehearsal,
engine.training.base_kl). No rows are mixed in: the penalty ``(lambda / 2) * sum w (B @ A)^2`` over the job's LoRA
pairs (engine.continual.ewc_product's, anchored at B @ A = 0, the base model's own weights) keeps each adapted
weight's change small where the base model's diagonal Fisher ``w`` (mean-normalised) says its answers depend on it.
On the entries of A and B the base model's Fisher carries no signal (at B = 0 the gradient of A is 0); of the product
D = B @ A it is the adapted weight's own. It is measured on the base model's answers to the shipped general questions
(self-rehearsal's), with every B set to 0 for the measurement so that the model is the base model whatever adapter
the job starts from (a continuation's parent included), and cached per base model, quantization, device, adapted
modules and encoding. In the base-retention benchmark it kept less than BASE_KL, at almost no cost per step
(docs/continual-learning.md); it is there to be chosen, not the default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.continual.base_knowledge import base_key, plan_parts
from engine.continual.ewc_product import ProductEwcPenalty
from engine.continual.fisher import space_shapes, trainable_parameters
from engine.continual.fisher_run import FisherRun, measure_model
from engine.continual.rehearsal import SelfRehearsal
from engine.continual.spec import FisherEstimator
from engine.domain import FisherSpace
from engine.jobs.ports import CancelToken
from engine.training.models import DevicePlan
from engine.training.tensor_cache import load_tensors, save_tensors


@contextlib.contextmanager
def lora_b_zeroed(model: nn.Module) -> Iterator[None]:
    """The model with every LoRA B at 0 (its adapters add nothing: the base model), restored on the way out."""
    params = {n: p for n, p in trainable_parameters(model).items() if ".lora_B." in n}
    saved = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():
        for p in params.values():
            p.zero_()
    try:
        yield
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])


class BaseEwc:
    """The EWC_BASE penalty of a job's model (see the module docstring)."""

    def __init__(self, cache_dir: Path, rehearsal: SelfRehearsal) -> None:
        self._cache_dir = cache_dir
        self._rehearsal = rehearsal

    def penalty(self, ewc_lambda: float, *, model: Any, tokenizer: Any, plan: DevicePlan, base_model_dir: Path,
                quantization: str, max_seq_length: int, cancel: CancelToken) -> tuple[ProductEwcPenalty, int]:
        """The penalty at ``ewc_lambda``, and the number of the base model's answers its Fisher was measured on."""
        pairs = self._rehearsal.pairs(model, tokenizer, plan, base_model_dir, quantization, cancel)
        params = trainable_parameters(model)
        shapes = space_shapes({n: tuple(p.shape) for n, p in params.items()}, FisherSpace.LORA_PRODUCT)
        key = base_key(base_model_dir, quantization, "product-fisher", *plan_parts(plan), max_seq_length,
                       sorted((n, list(s)) for n, s in shapes.items()),
                       [[(m.role, m.content) for m in e.messages] for e in pairs])
        path = self._cache_dir / f"base-fisher-{key[:32]}.safetensors"
        fisher = load_tensors(path, key)
        if fisher is None or {n: tuple(t.shape) for n, t in fisher.items()} != shapes:
            run = FisherRun(base_model_dir, base_model_dir, pairs, FisherEstimator.EMPIRICAL, max_seq_length,
                            space=FisherSpace.LORA_PRODUCT)
            with lora_b_zeroed(model):
                fisher = measure_model(model, tokenizer, run, cancel=cancel).diagonal
            save_tensors(path, key, fisher)
        anchor = {n: torch.zeros(p.shape) for n, p in params.items()}  # B @ A = 0: the base model's weights
        return ProductEwcPenalty(fisher, anchor, ewc_lambda), len(pairs)
