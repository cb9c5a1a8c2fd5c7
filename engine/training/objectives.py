"""The default training objective: the weighted mean over examples of each example's token-mean loss.

An objective yields, micro-batch by micro-batch, that micro-batch's share of the step's loss; the shares sum
to the loss of the whole step, so gradients accumulated over micro-batches equal one big batch's. Every
objective reads only per-example quantities from an ``ExampleForward`` (engine.training.packing), so it is
the same whatever the batch layout.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from engine.training.batching import StepBatch
from engine.training.packing import ExampleForward


class WeightedSft:
    """sum_i w_i * mean_t nll_it / sum_i w_i over the step's examples that predict a target token."""

    def select(self, kept: Sequence[int]) -> WeightedSft:
        return self

    def extended(self, replayed: int) -> WeightedSft:
        return self

    @staticmethod
    def _weights(step: StepBatch) -> torch.Tensor:
        return torch.tensor([e.weight if e.predicted_token_count else 0.0 for e in step.examples],
                            dtype=torch.float32)

    def step_weight(self, step: StepBatch) -> float:
        return float(self._weights(step).sum())

    def step_losses(self, model: Any, step: StepBatch, forward: ExampleForward) -> Iterator[torch.Tensor]:
        weights = self._weights(step)
        # 0: a share of fillers only (engine.training.distributed.ShardedGroup): its losses are 0, not 0 / 0
        total = weights.sum() if weights.sum() > 0 else torch.ones(())
        for micro in step.micro_batches:
            sums, counts = forward(model, [step.examples[i] for i in micro])
            share = weights[micro.start : micro.stop].to(sums.device)
            yield (sums / counts.clamp(min=1) * share).sum() / total.to(sums.device)

