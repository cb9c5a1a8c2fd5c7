"""Rows that share a prefix (engine.training.packing.prefixed_target_logits): the prefix run once without gradient,
its keys and values the context of every row's rest. The logits are those of the whole rows, in every layout and
attention path; the gradient reaches the adapter through the rest's positions only."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from engine.domain import BaseProtection, BaseProtectionMethod
from engine.training.attention import PackedAttention, packed_attention
from engine.training.base_kl import BaseKlObjective, Reference, references_of, rehearsal_objective, shardable
from engine.training.datasets import IGNORE_INDEX, EncodedExample
from engine.training.models import select_device
from engine.training.objectives import WeightedSft
from engine.training.packing import PackedForward, PaddedForward, shared_prefix
from engine.training.spec import Precision
from tests.engine.test_packing import assert_same, step_result, weighted

PLAN = select_device(Precision.FP32)


def chat_rows(data: list[EncodedExample]) -> list[EncodedExample]:
    """The chat examples of the fixture (all but its last, a plain prompt): they share the chat template's start."""
    return data[:-1]


def test_the_prefix_is_what_the_rows_share_short_of_their_first_predicting_position() -> None:
    rows = [EncodedExample([1, 2, 3, 4, 5, 6], [IGNORE_INDEX] * 4 + [5, 6]),
            EncodedExample([1, 2, 3, 9, 9], [IGNORE_INDEX] * 3 + [9, 9])]
    assert shared_prefix(rows) == 2  # three shared, but position 2 predicts the second row's first target
    assert shared_prefix(rows[:1]) == 3  # alone: everything before the position predicting its first target
    assert shared_prefix([EncodedExample([7, 8], [7, 8]), rows[0]]) == 0
    assert shared_prefix([]) == 0
    same = EncodedExample([1, 2, 3], [1, 2, 3])
    assert shared_prefix([same, same]) == 0  # every token a target: nothing before them


@pytest.mark.parametrize("layout", ["padded", "packed-segments", "packed-mask"])
def test_the_logits_are_the_whole_rows_and_the_prefix_gets_no_gradient(lora_model, layout: str) -> None:
    model, data, pad = lora_model
    rows = chat_rows(data)
    prefix = shared_prefix(rows)
    assert prefix >= 5  # the chat template's system turn and the user's turn's start
    forward = PaddedForward(pad, PLAN) if layout == "padded" else PackedForward(pad, PLAN)
    attention = PackedAttention.MASK if layout != "packed-segments" else PackedAttention.SEGMENTS
    model.eval()
    try:
        with packed_attention(model, attention):
            whole = forward.target_logits(model, rows)
            got = forward.prefixed_target_logits(model, rows, prefix)
    finally:
        model.train()
    assert torch.equal(got.owner, whole.owner) and torch.equal(got.targets, whole.targets)
    assert torch.allclose(got.logits, whole.logits, atol=1e-4, rtol=1e-4)
    # the NLL's gradient: the whole rows' reaches the adapter through every position, the prefixed rows' through
    # the rest only, so they differ, and the prefixed one is the whole rows' with the prefix's inputs held fixed
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    whole_grad = torch.autograd.grad(forward.target_logits(model, rows).nll()[0].sum(), lora)
    prefixed_grad = torch.autograd.grad(forward.prefixed_target_logits(model, rows, prefix).nll()[0].sum(), lora)
    assert all(g.isfinite().all() for g in prefixed_grad)
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(whole_grad, prefixed_grad, strict=True))


def objective_over(data: list[EncodedExample], prefix: int, references) -> BaseKlObjective:
    anchored = [i % 2 == 1 and i < len(data) - 1 for i in range(len(data))]  # chat rows, each micro-batch some
    return BaseKlObjective(WeightedSft(), anchored, 0.7, trained=False, references=references, prefix=prefix)


@pytest.mark.parametrize("packed", [True, False])
def test_a_step_with_a_prefix_has_the_loss_of_whole_rows(lora_model, packed: bool) -> None:
    model, data, pad = lora_model
    examples = weighted(data)
    forward = PackedForward(pad, PLAN) if packed else PaddedForward(pad, PLAN)
    references = references_of(model, PaddedForward(pad, PLAN), examples)
    anchored = [e for i, e in enumerate(examples) if objective_over(examples, 0, None).anchored[i]]
    prefix = shared_prefix(anchored)
    assert prefix > 0
    with packed_attention(model, PackedAttention.SEGMENTS if packed else PackedAttention.MASK):
        whole = step_result(model, objective_over(examples, 0, references), examples, forward, micro_size=3)
        objective = objective_over(examples, prefix, references)
        got = step_result(model, objective, examples, forward, micro_size=3)
    assert objective.prefix == prefix  # checked on the first micro-batch, and kept
    assert got[0] == pytest.approx(whole[0], rel=1e-5)
    assert whole[1].keys() == got[1].keys()
    assert any(not torch.allclose(got[1][n], whole[1][n], atol=1e-6) for n in whole[1])  # the prefix's share is out


class BrokenPrefix:
    """A forward whose rows after a prefix come out wrong (as an attention path that mishandles the cache would)."""

    def __init__(self, inner) -> None:
        self.inner, self.plan, self.prefixed = inner, inner.plan, 0

    def target_logits(self, model, examples):
        return self.inner.target_logits(model, examples)

    def prefixed_target_logits(self, model, examples, prefix):
        self.prefixed += 1
        logits = self.inner.prefixed_target_logits(model, examples, prefix)
        return replace(logits, logits=logits.logits.roll(1, dims=-1))


def test_rows_run_whole_when_the_prefix_does_not_give_their_losses(lora_model) -> None:
    model, data, pad = lora_model
    examples = weighted(data)
    inner = PaddedForward(pad, PLAN)
    references = references_of(model, inner, examples)
    whole = step_result(model, objective_over(examples, 0, references), examples, inner, micro_size=3)
    objective = objective_over(examples, 8, references)
    forward = BrokenPrefix(inner)
    got = step_result(model, objective, examples, forward, micro_size=3)
    assert objective.prefix == 0 and forward.prefixed == 1  # tried once, then never again
    assert_same(got, whole)


def test_a_model_checkpointing_its_activations_runs_the_rows_whole(lora_model) -> None:
    model, data, pad = lora_model
    examples = weighted(data)
    inner = PaddedForward(pad, PLAN)
    references = references_of(model, inner, examples)
    forward = BrokenPrefix(inner)  # a prefixed pass would show
    model.get_base_model().activation_checkpointing_enable()
    try:
        got = step_result(model, objective_over(examples, 8, references), examples, forward, micro_size=3)
    finally:
        model.get_base_model().activation_checkpointing_disable()
    assert forward.prefixed == 0
    assert_same(got, step_result(model, objective_over(examples, 0, references), examples, inner, micro_size=3))


def test_a_sharded_run_and_copies_keep_or_drop_the_prefix_as_they_must(lora_model) -> None:
    given = Reference(torch.zeros((1, 1), dtype=torch.long), torch.zeros((1, 1)), torch.zeros(1))
    objective = objective_over([EncodedExample([1, 2], [1, 2])] * 4, 5, [given] * 4)
    assert objective.select([0, 1, 3]).prefix == 5 and objective.extended(2).prefix == 5
    sharded = shardable(objective)
    assert isinstance(sharded, BaseKlObjective) and sharded.prefix == 0 and sharded.anchored == objective.anchored
    protection = BaseProtection(BaseProtectionMethod.BASE_KL, 0.3, 2.0)
    built = rehearsal_objective(None, protection, 3, 2, prefix=7)
    assert isinstance(built, BaseKlObjective) and built.prefix == 7
