"""KTO loss math on hand-computed values, the KL pairing, and the reference = adapter disabled."""

from __future__ import annotations

import math

import pytest
import torch

from engine.training.batching import StepBatch
from engine.training.datasets import IGNORE_INDEX, EncodedExample
from engine.training.kto import KtoObjective, kto_loss, mismatched
from engine.training.packing import per_example_nll


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_kto_loss_exact_values() -> None:
    out = kto_loss(
        policy_logps=torch.tensor([-1.0, -2.0]),
        reference_logps=torch.tensor([-1.5, -1.0]),
        policy_kl_logps=torch.tensor([-3.0, -2.0]),
        reference_kl_logps=torch.tensor([-3.5, -2.25]),
        desirable=torch.tensor([True, False]),
        weights=torch.tensor([2.0, 0.5]),
        beta=0.1,
    )
    # z0 = mean(0.5, 0.25) = 0.375; r = (0.5, -1.0)
    assert float(out.kl) == pytest.approx(0.375)
    assert out.rewards.tolist() == pytest.approx([0.5, -1.0])
    expected = (2.0 * (1 - sigmoid(0.1 * (0.5 - 0.375))) + 0.5 * (1 - sigmoid(0.1 * (0.375 + 1.0)))) / 2
    assert float(out.loss) == pytest.approx(expected, abs=1e-7)
    assert float(out.loss) == pytest.approx(0.6132948, abs=1e-6)


def test_kl_reference_point_is_clamped_at_zero_and_carries_no_gradient() -> None:
    policy = torch.tensor([-1.0], requires_grad=True)
    policy_kl = torch.tensor([-5.0], requires_grad=True)
    out = kto_loss(policy, torch.tensor([-1.0]), policy_kl, torch.tensor([-4.0]),
                   torch.tensor([True]), torch.tensor([1.0]), beta=0.5)
    assert float(out.kl) == 0.0  # the estimate -1 is clamped
    assert float(out.loss.detach()) == pytest.approx(0.5)  # 1 - sigmoid(0)
    out.loss.backward()
    assert policy.grad is not None and float(policy.grad) == pytest.approx(-0.5 * 0.25)
    assert policy_kl.grad is None


def test_desirable_gradient_raises_and_undesirable_lowers_the_log_prob() -> None:
    for desirable, sign in ((True, -1), (False, 1)):
        policy = torch.tensor([-2.0], requires_grad=True)
        kto_loss(policy, torch.tensor([-2.0]), torch.tensor([0.0]), torch.tensor([0.0]),
                 torch.tensor([desirable]), torch.tensor([1.0])).loss.backward()
        assert math.copysign(1, float(policy.grad)) == sign


def test_sequence_log_probs_sum_target_tokens_only() -> None:
    logits = torch.zeros(1, 4, 3)  # uniform: every token has log-prob -log 3
    labels = torch.tensor([[IGNORE_INDEX, 1, 2, IGNORE_INDEX]])
    sums, counts = per_example_nll(logits, labels)
    assert float(-sums[0]) == pytest.approx(-2 * math.log(3)) and counts.tolist() == [2]


def test_mismatched_pairs_prompt_i_with_completion_i_plus_1() -> None:
    I = IGNORE_INDEX  # noqa: E741
    first = EncodedExample([1, 2, 3], [I, I, 3])
    second = EncodedExample([4, 5, 6, 7], [I, 5, 6, 7])
    kl = mismatched([first, second])
    # each pair cut to the longer of its two examples (4 tokens): x_0 whole, y_1's tail dropped
    assert [e.input_ids for e in kl] == [[1, 2, 5, 6], [4, 3]]
    assert [e.labels for e in kl] == [[I, I, 5, 6], [I, 3]]
    assert mismatched([first]) == []  # a lone example has no other's answer to pair with (z0 = 0)


def test_reference_is_the_base_model_with_the_adapter_disabled(tiny_model_dir) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.domain import Example
    from engine.training.datasets import encode_example
    from engine.training.models import select_device
    from engine.training.packing import PaddedForward
    from engine.training.spec import Precision

    tiny_tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    examples = [Example(prompt="Capital of France? ", completion="Paris", weight=2.0),
                Example(prompt="Capital of Spain? ", completion="Lyon", weight=0.5)]
    plan = select_device(Precision.FP32)
    model.to(plan.device)
    step = StepBatch([encode_example(tiny_tokenizer, e, 64) for e in examples], [0, 1], micro_size=2)
    forward = PaddedForward(tiny_tokenizer.pad_token_id or 0, plan)
    objective = KtoObjective([True, False]).select([0, 1])

    def loss() -> torch.Tensor:
        return sum(objective.step_losses(model, step, forward))

    # LoRA B starts at zero: policy == reference, so r = z0 = 0 and each loss is lambda * (1 - sigmoid(0)).
    assert float(loss()) == pytest.approx((2.0 * 0.5 + 0.5 * 0.5) / 2, abs=1e-6)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.05)
    moved = loss()
    assert float(moved) != pytest.approx(0.625, abs=1e-4)  # the adapter now changes the policy but not the reference
    moved.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)


def test_replayed_examples_extend_the_labels_as_desirable() -> None:
    objective = KtoObjective([True, False])
    extended = objective.extended(2)
    assert extended.desirable == (True, False, True, True) and extended.beta == objective.beta
    assert extended.select([1, 3]).desirable == (False, True)
