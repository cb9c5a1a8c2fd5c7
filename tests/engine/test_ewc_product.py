"""EWC on the LoRA product D = B @ A: per-sample gradients of D against autograd, batching independence, and
the penalty against a hand computation; and either penalty (entries or products) bound to each model it is called
with."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.continual.ewc_product import CHUNK_ELEMENTS, ProductEwcPenalty, WeightedProductDrift
from engine.continual.fisher import (
    FisherEstimator,
    FisherSpace,
    LinearTaps,
    completion_nll,
    compute_fisher,
    trainable_parameters,
)
from engine.errors import FailedPrecondition
from engine.training.models import select_device
from engine.training.spec import Precision

DEVICE = select_device(Precision.FP32).device  # where the lora_model fixture put the model


def test_per_sample_product_gradient_gives_autograds_lora_gradients(lora_model):
    """dL/dA = B^T dL/dD and dL/dB = dL/dD A^T, sample by sample."""
    model, data, pad = lora_model
    params = trainable_parameters(model)
    taps = LinearTaps(model)
    try:
        with torch.enable_grad():
            nll = completion_nll(model, data, [0] * len(data), pad, FisherEstimator.EMPIRICAL, DEVICE)
            grads = dict(taps.per_sample_product_grads(nll))
    finally:
        taps.close()
    assert len(grads) == 2 * 4  # 2 layers x q/k/v/o
    for n, example in enumerate(data):
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            completion_nll(model, [example], [0], pad, FisherEstimator.EMPIRICAL, DEVICE).sum().backward()
        for prefix, g in grads.items():
            a, b = params[f"{prefix}.lora_A.weight"], params[f"{prefix}.lora_B.weight"]
            for mine, autograds in ((b.detach().T @ g[n], a.grad), (g[n] @ a.detach().T, b.grad)):
                scale = float(autograds.abs().max())  # float32 sums in another order: relative to the tensor
                assert scale > 0 and float((mine - autograds).abs().max()) <= 1e-4 * scale
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("estimator", [FisherEstimator.EMPIRICAL, FisherEstimator.SAMPLED])
def test_product_fisher_is_the_mean_squared_per_sample_product_gradient(lora_model, estimator):
    """compute_fisher in the product space against one sample at a time, and independent of batching."""
    model, data, pad = lora_model
    result = compute_fisher(model, data, estimator=estimator, space=FisherSpace.LORA_PRODUCT, batch_size=4,
                            pad_id=pad, seed=3)
    assert result.space is FisherSpace.LORA_PRODUCT and result.sample_count == len(data)
    taps, expected = LinearTaps(model), {}
    try:
        for i, example in enumerate(data):
            with torch.enable_grad():
                nll = completion_nll(model, [example], [3 * 1_000_003 + i], pad, estimator, DEVICE)
                for prefix, g in taps.per_sample_product_grads(nll):
                    expected[prefix] = expected.get(prefix, 0) + g[0].square() / len(data)
    finally:
        taps.close()
    params = trainable_parameters(model)
    assert set(result.diagonal) == set(expected) and len(expected) == 8
    for prefix, fisher in result.diagonal.items():
        b, a = params[f"{prefix}.lora_B.weight"], params[f"{prefix}.lora_A.weight"]
        assert fisher.shape == (b.shape[0], a.shape[1]) and float(fisher.sum()) > 0
        # compute_fisher returns CPU tensors, the taps' gradients are on the model's device: compare on the CPU
        torch.testing.assert_close(fisher.cpu(), expected[prefix].cpu(), rtol=1e-4, atol=1e-9)


def test_product_penalty_refuses_a_fisher_of_another_shape(lora_model):
    model, _, _ = lora_model
    anchor = {n: p.detach().clone() for n, p in trainable_parameters(model).items()}
    entries = {n: torch.ones_like(t) for n, t in anchor.items()}  # a LORA_PARAMETERS diagonal
    with pytest.raises(FailedPrecondition) as caught:
        ProductEwcPenalty(entries, anchor, ewc_lambda=1.0)
    assert caught.value.reason == "FISHER_SHAPE_MISMATCH"


def test_product_penalty_by_hand():
    holder = nn.Module()
    holder.lin = nn.Module()
    a = nn.Parameter(torch.tensor([[1.0, 2.0]]))  # r = 1, in = 2
    b = nn.Parameter(torch.tensor([[3.0], [-1.0]]))  # out = 2
    holder.lin.register_parameter("a", a)
    holder.lin.register_parameter("b", b)
    names = {"lin.a": "m.lora_A.weight", "lin.b": "m.lora_B.weight"}

    class Renamed(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = holder

        def named_parameters(self, *args, **kwargs):
            for name, p in holder.named_parameters():
                yield names[name], p

    anchor = {"m.lora_A.weight": torch.tensor([[1.0, 0.0]]), "m.lora_B.weight": torch.tensor([[1.0], [1.0]])}
    fisher = {"m": torch.tensor([[1.0, 3.0], [2.0, 2.0]])}  # mean 2 -> weights F / 2
    penalty = ProductEwcPenalty(fisher, anchor, ewc_lambda=4.0)(Renamed())
    d = torch.tensor([[3.0, 6.0], [-1.0, -2.0]])  # B @ A
    d_star = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    expected = 0.5 * 4.0 * float(((fisher["m"] / 2.0) * (d - d_star) ** 2).sum())
    assert float(penalty.detach()) == pytest.approx(expected)
    penalty.backward()
    assert a.grad is not None and b.grad is not None


@pytest.mark.parametrize(("shape", "chunks"), [((3, 5, 2, 4), 1), ((5, 600, 4, 1000), 5), ((7, 200, 4, 1000), 4)])
def test_the_fused_product_drift_has_autograds_gradients(shape, chunks):
    n, out, r, inner = shape
    per_chunk = max(1, CHUNK_ELEMENTS // (out * inner))
    assert -(-n // per_chunk) == chunks  # one chunk; one pair per chunk; 2, 2, 2 and 1 pairs
    generator = torch.Generator().manual_seed(0)
    b, a = (torch.randn(s, generator=generator, dtype=torch.float64, requires_grad=True)
            for s in ((n, out, r), (n, r, inner)))
    w, anchor = torch.rand(n, out, inner, generator=generator, dtype=torch.float64), \
        torch.randn(n, out, inner, generator=generator, dtype=torch.float64)
    fused = WeightedProductDrift.apply(b, a, w, anchor, 0.35)  # the penalty passes lambda / 2 as the scale
    plain = 0.35 * (w * (torch.bmm(b, a) - anchor).square()).sum()
    assert float(fused) == pytest.approx(float(plain), rel=1e-12)
    expected = torch.autograd.grad(plain, (b, a))
    for mine, reference in zip(torch.autograd.grad(fused, (b, a)), expected, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-10, atol=1e-10)


class _Pair(nn.Module):
    """One LoRA pair under its canonical names, m.lora_A.weight [1, 2] and m.lora_B.weight [2, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.m = nn.Module()
        self.m.lora_A = nn.Linear(2, 1, bias=False)
        self.m.lora_B = nn.Linear(1, 2, bias=False)


@pytest.mark.parametrize("space", ["entries", "products"])
def test_a_penalty_holds_each_model_it_is_called_with_even_one_where_a_freed_model_was(space):
    """A penalty binds to a model's parameters on the first call; called with another model, it binds to that
    one. A model made after another is freed often takes its address (its id()), so twenty models in turn
    would mostly find the penalty still bound to a freed one, their own parameters without its gradient."""
    from engine.continual.ewc import EwcPenalty

    zeros = {n: torch.zeros_like(p) for n, p in trainable_parameters(_Pair()).items()}
    if space == "entries":
        penalty = EwcPenalty({n: torch.ones_like(t) for n, t in zeros.items()}, zeros, ewc_lambda=1.0)
    else:
        penalty = ProductEwcPenalty({"m": torch.ones(2, 2)}, zeros, ewc_lambda=1.0)
    for _ in range(20):
        model = _Pair()
        penalty(model).backward()
        assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.parameters())
        del model
