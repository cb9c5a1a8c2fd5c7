"""The KL term to the base model's distribution (engine.training.base_kl): zero at the adapter's initialisation,
positive once it moved, a gradient only for the adapter, the same in packed and padded batches, and composed with
the task loss as one big batch's whatever the micro-batches."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine.domain import BaseProtection, BaseProtectionMethod
from engine.jobs.ports import CancelToken
from engine.training import base_kl as base_kl_module
from engine.training.base_kl import BaseKlObjective, base_kl, rehearsal_objective
from engine.training.batching import EpochRows, Rotation, StepBatch, batching
from engine.training.datasets import encode_dataset, pad_token_id
from engine.training.kto import KtoObjective
from engine.training.loading import load_for_training
from engine.training.models import select_device
from engine.training.objectives import WeightedSft
from engine.training.packing import PackedForward, PaddedForward
from engine.training.recipe import run_training
from engine.training.spec import Precision, StepMetrics
from tests.engine.test_packing import TOLERANCE, assert_same, step_result, weighted
from tests.engine.test_training import RecordingSink, examples, make_run

PLAN = select_device(Precision.FP32)


def mean_kl(model, forward, examples) -> torch.Tensor:
    sums, counts = base_kl(model, forward, examples)
    return sums / counts


def test_the_term_is_zero_at_initialisation_and_positive_after_a_step(tiny_model_dir: Path, tmp_path: Path) -> None:
    loaded = load_for_training(make_run(tiny_model_dir, tmp_path / "adapter"))
    model, forward = loaded.model, PaddedForward(pad_token_id(loaded.tokenizer), PLAN)
    assert all(float(p.abs().max()) == 0 for n, p in model.named_parameters() if "lora_B" in n)
    data = encode_dataset(loaded.tokenizer, examples(), 64)
    assert float(mean_kl(model, forward, data).abs().max()) < 1e-6  # B = 0: the adapted model is the base model

    objective = BaseKlObjective(WeightedSft(), [True] * len(data), 1.0, trained=False)
    step = StepBatch(data, list(range(len(data))), len(data))
    shares = list(objective.step_losses(model, step, forward))
    assert len(shares) == 1 and float(shares[0]) < 1e-6
    shares[0].backward()  # at B = 0 the gradient is 0 too: the base model is the term's minimum
    named = dict(model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {n for n, p in named.items() if p.grad is not None} == trainable  # the base model's weights get none
    assert all(float(named[n].grad.abs().max()) < 1e-6 for n in trainable)
    model.zero_grad(set_to_none=True)

    # One step of the task loss moves the adapter off the base model; the term then measures it, and its gradient
    # reaches the adapter (A and B) only.
    sft = list(WeightedSft().step_losses(model, step, forward))[0]
    sft.backward()
    torch.optim.SGD([named[n] for n in trainable], lr=0.05).step()
    model.zero_grad(set_to_none=True)
    after = mean_kl(model, forward, data)
    assert float(after.min()) > 0
    shares = list(objective.step_losses(model, step, forward))
    assert float(shares[0]) > 0
    shares[0].backward()
    assert {n for n, p in named.items() if p.grad is not None} == trainable
    assert any(float(named[n].grad.abs().max()) > 0 for n in trainable if "lora_A" in n)
    assert any(float(named[n].grad.abs().max()) > 0 for n in trainable if "lora_B" in n)


@pytest.mark.parametrize("row_tokens", [None, 48])
def test_packed_and_padded_give_the_same_kl_and_gradients(lora_model, row_tokens) -> None:
    model, data, pad = lora_model
    examples = weighted(data)
    padded_kl = mean_kl(model, PaddedForward(pad, PLAN), examples)
    assert float(padded_kl.min()) > 0  # the fixture's adapter has moved (B != 0)
    objective = BaseKlObjective(WeightedSft(), [i % 2 == 0 for i in range(len(examples))], 0.7, trained=False)
    padded = step_result(model, objective, examples, PaddedForward(pad, PLAN))
    with batching(model, examples, packing=True, pad_id=pad, plan=PLAN) as layout:
        assert layout.description.startswith("packed")
        forward = layout.forward if row_tokens is None else PackedForward(pad, PLAN, row_tokens)
        torch.testing.assert_close(mean_kl(model, forward, examples), padded_kl, rtol=TOLERANCE, atol=TOLERANCE)
        packed = step_result(model, objective, examples, forward)
    assert_same(packed, padded)


@pytest.mark.parametrize("packing", [True, False])
def test_the_step_is_one_big_batchs_whatever_the_micro_batches(lora_model, packing: bool) -> None:
    model, data, pad = lora_model
    examples = weighted(data)  # 9: micro-batches of 2, 2, 2, 2, 1
    anchored = [i % 3 == 1 for i in range(len(examples))]
    kto = KtoObjective([i % 2 == 0 for i in range(len(examples))])
    with batching(model, examples, packing=packing, pad_id=pad, plan=PLAN) as layout:
        for inner in (WeightedSft(), kto):
            for trained in (False, True):
                objective = BaseKlObjective(inner, anchored, 0.5, trained=trained)
                big = step_result(model, objective, examples, layout.forward)
                accumulated = step_result(model, objective, examples, layout.forward, micro_size=2)
                assert_same(accumulated, big)


def test_the_loss_is_the_weighted_mean_of_each_examples_nll_and_kl(lora_model) -> None:
    """sum_i w_i (nll_i [own, or trained] + beta kl_i [anchored]) / sum_i w_i, per-token means."""
    model, data, pad = lora_model
    examples = weighted(data)
    forward = PaddedForward(pad, PLAN)
    anchored = [i >= 6 for i in range(len(examples))]
    with torch.no_grad():  # the reference arithmetic on the CPU, wherever the plan put the model (a GPU)
        sums, counts = forward(model, examples)
        nll = (sums / counts).cpu()
        kl = mean_kl(model, forward, examples).cpu()
    w = torch.tensor([e.weight for e in examples])
    a = torch.tensor(anchored)
    for trained in (False, True):
        got, _ = step_result(model, BaseKlObjective(WeightedSft(), anchored, 2.0, trained=trained), examples,
                             forward)
        own = torch.where(a, nll if trained else torch.zeros_like(nll), nll)
        want = float((w * (own + 2.0 * kl * a)).sum() / w.sum())
        assert got == pytest.approx(want, rel=TOLERANCE)


def test_the_objective_follows_the_examples_kept_and_a_step_of_only_anchored_ones(lora_model) -> None:
    model, data, pad = lora_model
    forward = PaddedForward(pad, PLAN)
    objective = BaseKlObjective.over_rehearsal(WeightedSft(), 5, 4, 1.0, trained=False)
    assert objective.anchored == (False,) * 5 + (True,) * 4
    kept = objective.select([0, 2, 6, 8])  # e.g. examples 1, 3, 4 and 5 had no target within max_seq_length
    assert kept.anchored == (False, False, True, True)
    only_anchored = StepBatch(data[6:8], [2, 3], 8)
    assert kept.step_weight(only_anchored) == pytest.approx(sum(e.weight for e in data[6:8]))
    loss, _ = step_result(model, kept, data[6:8], forward)  # indices 0, 1 of the step: own examples
    shares = list(kept.step_losses(model, only_anchored, forward))
    assert len(shares) == 1 and float(shares[0]) == pytest.approx(float(mean_kl(model, forward, data[6:8]).mean()),
                                                                  rel=TOLERANCE)
    assert loss > 0


def test_the_protection_decides_the_objective() -> None:
    kto = KtoObjective([True, False])
    kl = BaseProtection(BaseProtectionMethod.BASE_KL, 0.2, 0.5)
    plain = BaseProtection(BaseProtectionMethod.SELF_REHEARSAL, 0.2, 0.0)
    both = replace(plain, kl_weight=0.5)
    assert rehearsal_objective(None, plain, 2, 1) is None  # weighted SFT over all, as before
    extended = rehearsal_objective(kto, plain, 2, 1)
    assert isinstance(extended, KtoObjective) and extended.desirable == (True, False, True)
    assert rehearsal_objective(kto, kl, 2, 0) is kto
    for protection, trained in ((kl, False), (both, True)):
        objective = rehearsal_objective(kto, protection, 2, 1)
        assert isinstance(objective, BaseKlObjective) and objective.trained is trained
        assert objective.anchored == (False, False, True) and objective.weight == 0.5
        assert isinstance(objective.inner, KtoObjective) and objective.inner.desirable == (True, False, True)


def test_a_run_with_the_term_trains(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = make_run(tiny_model_dir, tmp_path / "out", epochs=3, batch_size=4)
    own = len(run.examples)
    objective = rehearsal_objective(None, BaseProtection(BaseProtectionMethod.BASE_KL, 0.2, 1.0), own, 2)
    run = replace(run, examples=[*run.examples, *run.examples[:2]], objective=objective)
    sink = RecordingSink()
    result = run_training(run, sink, CancelToken())
    steps = [e for e in sink.events if isinstance(e, StepMetrics)]
    assert result.steps == len(steps) == 6 and all(s.task_loss > 0 for s in steps)
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


def full_kl(model, forward, examples) -> torch.Tensor:
    """[n] per-token mean KL(base || adapted) over the whole vocabulary, for comparison."""
    with torch.no_grad():
        with model.disable_adapter():
            base = forward.target_logits(model, examples)
        adapted = forward.target_logits(model, examples)
        p = F.log_softmax(base.logits, dim=-1)
        sums, counts = adapted.per_example((p.exp() * (p - F.log_softmax(adapted.logits, dim=-1))).sum(dim=-1))
    return sums / counts


def test_the_kept_tokens_and_the_rest_bound_the_full_kl_from_below_and_all_tokens_give_it(
        lora_model, monkeypatch) -> None:
    model, data, pad = lora_model
    forward = PaddedForward(pad, PLAN)
    full = full_kl(model, forward, data)
    with torch.no_grad():
        kept = mean_kl(model, forward, data)
    assert float(kept.min()) > 0 and bool((kept <= full + 1e-6).all())  # merging outcomes never raises a KL
    monkeypatch.setattr(base_kl_module, "REFERENCE_TOP_K", 10**9)  # every token but one kept: the rest is that one
    with torch.no_grad():
        torch.testing.assert_close(mean_kl(model, forward, data), full, rtol=1e-4, atol=1e-6)


def test_each_examples_reference_is_computed_once_and_stays_the_base_models(lora_model, monkeypatch) -> None:
    model, data, pad = lora_model
    forward = PaddedForward(pad, PLAN)
    passes: list[int] = []
    real = base_kl_module.base_reference

    def counted(model, forward, examples):
        passes.append(len(examples))
        return real(model, forward, examples)

    monkeypatch.setattr(base_kl_module, "base_reference", counted)
    examples = weighted(data)
    anchored = [i % 2 == 0 for i in range(len(examples))]
    objective = BaseKlObjective(WeightedSft(), anchored, 0.7, trained=False)
    first = step_result(model, objective, examples, forward, micro_size=2)
    assert sum(passes) == sum(anchored)  # one base forward per anchored example
    with torch.no_grad():  # the adapter moves; the base model does not
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.05)
    kept = step_result(model, objective, examples, forward, micro_size=3)
    assert sum(passes) == sum(anchored)  # no base forward again
    fresh = step_result(model, BaseKlObjective(WeightedSft(), anchored, 0.7, trained=False), examples, forward)
    assert_same(kept, fresh)
    assert kept[0] != pytest.approx(first[0])


def test_a_rotating_pool_trains_a_few_of_it_each_epoch_and_all_of_it_over_the_epochs() -> None:
    rows = EpochRows(10, pool=[6, 7, 8, 9, 4], per_epoch=2, seed=3)
    assert rows.size == 7 and rows.fixed == [0, 1, 2, 3, 5]
    epochs = [rows.rows(e) for e in range(5)]
    assert all(r[:5] == [0, 1, 2, 3, 5] and len(r) == 7 for r in epochs)
    drawn = [i for r in epochs for i in r[5:]]
    assert sorted(drawn) == sorted([6, 7, 8, 9, 4] * 2)  # 5 epochs of 2: every pooled example twice
    assert [rows.rows(e) for e in range(5)] == epochs  # the same again (a resumed run's)
    assert EpochRows(4).rows(7) == [0, 1, 2, 3] and EpochRows(4, [3], per_epoch=5).size == 4


def test_a_run_with_a_rotating_pool_takes_its_share_of_each_epoch(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = make_run(tiny_model_dir, tmp_path / "out", epochs=3, batch_size=3)
    own = len(run.examples)  # 5, and a pool of 6 of which an epoch takes 1: 6 examples, 2 steps an epoch
    pool = [replace(e, weight=1.0) for e in run.examples] + run.examples[:1]
    objective = rehearsal_objective(None, BaseProtection(BaseProtectionMethod.BASE_KL, 0.2, 1.0), own, len(pool))
    seen: list[int] = []

    class Recording(BaseKlObjective):
        def select(self, kept):
            assert kept == list(range(own + len(pool)))  # every example has a target
            return self

        def step_losses(self, model, step, forward):
            seen.extend(step.indices)
            return super().step_losses(model, step, forward)

    recording = Recording(objective.inner, objective.anchored, objective.weight, trained=objective.trained)
    run = replace(run, examples=[*run.examples, *pool], objective=recording, rotation=Rotation(len(pool), 1))
    sink = RecordingSink()
    result = run_training(run, sink, CancelToken())
    assert result.steps == 6 and [e.total_steps for e in sink.events if isinstance(e, StepMetrics)][-1] == 6
    assert sorted(i for i in seen if i < own) == sorted(list(range(own)) * 3)
    assert len([i for i in seen if i >= own]) == 3 and len({i for i in seen if i >= own}) == 3


def test_references_given_with_the_objective_spare_its_base_forward_and_give_the_same_step(lora_model,
                                                                                            monkeypatch) -> None:
    model, data, pad = lora_model
    forward = PaddedForward(pad, PLAN)
    examples = weighted(data)
    anchored = [i >= 4 for i in range(len(examples))]
    given = [r if a else None for r, a in zip(base_kl_module.references_of(model, forward, examples, batch_size=3),
                                               anchored, strict=True)]
    fresh = step_result(model, BaseKlObjective(WeightedSft(), anchored, 0.7, trained=False), examples, forward)

    def refused(*args):
        raise AssertionError("no base forward with the references given")

    monkeypatch.setattr(base_kl_module, "base_reference", refused)
    objective = BaseKlObjective(WeightedSft(), anchored, 0.7, trained=False, references=given)
    assert_same(step_result(model, objective.select(list(range(len(examples)))), examples, forward), fresh)


class CountedForward:
    """A forward that counts the adapted model's passes (the base model's, for references, are not asked for)."""

    def __init__(self, inner) -> None:
        self.inner, self.passes = inner, 0

    def __call__(self, model, examples):
        return self.target_logits(model, examples).nll()

    def target_logits(self, model, examples):
        self.passes += 1
        return self.inner.target_logits(model, examples)


def test_with_weighted_sft_both_terms_come_from_one_pass_per_micro_batch(lora_model) -> None:
    """The task's NLL and the anchored examples' KL are taken from the same logits (two passes cost more on a
    CPU than one over both); KTO, with its own reference passes, trains its part apart. The values are the same
    either way (the tests above), and with the references given no base forward runs."""
    model, data, pad = lora_model
    examples = weighted(data)  # 9: micro-batches of 3
    anchored = [i % 3 == 1 for i in range(len(examples))]
    references = base_kl_module.references_of(model, PaddedForward(pad, PLAN), examples)
    passes = []
    for inner in (WeightedSft(), KtoObjective([i % 2 == 0 for i in range(len(examples))])):
        forward = CountedForward(PaddedForward(pad, PLAN))
        objective = BaseKlObjective(inner, anchored, 0.5, trained=False, references=references)
        list(objective.step_losses(model, StepBatch(examples, list(range(len(examples))), 3), forward))
        passes.append(forward.passes)
    assert passes[0] == 3 and passes[1] > 3  # KTO: its own part and the anchored part, each in micro-batches
