"""Kahneman-Tversky Optimisation (KTO; Ethayarajh et al., 2024) for LoRA adapters.

KTO learns from examples labelled desirable or undesirable, with no preference pairs, so a
thumbs-down teaches the model *away* from a response instead of imitating it less.

For an example (x, y) the implied reward is the log-ratio of policy to reference:

    r(x, y) = log pi_theta(y | x) - log pi_ref(y | x)        (summed over completion tokens)

The reference point z0 estimates KL(pi_theta || pi_ref) from mismatched pairs (x_i, y_j),
j = i + 1 mod B, within the batch: z0 = max(0, mean_i r(x_i, y_j)), with no gradient.
The value of an example is

    desirable:    v = lambda_D * sigmoid(beta * (r - z0))
    undesirable:  v = lambda_U * sigmoid(beta * (z0 - r))

and the loss is the batch mean of lambda_y - v, i.e. lambda_y * (1 - sigmoid(...)).
The per-example weights (thumbs up 2.0 / thumbs down 0.5 by default) serve as lambda_y.

The reference policy is the same network with the LoRA adapter disabled (``model.disable_adapter()``):
no second copy of the base model is kept. With a warm start from a parent adapter, the reference is
still the base model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from engine.training.datasets import IGNORE_INDEX, Batch

DEFAULT_BETA = 0.1


@dataclass(frozen=True)
class KtoLoss:
    loss: torch.Tensor  # scalar, differentiable w.r.t. the policy log-probs
    kl: torch.Tensor  # the reference point z0 (detached)
    rewards: torch.Tensor  # r(x, y) per example (detached)


def kto_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    policy_kl_logps: torch.Tensor,
    reference_kl_logps: torch.Tensor,
    desirable: torch.Tensor,
    weights: torch.Tensor,
    beta: float = DEFAULT_BETA,
) -> KtoLoss:
    """The KTO loss from sequence log-probs ([B] each); ``desirable`` is a [B] bool tensor, ``weights`` lambda_y."""
    kl = (policy_kl_logps - reference_kl_logps).mean().clamp(min=0).detach()
    rewards = policy_logps - reference_logps
    margin = torch.where(desirable, rewards - kl, kl - rewards)
    losses = weights.to(rewards.dtype) * (1 - torch.sigmoid(beta * margin))
    return KtoLoss(losses.mean(), kl, rewards.detach())


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of next-token log-probs over the target tokens (labels != IGNORE_INDEX) of each row: [B]."""
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=-1)


def mismatched(batch: Batch) -> Batch:
    """Pair each row's prompt with the next row's completion (x_i, y_{i+1 mod B}), for the KL estimate."""
    rows = batch.input_ids.shape[0]
    if rows < 2:
        return batch
    lengths = batch.attention_mask.sum(dim=1).tolist()
    firsts = [_first_target(batch.labels[i]) for i in range(rows)]
    ids, labels = [], []
    for i in range(rows):
        j = (i + 1) % rows
        prompt = batch.input_ids[i, : firsts[i]]
        tail_ids = batch.input_ids[j, firsts[j] : lengths[j]]
        tail_labels = batch.labels[j, firsts[j] : lengths[j]]
        ids.append(torch.cat([prompt, tail_ids]))
        labels.append(torch.cat([torch.full_like(prompt, IGNORE_INDEX), tail_labels]))
    width = max(len(x) for x in ids)
    input_ids = torch.zeros((rows, width), dtype=batch.input_ids.dtype, device=batch.input_ids.device)
    out_labels = torch.full_like(input_ids, IGNORE_INDEX)
    attention = torch.zeros_like(input_ids)
    for i, (x, y) in enumerate(zip(ids, labels, strict=True)):
        input_ids[i, : len(x)], out_labels[i, : len(y)], attention[i, : len(x)] = x, y, 1
    return Batch(input_ids, attention, out_labels, batch.weights)


def _first_target(labels: torch.Tensor) -> int:
    positions = (labels != IGNORE_INDEX).nonzero()
    return int(positions[0]) if len(positions) else int(labels.shape[0])


class KtoObjective:
    """The KTO loss of a training batch; ``desirable[i]`` labels ``run.examples[i]``."""

    def __init__(self, desirable: Sequence[bool], beta: float = DEFAULT_BETA) -> None:
        self.desirable = tuple(bool(d) for d in desirable)
        self.beta = beta

    def select(self, kept: list[int]) -> KtoObjective:
        return KtoObjective([self.desirable[i] for i in kept], self.beta)

    def extended(self, replayed: int) -> KtoObjective:
        """Replayed examples are what earlier versions were taught to answer: desirable."""
        return KtoObjective([*self.desirable, *([True] * replayed)], self.beta)

    def loss(self, model: Any, batch: Batch, indices: Sequence[int], plan: Any) -> torch.Tensor:
        labels = torch.tensor([self.desirable[i] for i in indices], device=batch.input_ids.device)
        kl_batch = mismatched(batch)
        with plan.autocast():
            policy = sequence_logps(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits,
                                    batch.labels)
            with torch.no_grad():
                policy_kl = sequence_logps(
                    model(input_ids=kl_batch.input_ids, attention_mask=kl_batch.attention_mask).logits,
                    kl_batch.labels,
                )
                with model.disable_adapter():
                    reference = sequence_logps(
                        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch.labels
                    )
                    reference_kl = sequence_logps(
                        model(input_ids=kl_batch.input_ids, attention_mask=kl_batch.attention_mask).logits,
                        kl_batch.labels,
                    )
        weights = batch.weights.to(policy.device)
        return kto_loss(policy, reference, policy_kl, reference_kl, labels, weights, self.beta).loss
