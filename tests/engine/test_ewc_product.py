"""EWC on the LoRA product D = B @ A: per-sample gradients of D against autograd, batching independence, and
the penalty against a hand computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.ewc_product import ProductEwcPenalty, per_sample_product_grads, product_fisher
from engine.fisher import FisherEstimator, LinearTaps, completion_nll, trainable_parameters


def test_per_sample_product_gradient_gives_autograds_lora_gradients(lora_model):
    """dL/dA = B^T dL/dD and dL/dB = dL/dD A^T, sample by sample."""
    model, data, pad = lora_model
    params = trainable_parameters(model)
    taps = LinearTaps(model)
    try:
        grads = dict(per_sample_product_grads(model, taps, data, pad))
    finally:
        taps.close()
    assert len(grads) == 2 * 4  # 2 layers x q/k/v/o
    for n, example in enumerate(data):
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            completion_nll(model, [example], [0], pad, FisherEstimator.EMPIRICAL, "cpu").sum().backward()
        for prefix, g in grads.items():
            a, b = params[f"{prefix}.lora_A.weight"], params[f"{prefix}.lora_B.weight"]
            for mine, autograds in ((b.detach().T @ g[n], a.grad), (g[n] @ a.detach().T, b.grad)):
                scale = float(autograds.abs().max())  # float32 sums in another order: relative to the tensor
                assert scale > 0 and float((mine - autograds).abs().max()) <= 1e-4 * scale
    model.zero_grad(set_to_none=True)


def test_product_fisher_does_not_depend_on_batching(lora_model):
    model, data, pad = lora_model
    one, four = product_fisher(model, data, batch_size=1, pad_id=pad), product_fisher(model, data, batch_size=4,
                                                                                       pad_id=pad)
    assert set(one) == set(four) and all(float(t.sum()) > 0 for t in one.values())
    for prefix in one:
        torch.testing.assert_close(one[prefix], four[prefix], rtol=1e-4, atol=1e-9)


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
