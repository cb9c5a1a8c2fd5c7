"""EWC on each LoRA pair's product D = B @ A instead of on the entries of A and B (experimental).

The model's output depends on A and B only through D (the layer adds ``scaling * D x``), and a diagonal
penalty on the entries of A and B does not see that coupling: many small moves of entries, each cheap
under the entry-wise penalty, add up in D. This variant measures the diagonal empirical Fisher of D and
penalises ``(lambda / 2) * sum w (D - D*)^2`` with ``w = F_D / mean(F_D)`` (the same mean normalisation as
``engine.ewc``). Used by ``bench/forgetting.py --penalty-space product`` to test that explanation of EWC's
weak protection; the service's jobs use ``engine.ewc.EwcPenalty``.

Per-sample gradient of D, in closed form like ``engine.fisher``: the lora_B module's output is ``D x``, so
``dL_n/dD = sum_t dL_n/d(lora_B out)[t] (x) x[t]`` with ``x`` the lora_A module's input.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from engine.datasets import EncodedExample
from engine.errors import FailedPrecondition
from engine.ewc import DEFAULT_PENALTY_NORMALIZATION, normalise_fisher
from engine.fisher import (
    Diagonal,
    FisherEstimator,
    LinearTaps,
    Tap,
    completion_nll,
    trainable_parameters,
    usable_samples,
)


def _pair_prefix(name: str) -> tuple[str, str]:
    """("...q_proj", "A" or "B") of a canonical LoRA weight name, e.g. "...q_proj.lora_A.weight"."""
    for side in ("A", "B"):
        marker = f".lora_{side}.weight"
        if name.endswith(marker):
            return name[: -len(marker)], side
    raise FailedPrecondition("UNSUPPORTED_TRAINABLE_LAYER", f"{name} is not a LoRA A or B weight")


def _pairs(taps: LinearTaps) -> dict[str, dict[str, Tap]]:
    sides: dict[str, dict[str, Tap]] = {}
    for tap in taps.taps:
        prefix, side = _pair_prefix(tap.weight)
        sides.setdefault(prefix, {})[side] = tap
    return sides


def per_sample_product_grads(
    model: nn.Module, taps: LinearTaps, chunk: Sequence[EncodedExample], pad_id: int
) -> Iterator[tuple[str, torch.Tensor]]:
    """(module prefix, [n, out, in] gradient of each sample's NLL with respect to its LoRA product D)."""
    device = next(model.parameters()).device.type
    sides = _pairs(taps)
    prefixes = list(sides)
    with torch.enable_grad():
        nll = completion_nll(model, chunk, [0] * len(chunk), pad_id, FisherEstimator.EMPIRICAL, device)
        grads = torch.autograd.grad(nll.sum(), [sides[p]["B"].output for p in prefixes], allow_unused=True)
    for prefix, grad in zip(prefixes, grads, strict=True):
        a_tap = sides[prefix]["A"]
        x = a_tap.inputs.detach().reshape(len(chunk), -1, a_tap.inputs.shape[-1]).float()
        g = grad.reshape(len(chunk), -1, grad.shape[-1]).float()
        yield prefix, torch.einsum("bto,bti->boi", g, x)
    for tap in taps.taps:
        tap.inputs = tap.output = None


def product_fisher(model: nn.Module, data: Sequence[EncodedExample], *, batch_size: int = 8,
                   pad_id: int = 0) -> Diagonal:
    """Diagonal empirical Fisher of every LoRA product D (keyed by module prefix), per-sequence NLL."""
    indices = sorted(usable_samples(data), key=lambda i: len(data[i].input_ids))  # by length: less padding
    model.eval()
    taps = LinearTaps(model)
    total: Diagonal = {}
    try:
        for start in range(0, len(indices), batch_size):
            chunk = [data[i] for i in indices[start : start + batch_size]]
            for prefix, grads in per_sample_product_grads(model, taps, chunk, pad_id):
                squares = grads.square().sum(dim=0)
                total[prefix] = total[prefix] + squares if prefix in total else squares
    finally:
        taps.close()
    return {p: (t / len(indices)).cpu() for p, t in total.items()}


class ProductEwcPenalty:
    """``engine.training.Penalty``: (lambda/2) * sum_D w (B @ A - D*)^2 over the LoRA pairs."""

    def __init__(self, fisher: Diagonal, anchor: Diagonal, ewc_lambda: float) -> None:
        self.weights = normalise_fisher(fisher, DEFAULT_PENALTY_NORMALIZATION)
        self.anchor = {p: anchor[f"{p}.lora_B.weight"].float() @ anchor[f"{p}.lora_A.weight"].float()
                       for p in self.weights}
        self.ewc_lambda = float(ewc_lambda)

    def weighted_sum(self, weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """sum_D w (B @ A - D*)^2 over LoRA tensors by canonical name (live parameters or a saved adapter)."""
        total = None
        for prefix, w in self.weights.items():
            b, a = weights[f"{prefix}.lora_B.weight"], weights[f"{prefix}.lora_A.weight"]
            w, anchor = w.to(a.device), self.anchor[prefix].to(a.device)
            term = (w * (b.float() @ a.float() - anchor).square()).sum()
            total = term if total is None else total + term
        return total

    def __call__(self, model: nn.Module) -> torch.Tensor:
        return 0.5 * self.ewc_lambda * self.weighted_sum(trainable_parameters(model))
