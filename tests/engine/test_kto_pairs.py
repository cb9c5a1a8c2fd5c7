"""KTO's mismatched pairs (the KL reference point z0) kept within the job's sequence length, and a step of one
example, which has no unrelated completion to pair with, using z0 = 0 rather than its own reward
(engine/training/kto.py; review findings of TRL trl/trainer/kto_trainer.py and Ethayarajh et al. 2024)."""

from __future__ import annotations

import contextlib
import math
import random

import pytest
import torch

from engine.training.batching import StepBatch
from engine.training.datasets import IGNORE_INDEX, EncodedExample
from engine.training.kto import KtoObjective, kl_reference_point, kto_loss, mismatched

I = IGNORE_INDEX  # noqa: E741
MAX_SEQ_LENGTH = 8
BETA = 0.1


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


class _SwitchModel:
    """Enough of a PEFT model for KtoObjective.step_losses: the adapter can be disabled (the reference policy)."""

    def __init__(self) -> None:
        self.adapter = True

    @contextlib.contextmanager
    def disable_adapter(self):
        self.adapter = False
        try:
            yield
        finally:
            self.adapter = True


def _first_target(labels: list[int]) -> int:
    return next(i for i, label in enumerate(labels) if label != I)


# ---- pairs within the sequence length ---------------------------------------------------------------------------


def test_kl_pairs_are_no_longer_than_max_seq_length() -> None:
    """(review) Both examples within max_seq_length = 8; (x_0, y_1) joined x_0's 7 prompt tokens to y_1's 7 answer
    tokens: 14 tokens, run twice (policy and reference)."""
    long_prompt = EncodedExample(list(range(1, 9)), [I] * 7 + [8])  # 7 prompt tokens, 1 answer token
    long_answer = EncodedExample(list(range(11, 19)), [I] + list(range(12, 19)))  # 1 prompt token, 7 answer tokens
    assert max(len(e.input_ids) for e in (long_prompt, long_answer)) == MAX_SEQ_LENGTH

    seen: list[int] = []

    def forward(model, examples):
        seen.extend(len(e.input_ids) for e in examples)
        return torch.zeros(len(examples), requires_grad=True), torch.ones(len(examples), dtype=torch.long)

    step = StepBatch([long_prompt, long_answer], [0, 1], micro_size=2)
    for share in KtoObjective([True, False]).step_losses(_SwitchModel(), step, forward):
        share.backward()
    pairs = mismatched(step.examples)
    assert max(len(e.input_ids) for e in pairs) <= MAX_SEQ_LENGTH
    assert max(seen) <= MAX_SEQ_LENGTH, f"forward passes over sequences of {sorted(set(seen))} tokens"
    # x_0 whole, then y_1's head; labels cut alike
    assert pairs[0].input_ids == [1, 2, 3, 4, 5, 6, 7, 12]
    assert pairs[0].labels == [I] * 7 + [12]
    assert pairs[1].input_ids == [11, 8] and pairs[1].labels == [I, 8]  # short enough: whole


def _example(rng: random.Random) -> EncodedExample:
    prompt, answer = rng.randint(0, 12), rng.randint(1, 12)
    ids = [rng.randint(1, 999) for _ in range(prompt + answer)]
    labels = [I] * prompt + [t if rng.random() < 0.8 else I for t in ids[prompt:]]
    labels[prompt] = ids[prompt]  # the first answer token is a target
    return EncodedExample(ids, labels, weight=rng.choice([0.5, 2.0]))


@pytest.mark.parametrize("seed", range(20))
def test_a_pair_is_never_longer_than_its_longer_source_and_keeps_a_target(seed: int) -> None:
    rng = random.Random(seed)
    examples = [_example(rng) for _ in range(rng.randint(2, 6))]
    pairs = mismatched(examples)
    assert len(pairs) == len(examples)
    for i, (example, pair) in enumerate(zip(examples, pairs, strict=True)):
        following = examples[(i + 1) % len(examples)]
        first, tail = _first_target(example.labels), _first_target(following.labels)
        limit = max(len(example.input_ids), len(following.input_ids))
        assert len(pair.input_ids) == len(pair.labels) <= limit
        assert pair.target_token_count >= 1
        assert pair.weight == example.weight
        # the prompt x_i whole, then the head of y_{i+1}: as long as it fits, labels alike
        assert pair.input_ids[:first] == example.input_ids[:first] and pair.labels[:first] == [I] * first
        kept = len(pair.input_ids) - first
        assert kept == min(len(following.input_ids) - tail, limit - first) >= 1
        assert pair.input_ids[first:] == following.input_ids[tail : tail + kept]
        assert pair.labels[first:] == following.labels[tail : tail + kept]


# ---- a step of one example --------------------------------------------------------------------------------------


def _forward(rewards: dict[tuple[int, ...], float], calls: list[bool]):
    """The policy's log-prob of a sequence is ``rewards[ids]`` above the reference's (-10)."""

    def forward(model, examples):
        calls.append(model.adapter)
        logps = [(-10.0 + rewards.get(tuple(e.input_ids), 0.0)) if model.adapter else -10.0 for e in examples]
        nll = torch.tensor([-v for v in logps], requires_grad=True)
        return nll, torch.full((len(examples),), 2, dtype=torch.long)

    return forward


def test_a_single_example_step_keeps_the_kto_value_saturating() -> None:
    """(review) One example paired with itself gave z0 = max(0, r): a desirable example with r = 10 kept the loss
    lambda_D / 2 = 1.0 however far the policy prefers its answer."""
    example = EncodedExample([1, 2, 3, 4], [I, I, 3, 4], weight=2.0)
    step = StepBatch([example], [0], micro_size=1)
    forward = _forward({(1, 2, 3, 4): 10.0}, [])
    loss = sum(float(s.detach()) for s in KtoObjective([True]).step_losses(_SwitchModel(), step, forward))
    assert loss < 2.0 * 0.5, f"a desirable example with reward 10 still has the loss {loss} = lambda_D / 2"


@pytest.mark.parametrize("desirable", [True, False])
def test_a_lone_example_has_the_reference_point_zero_and_no_kl_passes(desirable: bool) -> None:
    example = EncodedExample([1, 2, 3, 4], [I, I, 3, 4], weight=2.0 if desirable else 0.5)
    assert mismatched([example]) == [] and mismatched([]) == []
    calls: list[bool] = []
    step = StepBatch([example], [0], micro_size=1)
    shares = list(KtoObjective([desirable], beta=BETA).step_losses(_SwitchModel(), step,
                                                                    _forward({(1, 2, 3, 4): 3.0}, calls)))
    assert calls == [True, False], "only the example's own policy and reference passes, no KL passes"
    margin = 3.0 if desirable else -3.0  # r - z0 or z0 - r, with z0 = 0
    assert sum(float(s.detach()) for s in shares) == pytest.approx(example.weight * (1 - sigmoid(BETA * margin)))
    # the functional form: no mismatched pairs, z0 = 0
    empty = torch.zeros(0)
    assert float(kl_reference_point(empty, empty)) == 0.0
    out = kto_loss(torch.tensor([-7.0]), torch.tensor([-10.0]), empty, empty, torch.tensor([desirable]),
                   torch.tensor([example.weight]), beta=BETA)
    assert float(out.kl) == 0.0
    assert float(out.loss) == pytest.approx(example.weight * (1 - sigmoid(BETA * margin)))


def test_a_step_of_two_examples_is_unchanged() -> None:
    """Two short examples: their pairs need no cut, z0 the mean reward of (x_0, y_1) and (x_1, y_0) as before."""
    first = EncodedExample([1, 2, 3], [I, I, 3], weight=2.0)
    second = EncodedExample([4, 5, 6, 7], [I, I, 6, 7], weight=0.5)
    pairs = mismatched([first, second])
    assert [e.input_ids for e in pairs] == [[1, 2, 6, 7], [4, 5, 3]]
    assert [e.labels for e in pairs] == [[I, I, 6, 7], [I, I, 3]]
    rewards = {(1, 2, 3): 0.5, (4, 5, 6, 7): -1.0, (1, 2, 6, 7): 1.5, (4, 5, 3): 0.25}
    calls: list[bool] = []
    step = StepBatch([first, second], [0, 1], micro_size=1)  # two micro-batches: z0 over the whole step
    loss = sum(float(s.detach()) for s in KtoObjective([True, False], beta=BETA).step_losses(
        _SwitchModel(), step, _forward(rewards, calls)))
    z0 = (1.5 + 0.25) / 2
    expected = (2.0 * (1 - sigmoid(BETA * (0.5 - z0))) + 0.5 * (1 - sigmoid(BETA * (z0 + 1.0)))) / 2
    assert loss == pytest.approx(expected)
    assert calls.count(True) == 4 and calls.count(False) == 4  # KL: 2 micro-batches x 2, the examples: 2 x 2
