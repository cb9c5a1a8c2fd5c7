"""Fisher estimators against the naive per-sample loop, and the EWC penalty against a hand computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.continual.ewc import EwcPenalty, accumulate, diagonal_stats, mix_replay, replay_count
from engine.continual.fisher import (
    FisherEstimator,
    compute_fisher,
    max_relative_difference,
    naive_fisher,
    select_samples,
    sequence_nll,
    trainable_parameters,
)
from engine.errors import FailedPrecondition
from engine.training.datasets import collate
from engine.training.models import select_device
from engine.training.spec import Precision

DEVICE = select_device(Precision.FP32).device  # where the lora_model fixture put the model


@pytest.mark.parametrize("estimator", [FisherEstimator.EMPIRICAL, FisherEstimator.SAMPLED])
def test_vectorised_fisher_matches_the_naive_per_sample_loop(lora_model, estimator):
    model, data, pad = lora_model
    fast = compute_fisher(model, data, estimator=estimator, batch_size=4, pad_id=pad, seed=5)
    slow = naive_fisher(model, data, estimator=estimator, pad_id=pad, seed=5)
    assert fast.sample_count == slow.sample_count == len(data)
    assert set(fast.diagonal) == set(trainable_parameters(model)) == set(slow.diagonal)
    assert any("lora_A" in n for n in fast.diagonal) and any("lora_B" in n for n in fast.diagonal)
    assert max_relative_difference(fast.diagonal, slow.diagonal) < 1e-4
    assert all(float(t.sum()) > 0 for t in fast.diagonal.values())


@pytest.mark.parametrize("estimator", [FisherEstimator.EMPIRICAL, FisherEstimator.SAMPLED])
def test_completion_only_log_likelihood_equals_the_full_logits_one(lora_model, estimator):
    """The head at labelled positions only, on a batch cut after its last one, gives the same per-sample values."""
    from engine.continual.fisher import _per_sample_nll, completion_nll

    model, data, pad = lora_model
    batch, seeds = [data[i] for i in (8, 0, 4, 2)], [11, 12, 13, 14]  # mixed lengths, so padding and cutting
    with torch.no_grad():
        full = _per_sample_nll(model, batch, seeds, pad, estimator, DEVICE)
        only = completion_nll(model, batch, seeds, pad, estimator, DEVICE)
    assert torch.allclose(only, full, rtol=1e-5, atol=1e-5)


def test_sampled_labels_differ_from_the_observed_ones_and_do_not_depend_on_batching(lora_model):
    model, data, pad = lora_model
    sampled = compute_fisher(model, data, estimator=FisherEstimator.SAMPLED, batch_size=3, pad_id=pad, seed=1)
    again = compute_fisher(model, data, estimator=FisherEstimator.SAMPLED, batch_size=9, pad_id=pad, seed=1)
    empirical = compute_fisher(model, data, batch_size=9, pad_id=pad)
    assert max_relative_difference(sampled.diagonal, again.diagonal) < 1e-5
    assert max_relative_difference(sampled.diagonal, empirical.diagonal) > 1e-2


def test_batch_mean_squared_is_its_own_estimator_and_is_smaller(lora_model):
    model, data, pad = lora_model
    exact = compute_fisher(model, data, batch_size=3, pad_id=pad)
    per_sample = compute_fisher(model, data, estimator=FisherEstimator.BATCH_MEAN_SQUARED, batch_size=1, pad_id=pad)
    batched = compute_fisher(model, data, estimator=FisherEstimator.BATCH_MEAN_SQUARED, batch_size=9, pad_id=pad)
    # With one sample per batch the squared batch mean IS the per-sample square.
    assert max_relative_difference(per_sample.diagonal, exact.diagonal) < 1e-5
    ratio = sum(float(t.sum()) for t in batched.diagonal.values()) / sum(
        float(t.sum()) for t in exact.diagonal.values())
    assert ratio < 0.5, f"the batch-mean square should be far smaller than the exact Fisher, got {ratio:.2f}"


def test_sequence_nll_sums_the_completion_tokens(lora_model):
    model, data, pad = lora_model
    batch = collate(data[:3], pad)
    device = next(model.parameters()).device  # the fixture's model is on the plan's device (a GPU where there is one)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)).logits
    got = sequence_nll(logits, batch.labels.to(device)).cpu()
    logits = logits.cpu()
    for row in range(3):
        logp = torch.log_softmax(logits[row, :-1].float(), dim=-1)
        targets = batch.labels[row, 1:]
        expected = -sum(float(logp[t, int(y)]) for t, y in enumerate(targets) if y != -100)
        assert float(got[row]) == pytest.approx(expected, rel=1e-5)


def test_non_finite_gradients_fail_with_a_reason(lora_model):
    model, data, pad = lora_model
    param = next(p for n, p in model.named_parameters() if "lora_B" in n)
    saved = param.detach().clone()
    with torch.no_grad():
        param[0, 0] = float("nan")
    try:
        with pytest.raises(FailedPrecondition) as err:
            compute_fisher(model, data, batch_size=4, pad_id=pad)
        assert err.value.reason == "NON_FINITE_GRADIENTS"
    finally:
        with torch.no_grad():
            param.copy_(saved)


class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 2, bias=False)
        self.b = nn.Linear(2, 1, bias=False)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_ewc_penalty_matches_a_hand_computation():
    model = TwoLayers()
    with torch.no_grad():
        model.a.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        model.b.weight.copy_(torch.tensor([[0.5, -1.0]]))
    fisher = {"a.weight": torch.tensor([[1.0, 0.0], [2.0, 0.5]]), "b.weight": torch.tensor([[4.0, 1.0]])}
    anchor = {"a.weight": torch.tensor([[1.0, 1.0], [1.0, 1.0]]), "b.weight": torch.tensor([[0.0, 0.0]])}
    # sum F (theta - theta*)^2 = a: 1*0 + 0*1 + 2*4 + 0.5*9 = 12.5 ; b: 4*0.25 + 1*1 = 2 ; total 14.5
    penalty = EwcPenalty(fisher, anchor, ewc_lambda=500.0, normalization="raw")(model)
    assert float(penalty) == pytest.approx(500.0 / 2 * 14.5)
    penalty.backward()
    assert torch.allclose(model.a.weight.grad, 500.0 * torch.tensor([[0.0, 0.0], [4.0, 1.5]]))
    assert torch.allclose(model.b.weight.grad, 500.0 * torch.tensor([[2.0, -1.0]]))
    at_anchor = EwcPenalty(fisher, {n: p.detach().clone() for n, p in trainable_parameters(model).items()}, 500.0,
                           "raw")
    assert float(at_anchor(model)) == 0.0


def test_ewc_refuses_a_fisher_of_another_shape():
    model = TwoLayers()
    anchor = {n: p.detach().clone() for n, p in trainable_parameters(model).items()}
    with pytest.raises(FailedPrecondition) as err:
        EwcPenalty({"a.weight": torch.ones(2, 2), "b.weight": torch.ones(1, 3)}, anchor, 100.0)
    assert err.value.reason == "FISHER_SHAPE_MISMATCH"
    with pytest.raises(FailedPrecondition):
        EwcPenalty({"a.weight": torch.ones(2, 2)}, {"a.weight": torch.ones(2, 2)}, 100.0)(model)


def test_online_accumulation_and_statistics():
    old = {"w": torch.tensor([1.0, 2.0, 3.0])}
    new = {"w": torch.tensor([10.0, 0.0, 1.0])}
    assert torch.equal(accumulate(old, new, 0.5)["w"], torch.tensor([10.5, 1.0, 2.5]))
    with pytest.raises(FailedPrecondition):
        accumulate({"w": torch.ones(2)}, new, 1.0)
    stats = diagonal_stats({"w": torch.arange(101, dtype=torch.float32)})
    assert (stats.sum, stats.max, stats.mean, stats.parameter_count) == (5050.0, 100.0, 50.0, 101)
    assert dict(stats.quantiles) == {0.5: 50.0, 0.9: 90.0, 0.99: 99.0}


def test_replay_mixing_and_sample_selection():
    assert replay_count(30, 0.25, 100) == 10 and replay_count(30, 0.25, 4) == 4 and replay_count(30, 0.0, 9) == 0
    mixed, replayed = mix_replay(list(range(30)), list(range(100, 200)), 0.25, seed=1)
    assert replayed == 10 and mixed[:30] == list(range(30)) and all(x >= 100 for x in mixed[30:])
    assert select_samples(5, 1000) == [0, 1, 2, 3, 4]
    picked = select_samples(50, 10, seed=2)
    assert len(set(picked)) == 10 and picked == sorted(picked) and picked == select_samples(50, 10, seed=2)
