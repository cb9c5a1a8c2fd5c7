"""The penalty's normalisation of the Fisher: exact weights and penalties on small tensors; raw F untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.continual.ewc import DEFAULT_PENALTY_NORMALIZATION, EwcPenalty, PenaltyNormalization, normalise_fisher
from engine.continual.fisher import trainable_parameters

# 6 entries summing to 12: mean 2.
FISHER = {"a.weight": torch.tensor([[1.0, 0.0], [2.0, 5.0]]), "b.weight": torch.tensor([[4.0, 0.0]])}


class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 2, bias=False)
        self.b = nn.Linear(2, 1, bias=False)


def test_the_service_default_is_mean_normalisation():
    assert DEFAULT_PENALTY_NORMALIZATION is PenaltyNormalization.MEAN


def test_mean_normalisation_divides_every_entry_by_the_global_mean():
    weights = normalise_fisher(FISHER, "mean")
    assert torch.equal(weights["a.weight"], torch.tensor([[0.5, 0.0], [1.0, 2.5]]))
    assert torch.equal(weights["b.weight"], torch.tensor([[2.0, 0.0]]))
    flat = torch.cat([w.reshape(-1) for w in weights.values()])
    assert float(flat.mean()) == pytest.approx(1.0)


def test_mean_normalisation_is_invariant_to_the_fishers_scale():
    tiny = {n: t * 1e-9 for n, t in FISHER.items()}
    for name, weight in normalise_fisher(tiny, PenaltyNormalization.MEAN).items():
        assert torch.allclose(weight, normalise_fisher(FISHER, "mean")[name], rtol=1e-6)


def test_raw_keeps_the_fisher_and_zero_fisher_gives_zero_weights():
    assert all(torch.equal(w, FISHER[n]) for n, w in normalise_fisher(FISHER, "raw").items())
    zeros = normalise_fisher({n: torch.zeros_like(t) for n, t in FISHER.items()}, "mean")
    assert all(not w.any() for w in zeros.values())
    with pytest.raises(ValueError):
        normalise_fisher(FISHER, "max")


def test_mean_normalised_penalty_matches_a_hand_computation_and_keeps_the_raw_fisher():
    model = TwoLayers()
    with torch.no_grad():
        model.a.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        model.b.weight.copy_(torch.tensor([[0.5, -1.0]]))
    anchor = {"a.weight": torch.ones(2, 2), "b.weight": torch.zeros(1, 2)}
    raw = {n: t.clone() for n, t in FISHER.items()}
    penalty = EwcPenalty(raw, anchor, ewc_lambda=2.0)
    assert penalty.normalization is PenaltyNormalization.MEAN
    # drift^2: a [[0, 1], [4, 9]], b [[0.25, 1]]; weights a [[0.5, 0], [1, 2.5]], b [[2, 0]]
    # sum w d^2 = 0 + 0 + 4 + 22.5 + 0.5 + 0 = 27 ; (lambda/2) * 27 = 27
    value = penalty(model)
    assert float(value.detach()) == pytest.approx(27.0)
    value.backward()  # d/dtheta = lambda * w * drift
    assert torch.allclose(model.a.weight.grad, 2.0 * torch.tensor([[0.0, 0.0], [2.0, 7.5]]))
    assert torch.allclose(model.b.weight.grad, 2.0 * torch.tensor([[1.0, 0.0]]))
    assert all(torch.equal(raw[n], FISHER[n]) for n in FISHER) and penalty.raw_fisher is raw
    # the same penalty with raw F: sum F d^2 = 0 + 0 + 8 + 45 + 1 + 0 = 54
    model.zero_grad()
    assert float(EwcPenalty(raw, anchor, 2.0, "raw")(model)) == pytest.approx(54.0)


def test_uniform_fisher_under_mean_normalisation_is_a_plain_l2_anchor():
    model = TwoLayers()
    anchor = {n: torch.zeros_like(p) for n, p in trainable_parameters(model).items()}
    uniform = {n: torch.full_like(p, 3e-7) for n, p in trainable_parameters(model).items()}
    squared_norm = sum(float((p.detach() ** 2).sum()) for p in model.parameters())
    assert float(EwcPenalty(uniform, anchor, 0.5)(model)) == pytest.approx(0.25 * squared_norm, rel=1e-5)
