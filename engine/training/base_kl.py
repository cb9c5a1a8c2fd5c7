"""A KL term to the base model's distribution: what keeps an adapter's answers to general prompts the base model's.

Self-rehearsal (engine.continual.rehearsal) mixes the base model's own greedy answers to general prompts into a
job's examples. On those *anchored* examples this objective adds, at every position that predicts an answer
token, ``weight * KL(base || adapted)`` of the next-token distributions: the base model's whole distribution is the
target, not only its argmax, which is what the NLL of its greedy answer teaches. With ``BASE_KL`` the anchored
examples carry only this term (their NLL is left out); with ``SELF_REHEARSAL`` and a weight they carry both.

The direction is the forward KL, ``sum_v p_base(v) (log p_base(v) - log p_adapted(v))``: the positions are the base
model's own answers (teacher forcing), so the expectation is over the base model's distribution, as in knowledge
distillation and learning without forgetting; it is the cross-entropy to the base model's soft targets less a
constant, needs no sampling, and punishes most what the base model found likely and the adapter makes unlikely
(the mode-covering direction: a general answer the adapter would stop giving). The reverse KL suits sampling from
the policy (RLHF), which nothing here does.

The reference is the same network with the adapter disabled (``model.disable_adapter()``, as KTO does), computed
under ``torch.no_grad`` and only on the anchored examples: a job pays one more forward pass (no backward) over the
rehearsal rows. At the adapter's initialisation (LoRA B = 0) the adapted model is the base model and the term is 0;
only the adapter's parameters get its gradient, since the base model's are frozen.

Per example the term is the token mean, weighted by the example's weight like its NLL, and every share is divided
by the step's total weight (the inner objective's, plus the anchored examples' when they are not in it), so the
step's loss is that of one big batch whatever the micro-batches or the layout (packed or padded).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from engine.domain import BaseProtection, BaseProtectionMethod
from engine.training.batching import StepBatch
from engine.training.datasets import EncodedExample
from engine.training.objectives import WeightedSft
from engine.training.packing import ExampleForward, TargetLogits
from engine.training.recipe import BatchObjective


def kl_to_base(adapted: TargetLogits, base: TargetLogits) -> tuple[torch.Tensor, torch.Tensor]:
    """[n] summed KL(base || adapted) over each example's target positions, and [n] how many positions it has."""
    base_logp = F.log_softmax(base.logits, dim=-1)
    adapted_logp = F.log_softmax(adapted.logits, dim=-1)
    per_position = (base_logp.exp() * (base_logp - adapted_logp)).sum(dim=-1)
    return adapted.per_example(per_position)


def base_kl(model: Any, forward: ExampleForward,
            examples: Sequence[EncodedExample]) -> tuple[torch.Tensor, torch.Tensor]:
    """[n] summed KL(base || adapted) of ``examples`` (differentiable in the adapter), and [n] position counts."""
    with torch.no_grad(), model.disable_adapter():
        base = forward.target_logits(model, examples)
    return kl_to_base(forward.target_logits(model, examples), base)


class BaseKlObjective:
    """``inner``'s loss plus ``weight * KL(base || adapted)`` on the anchored examples (see the module docstring).

    ``anchored[i]``: ``run.examples[i]`` is held to the base model's distribution. ``trained``: the anchored examples
    are also the inner objective's (their NLL counts: self-rehearsal with a KL term); otherwise only the KL trains
    on them.
    """

    def __init__(self, inner: BatchObjective, anchored: Sequence[bool], weight: float, *, trained: bool) -> None:
        self.inner, self.anchored, self.weight, self.trained = inner, tuple(anchored), weight, trained

    @classmethod
    def over_rehearsal(cls, inner: BatchObjective, own: int, rehearsed: int, weight: float, *,
                       trained: bool) -> BaseKlObjective:
        """Over ``own`` examples followed by ``rehearsed`` of the base model's answers (engine.continual.rehearsal);
        ``inner`` covers the ``own`` ones (it is extended over the rest, which it sees only when ``trained``)."""
        return cls(inner.extended(rehearsed), [False] * own + [True] * rehearsed, weight, trained=trained)

    def select(self, kept: list[int]) -> BaseKlObjective:
        return BaseKlObjective(self.inner.select(kept), [self.anchored[i] for i in kept], self.weight,
                               trained=self.trained)

    def extended(self, replayed: int) -> BaseKlObjective:
        return BaseKlObjective(self.inner.extended(replayed), [*self.anchored, *([False] * replayed)], self.weight,
                               trained=self.trained)

    def _parts(self, step: StepBatch) -> tuple[StepBatch, StepBatch]:
        """(the inner objective's examples of the step, the anchored ones that predict a target token)."""
        def part(keep: list[int]) -> StepBatch:
            return StepBatch([step.examples[k] for k in keep], [step.indices[k] for k in keep], step.micro_size)

        positions = range(len(step.examples))
        anchored = [k for k in positions if self.anchored[step.indices[k]]]
        inner = list(positions) if self.trained else [k for k in positions if not self.anchored[step.indices[k]]]
        return part(inner), part([k for k in anchored if step.examples[k].predicted_token_count])

    @staticmethod
    def _weights(step: StepBatch) -> torch.Tensor:
        return torch.tensor([e.weight for e in step.examples], dtype=torch.float32)

    def step_weight(self, step: StepBatch) -> float:
        inner, anchored = self._parts(step)
        own = self.inner.step_weight(inner) if inner.examples else 0.0
        return own if self.trained else own + float(self._weights(anchored).sum())

    def step_losses(self, model: Any, step: StepBatch, forward: ExampleForward) -> Iterator[torch.Tensor]:
        total = self.step_weight(step)
        if total <= 0:
            return
        inner, anchored = self._parts(step)
        own = self.inner.step_weight(inner) if inner.examples else 0.0
        if own > 0:
            for share in self.inner.step_losses(model, inner, forward):
                yield share * (own / total)
        weights = self._weights(anchored)
        for micro in anchored.micro_batches:
            sums, counts = base_kl(model, forward, [anchored.examples[k] for k in micro])
            share = weights[micro.start : micro.stop].to(sums.device)
            yield self.weight * (sums / counts.clamp(min=1) * share).sum() / total


def rehearsal_objective(objective: BatchObjective | None, protection: BaseProtection, own: int,
                        rehearsed: int) -> BatchObjective | None:
    """The objective of ``own`` examples followed by ``rehearsed`` of the base model's answers, under ``protection``
    (``objective``: the own examples' objective; None: weighted SFT)."""
    if not rehearsed:
        return objective
    trained = protection.method is BaseProtectionMethod.SELF_REHEARSAL
    if protection.kl_weight > 0 or not trained:
        return BaseKlObjective.over_rehearsal(objective or WeightedSft(), own, rehearsed, protection.kl_weight,
                                              trained=trained)
    return objective.extended(rehearsed) if objective is not None else None
