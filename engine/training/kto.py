"""Kahneman-Tversky Optimisation (KTO; Ethayarajh et al., 2024) for LoRA adapters.

KTO learns from examples labelled desirable or undesirable, with no preference pairs, so a
thumbs-down teaches the model *away* from a response instead of imitating it less.

For an example (x, y) the implied reward is the log-ratio of policy to reference:

    r(x, y) = log pi_theta(y | x) - log pi_ref(y | x)        (summed over completion tokens)

The reference point z0 estimates KL(pi_theta || pi_ref) from mismatched pairs (x_i, y_j),
j = i + 1 mod B, within the optimiser step's B examples: z0 = max(0, mean_i r(x_i, y_j)), with no gradient.
Each pair is cut from the end to at most the longer of its two source examples (both already within the job's
max_seq_length, so a pair is too, as TRL truncates its KL sequences to max_length): x_i is kept whole and y_j's
tail is dropped, labels alike. A pair keeps at least one target token: x_i is shorter than example i, which has
a target, and y_j starts at its first target token. A step of a single example (B = 1: an epoch's last step
holding one, an online update of one) has no unrelated completion to pair with -- pairing it with itself would
make z0 = max(0, r), so a desirable example's margin r - z0 would be 0 whenever r > 0 and its loss would never
saturate -- so such a step uses z0 = 0 (TRL's value when it computes no KL term) and runs no KL passes. A
training job whose every step would hold one example is refused when it is created (server.convert).
The value of an example is

    desirable:    v = lambda_D * sigmoid(beta * (r - z0))
    undesirable:  v = lambda_U * sigmoid(beta * (z0 - r))

and the loss is the step's mean of lambda_y - v, i.e. lambda_y * (1 - sigmoid(...)).
The per-example weights (thumbs up 2.0 / thumbs down 0.5 by default) serve as lambda_y.

The reference policy is the same network with the LoRA adapter disabled (``model.disable_adapter()``):
no second copy of the base model is kept. With a warm start from a parent adapter, the reference is
still the base model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from engine.training.batching import StepBatch
from engine.training.datasets import IGNORE_INDEX, EncodedExample
from engine.training.packing import ExampleForward

DEFAULT_BETA = 0.1
# The KTO paper's recommended range of lambda_D * n_D / (lambda_U * n_U) (section 4, after eq. (8)); TRL's
# KTOTrainer warns outside it. Per-example weights stand for lambda_y here, so the products are summed weights.
BALANCED_RANGE = (1.0, 4 / 3)


@dataclass(frozen=True)
class KtoLoss:
    loss: torch.Tensor  # scalar, differentiable w.r.t. the policy log-probs
    kl: torch.Tensor  # the reference point z0 (detached)
    rewards: torch.Tensor  # r(x, y) per example (detached)


def kl_reference_point(policy_kl_logps: torch.Tensor, reference_kl_logps: torch.Tensor) -> torch.Tensor:
    """z0 = max(0, mean_i r(x_i, y_j)) over the mismatched pairs, without gradient; 0 with no pairs (a step of one
    example, see :func:`mismatched`)."""
    if policy_kl_logps.numel() == 0:
        return policy_kl_logps.new_zeros(()).detach()
    return (policy_kl_logps - reference_kl_logps).mean().clamp(min=0).detach()


def kto_losses(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    kl: torch.Tensor,
    desirable: torch.Tensor,
    weights: torch.Tensor,
    beta: float = DEFAULT_BETA,
) -> torch.Tensor:
    """[B] lambda_y * (1 - sigmoid(beta * margin)) of each example, given the reference point ``kl``."""
    rewards = policy_logps - reference_logps
    margin = torch.where(desirable, rewards - kl, kl - rewards)
    return weights.to(rewards.dtype) * (1 - torch.sigmoid(beta * margin))


def kto_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    policy_kl_logps: torch.Tensor,
    reference_kl_logps: torch.Tensor,
    desirable: torch.Tensor,
    weights: torch.Tensor,
    beta: float = DEFAULT_BETA,
) -> KtoLoss:
    """The KTO loss from sequence log-probs ([B] each); ``desirable`` is a [B] bool tensor, ``weights`` lambda_y.
    The KL log-probs are those of the mismatched pairs: empty for a lone example, whose z0 is then 0."""
    kl = kl_reference_point(policy_kl_logps, reference_kl_logps)
    losses = kto_losses(policy_logps, reference_logps, kl, desirable, weights, beta)
    return KtoLoss(losses.mean(), kl, (policy_logps - reference_logps).detach())


def mismatched(examples: Sequence[EncodedExample]) -> list[EncodedExample]:
    """Each example's prompt with the next one's completion (x_i, y_{i+1 mod B}), for the KL estimate: x is all
    before the first target token, y all from it (of a conversation judged by feedback, the earlier turns are x:
    only its last answer is a target, see ``Example.last_turn_only``).

    A pair is cut from the end to at most the longer of its two examples' lengths (each within the job's
    max_seq_length): x_i whole, then as much of y_{i+1}'s head as fits, labels alike. It keeps at least one target
    token: example i has one, so x_i is shorter than example i and at least one token of y_{i+1} -- whose first
    token is a target -- fits. Fewer than two examples have no unrelated completion: no pairs (z0 = 0)."""
    if len(examples) < 2:
        return []
    pairs = []
    for i, example in enumerate(examples):
        following = examples[(i + 1) % len(examples)]
        first, tail = _first_target(example.labels), _first_target(following.labels)
        limit = max(len(example.input_ids), len(following.input_ids))
        pairs.append(EncodedExample(
            (example.input_ids[:first] + following.input_ids[tail:])[:limit],
            ([IGNORE_INDEX] * first + following.labels[tail:])[:limit],
            example.weight,
        ))
    return pairs


def weight_balance(weights: Sequence[float], desirable: Sequence[bool]) -> float | None:
    """lambda_D * n_D / (lambda_U * n_U): the desirable examples' summed weight over the undesirable ones'; None
    when either side weighs nothing (only one kind of example: there is nothing to balance)."""
    wanted = sum(w for w, good in zip(weights, desirable, strict=True) if good)
    rejected = sum(w for w, good in zip(weights, desirable, strict=True) if not good)
    return wanted / rejected if wanted > 0 and rejected > 0 else None


def _first_target(labels: Sequence[int]) -> int:
    return next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))


def _sequence_logps(model: Any, forward: ExampleForward, examples: Sequence[EncodedExample]) -> torch.Tensor:
    """[n] summed log-probs of each example's target tokens."""
    return -forward(model, examples)[0]


class KtoObjective:
    """The KTO loss of a training step; ``desirable[i]`` labels ``run.examples[i]``.

    The reference point z0 is measured over the whole step's mismatched pairs first (no gradient), so a step
    accumulated over micro-batches has the loss and gradients of one big batch. A step of one example has no pairs:
    its z0 is 0, with no KL passes (see the module docstring).
    """

    def __init__(self, desirable: Sequence[bool], beta: float = DEFAULT_BETA) -> None:
        self.desirable = tuple(bool(d) for d in desirable)
        self.beta = beta

    def select(self, kept: Sequence[int]) -> KtoObjective:
        return KtoObjective([self.desirable[i] for i in kept], self.beta)

    def extended(self, replayed: int) -> KtoObjective:
        """Replayed examples are what earlier versions were taught to answer: desirable."""
        return KtoObjective([*self.desirable, *([True] * replayed)], self.beta)

    def step_weight(self, step: StepBatch) -> float:
        """The step's loss is the mean over its examples (weights scale each example's loss, not the mean)."""
        return float(len(step.examples))

    def step_losses(self, model: Any, step: StepBatch, forward: ExampleForward) -> Iterator[torch.Tensor]:
        micro = step.micro_batches
        pairs = mismatched(step.examples)
        kl: torch.Tensor | None = None  # no pairs (a lone example): z0 = 0
        if pairs:
            with torch.no_grad():
                policy_kl = torch.cat([_sequence_logps(model, forward, pairs[r.start : r.stop]) for r in micro])
                with model.disable_adapter():
                    reference_kl = torch.cat([_sequence_logps(model, forward, pairs[r.start : r.stop])
                                              for r in micro])
            kl = kl_reference_point(policy_kl, reference_kl)
        for r in micro:
            part = step.examples[r.start : r.stop]
            policy = _sequence_logps(model, forward, part)
            with torch.no_grad(), model.disable_adapter():
                reference = _sequence_logps(model, forward, part)
            z0 = kl if kl is not None else policy.new_zeros(()).detach()
            desirable = torch.tensor([self.desirable[step.indices[k]] for k in r], device=policy.device)
            weights = torch.tensor([step.examples[k].weight for k in r], dtype=torch.float32, device=policy.device)
            losses = kto_losses(policy, reference, z0, desirable, weights, self.beta)
            yield losses.sum() / len(step.examples)
