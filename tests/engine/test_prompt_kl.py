"""The KL term at the job's own rows' context positions (``prompt_kl_weight``, engine.training.base_kl): the
positions that predict a token of the example but no target (its prompt and chat markup) held to the base model's
distribution, in the same pass as the task's NLL; the same in every layout and micro-batching, and the value by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.domain import BaseProtection, BaseProtectionMethod
from engine.errors import FailedPrecondition
from engine.training import base_kl as base_kl_module
from engine.training.base_kl import BaseKlObjective, check_shardable, rehearsal_objective
from engine.training.batching import batching
from engine.training.datasets import IGNORE_INDEX, collate
from engine.training.kto import KtoObjective
from engine.training.models import select_device
from engine.training.objectives import WeightedSft
from engine.training.packing import PackedForward, PaddedForward, pack
from engine.training.spec import Precision
from tests.engine.test_packing import TOLERANCE, assert_same, step_result, weighted

PLAN = select_device(Precision.FP32)


def context_kl_by_hand(model, data, pad) -> torch.Tensor:
    """[n] each example's token mean of the full KL(base || adapted) over the positions t that predict its token
    t + 1, which is no target: from padded logits at every position, the adapter off and on."""
    batch = collate(data, pad)
    device = next(model.parameters()).device  # the fixture's model is on the plan's device (a GPU where there is one)
    inputs = {"input_ids": batch.input_ids.to(device), "attention_mask": batch.attention_mask.to(device)}
    with torch.no_grad():
        with model.disable_adapter():
            base = F.log_softmax(model(**inputs).logits, -1).cpu()
        adapted = F.log_softmax(model(**inputs).logits, -1).cpu()
    out = []
    for i, example in enumerate(data):
        at = [t for t in range(len(example.input_ids) - 1) if example.labels[t + 1] == IGNORE_INDEX]
        assert at, "every sample has a prompt"
        p, q = base[i, at], adapted[i, at]
        out.append(float((p.exp() * (p - q)).sum(-1).mean()))
    return torch.tensor(out)


def test_the_loss_adds_each_own_examples_prompt_kl_to_the_weighted_mean(lora_model, monkeypatch) -> None:
    """sum_i w_i (nll_i [own] + beta kl_i [anchored] + gamma ctx_i [own]) / sum_i w_i."""
    monkeypatch.setattr(base_kl_module, "REFERENCE_TOP_K", 10**9)  # the partition is exact: the full KL
    model, data, pad = lora_model
    examples = weighted(data)
    forward = PaddedForward(pad, PLAN)
    anchored = [i >= 6 for i in range(len(examples))]
    without, _ = step_result(model, BaseKlObjective(WeightedSft(), anchored, 2.0, trained=False), examples, forward)
    got, _ = step_result(model, BaseKlObjective(WeightedSft(), anchored, 2.0, trained=False, prompt_weight=0.5),
                         examples, forward)
    w = torch.tensor([e.weight for e in examples])
    own = ~torch.tensor(anchored)
    context = context_kl_by_hand(model, examples, pad)
    assert float(context[own].min()) > 0  # the fixture's adapter has moved (B != 0)
    assert got == pytest.approx(without + float((w * 0.5 * context * own).sum() / w.sum()), rel=TOLERANCE)


def test_self_rehearsal_without_a_kl_weight_holds_no_rehearsed_row(lora_model, monkeypatch) -> None:
    """SELF_REHEARSAL at kl_weight 0 beside a prompt weight: the rehearsed rows are trained on (their NLL) and
    carry no KL term, so none of them needs the base model's reference (it would be computed and weighted by 0)."""
    monkeypatch.setattr(base_kl_module, "REFERENCE_TOP_K", 10**9)  # the partition is exact: the full KL
    model, data, pad = lora_model
    examples = weighted(data)
    forward = PaddedForward(pad, PLAN)
    anchored = [i >= 6 for i in range(len(examples))]
    objective = BaseKlObjective(WeightedSft(), anchored, 0.0, trained=True, prompt_weight=0.5)
    assert objective.references_missing == anchored.count(False)  # the own rows' contexts only

    def no_reference(*args, **kwargs):
        raise AssertionError("a rehearsed row's reference was computed at KL weight 0")

    monkeypatch.setattr(base_kl_module, "references_of", no_reference)
    got, _ = step_result(model, objective, examples, forward)
    nll, _ = step_result(model, WeightedSft(), examples, forward)
    w = torch.tensor([e.weight for e in examples])
    own = ~torch.tensor(anchored)
    context = context_kl_by_hand(model, examples, pad)
    assert got == pytest.approx(nll + float((w * 0.5 * context * own).sum() / w.sum()), rel=TOLERANCE)


@pytest.mark.parametrize("row_tokens", [None, 48])
def test_packed_padded_and_micro_batched_steps_are_the_same(lora_model, row_tokens) -> None:
    model, data, pad = lora_model
    examples = weighted(data)
    anchored = [i % 3 == 1 for i in range(len(examples))]

    def objective() -> BaseKlObjective:  # a fresh one each time: its context references are computed again
        return BaseKlObjective(WeightedSft(), anchored, 0.7, trained=False, prompt_weight=1.5)

    padded = step_result(model, objective(), examples, PaddedForward(pad, PLAN))
    assert_same(step_result(model, objective(), examples, PackedForward(pad, PLAN, row_tokens)), padded)
    assert_same(step_result(model, objective(), examples, PackedForward(pad, PLAN, row_tokens), micro_size=2), padded)
    assert_same(step_result(model, objective(), examples, PaddedForward(pad, PLAN), micro_size=4), padded)


def test_context_positions_are_the_examples_non_target_next_tokens(lora_model) -> None:
    model, data, pad = lora_model
    flagged = [i % 2 == 0 for i in range(len(data))]
    with torch.no_grad():
        for forward in (PaddedForward(pad, PLAN), PackedForward(pad, PLAN, 48)):
            targets, context = forward.context_logits(model, data, flagged)
            torch.testing.assert_close(targets.logits, forward.target_logits(model, data).logits,
                                       rtol=TOLERANCE, atol=TOLERANCE)
            for i, example in enumerate(data):
                want = [example.input_ids[t + 1] for t in range(len(example.input_ids) - 1)
                        if example.labels[t + 1] == IGNORE_INDEX] if flagged[i] else []
                assert context.targets[context.owner == i].tolist() == want
    packed = pack(data[:2], pad)
    first = len(data[0].input_ids)
    assert packed.next_ids[0, : first - 1].tolist() == data[0].input_ids[1:]
    assert int(packed.next_ids[0, first - 1]) == IGNORE_INDEX  # an example's last position predicts nothing


def test_the_protection_carries_the_weight_and_a_sharded_run_needs_every_reference_beforehand() -> None:
    protection = BaseProtection(BaseProtectionMethod.BASE_KL, 0.3, 2.0, prompt_kl_weight=0.5)
    objective = rehearsal_objective(None, protection, 3, 2, references=[None, None])  # the answers' given below
    assert isinstance(objective, BaseKlObjective) and objective.prompt_weight == 0.5
    assert objective.select([0, 3]).prompt_weight == 0.5 and objective.extended(1).prompt_weight == 0.5
    given = BaseKlObjective.over_rehearsal(WeightedSft(), 3, 2, 2.0, trained=False,
                                           references=[object(), object()])  # type: ignore[list-item]
    assert given.references_missing == 0
    check_shardable(given)
    with_prompts = BaseKlObjective.over_rehearsal(WeightedSft(), 3, 2, 2.0, trained=False,
                                                  references=[object(), object()],  # type: ignore[list-item]
                                                  prompt_weight=0.5)
    assert with_prompts.references_missing == 3  # the own examples' context references come when first seen
    with pytest.raises(FailedPrecondition, match="reference"):
        check_shardable(with_prompts)
    plain = BaseProtection(BaseProtectionMethod.SELF_REHEARSAL, 0.3, 0.0, prompt_kl_weight=0.5)
    assert isinstance(rehearsal_objective(None, plain, 3, 2), BaseKlObjective)  # the prompt term needs the objective


@pytest.mark.parametrize("packing", [True, False])
def test_with_kto_the_prompt_term_is_a_pass_of_its_own_and_the_same_whatever_the_micro_batches(lora_model,
                                                                                             packing) -> None:
    model, data, pad = lora_model
    examples = weighted(data)
    anchored = [i % 3 == 1 for i in range(len(examples))]
    kto = KtoObjective([i % 2 == 0 for i in range(len(examples))])
    with batching(model, examples, packing=packing, pad_id=pad, plan=PLAN) as layout:
        def result(prompt_weight: float, micro_size: int | None = None):
            objective = BaseKlObjective(kto, anchored, 0.5, trained=False, prompt_weight=prompt_weight)
            return step_result(model, objective, examples, layout.forward, micro_size=micro_size)

        big = result(1.5)
        assert_same(result(1.5, micro_size=2), big)
        assert big[0] > result(0.0)[0]
