"""Elastic Weight Consolidation over LoRA parameters: the penalty, online accumulation, replay mixing.

Penalty: ``(lambda / 2) * sum_i w_i (theta_i - theta*_i)^2`` over the trainable (LoRA) parameters, where
``theta*`` are the parent adapter's weights and ``w`` the diagonal Fisher of the per-sequence
log-likelihood (``engine.fisher.NORMALIZATION``), scaled as ``PenaltyNormalization`` says:

- ``MEAN`` (the default): ``w = F / mean(F)``. The Fisher only says which parameters matter *relative to
  each other*; lambda is the strength of the anchor in the units of a plain L2 anchor
  ``(lambda/2) * ||theta - theta*||^2`` (which ``w = 1`` would be). Why: the absolute scale of the
  empirical Fisher of an adapter that has memorised its data vanishes with its training loss (per-sample
  gradients go to zero), so a raw-F lambda has no stable meaning; the relative importances survive.
- ``RAW``: ``w = F`` (textbook EWC; lambda in units of the per-sequence Fisher).

Snapshots always store the raw F; the scaling happens here, when the penalty is built. The task loss the
penalty is added to is the mean over examples of the token-mean NLL.

Online EWC (Schwarz et al. 2018): ``F_new = gamma * F_old + F_task`` with the anchor moved to the newest
parent, so importance from every earlier version keeps acting on later ones.
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

import torch
from torch import nn

from engine.continual.fisher import Diagonal, trainable_parameters
from engine.domain import FisherSpace
from engine.errors import FailedPrecondition
from engine.training.sharding import local_part, local_tensor, sum_over_shards

QUANTILES = (0.5, 0.9, 0.99)
T = TypeVar("T")


class PenaltyNormalization(StrEnum):
    """How the stored (raw) Fisher diagonal is scaled into the penalty's weights."""

    RAW = "raw"  # w = F
    MEAN = "mean"  # w = F / mean(F): mean weight 1, lambda in plain-L2-anchor units


DEFAULT_PENALTY_NORMALIZATION = PenaltyNormalization.MEAN


def normalise_fisher(fisher: Diagonal, normalization: PenaltyNormalization | str) -> Diagonal:
    """The penalty weights for ``fisher`` (a new mapping; the input is not modified).

    ``MEAN`` divides by the mean over *all* entries of all tensors (one scalar), so relative importances
    are kept exactly. An all-zero Fisher stays all zero (no importance anywhere means no penalty).
    """
    how = PenaltyNormalization(normalization)
    if how is PenaltyNormalization.RAW or not fisher:
        return {n: t.float() for n, t in fisher.items()}
    total = sum(float(t.double().sum()) for t in fisher.values())
    count = sum(t.numel() for t in fisher.values())
    mean = total / count if count else 0.0
    if mean <= 0.0:
        return {n: torch.zeros_like(t, dtype=torch.float32) for n, t in fisher.items()}
    return {n: (t.double() / mean).float() for n, t in fisher.items()}


def check_same_shapes(
    expected: Mapping[str, tuple[int, ...]], actual: Mapping[str, tuple[int, ...]], *, what: str, reason: str
) -> None:
    """Raise FailedPrecondition(reason) unless both name the same parameters with the same shapes."""
    missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
    wrong = sorted(n for n in set(expected) & set(actual) if tuple(expected[n]) != tuple(actual[n]))
    if missing or extra or wrong:
        sample = (missing or extra or wrong)[0]
        raise FailedPrecondition(
            reason,
            f"{what} does not match the adapter's LoRA parameters ({len(missing)} missing, {len(extra)} "
            f"unexpected, {len(wrong)} of another shape; e.g. {sample})",
            metadata={
                "missing": str(len(missing)), "unexpected": str(len(extra)), "shape_mismatch": str(len(wrong)),
            },
        )


def shapes_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {n: tuple(t.shape) for n, t in tensors.items()}


B = TypeVar("B")


class ModelBound(Generic[B]):
    """What a penalty derives from the model it is called with (its parameters, and what goes with them), kept
    while it is called with that model and derived again for another. The model is held by a weak reference: by
    its ``id()``, a model made where a freed one had been would pass for it, and its parameters go without the
    penalty's gradient. A copy (in another process: engine.training.distributed) holds nothing, and binds to its
    own model's parameters there."""

    def __init__(self) -> None:
        self._model: weakref.ref[nn.Module] | None = None
        self._value: B | None = None

    def of(self, model: nn.Module, bind: Callable[[nn.Module], B]) -> B:
        value = self._value
        if value is None or self._model is None or self._model() is not model:
            value = bind(model)
            self._value, self._model = value, weakref.ref(model)
        return value

    def __getstate__(self) -> dict[str, object]:
        return {"_model": None, "_value": None}


class EwcPenalty:
    """``engine.training.Penalty``: (lambda/2) * sum w (theta - theta*)^2, bound to the model it is called with
    (:class:`ModelBound`).

    ``fisher`` is the raw diagonal (kept as given in ``raw_fisher``); ``w`` is it scaled per
    ``normalization`` (see the module docstring).
    """

    space = FisherSpace.LORA_PARAMETERS

    def __init__(
        self, fisher: Diagonal, anchor: Diagonal, ewc_lambda: float,
        normalization: PenaltyNormalization | str = DEFAULT_PENALTY_NORMALIZATION,
    ) -> None:
        check_same_shapes(shapes_of(anchor), shapes_of(fisher), what="the Fisher snapshot",
                          reason="FISHER_SHAPE_MISMATCH")
        self.normalization = PenaltyNormalization(normalization)
        self.raw_fisher = fisher
        self.fisher = normalise_fisher(fisher, self.normalization)
        self.anchor = anchor
        self.ewc_lambda = float(ewc_lambda)
        self._bound: ModelBound[tuple[list[nn.Parameter], torch.Tensor, torch.Tensor]] = ModelBound()

    def _bind(self, model: nn.Module) -> tuple[list[nn.Parameter], torch.Tensor, torch.Tensor]:
        """The model's parameters in order, with F and theta* flattened to match their concatenation."""
        params = trainable_parameters(model)
        check_same_shapes(shapes_of(self.fisher), {n: tuple(p.shape) for n, p in params.items()},
                          what="the Fisher snapshot", reason="FISHER_SHAPE_MISMATCH")
        device = next(iter(params.values())).device
        # A sharded model's (engine.training.sharding): each process binds its shards' part of F and theta*.
        flat = [torch.cat([local_part(d[n].float().to(device), p).reshape(-1) for n, p in params.items()])
                for d in (self.fisher, self.anchor)]
        return list(params.values()), flat[0], flat[1]

    def __call__(self, model: nn.Module) -> torch.Tensor:
        # One concatenation and four element-wise ops, whatever the number of LoRA tensors (a loop over
        # 240 tensors costs ~1000 autograd nodes per step).
        params, fisher, anchor = self._bound.of(model, self._bind)
        drift = torch.cat([local_tensor(p).reshape(-1).float() for p in params]) - anchor
        # A sum of per-element terms: on shards, each process sums its own and the parts are added up.
        return sum_over_shards(0.5 * self.ewc_lambda * torch.dot(fisher * drift, drift), params[0])


def accumulate(old: Diagonal, new: Diagonal, gamma: float) -> Diagonal:
    """Online EWC: gamma * F_old + F_task (same parameter names and shapes required)."""
    check_same_shapes(shapes_of(new), shapes_of(old), what="the earlier Fisher snapshot",
                      reason="FISHER_SHAPE_MISMATCH")
    return {n: gamma * old[n].float() + new[n].float() for n in new}


@dataclass(frozen=True)
class DiagonalStats:
    sum: float
    max: float
    mean: float
    quantiles: tuple[tuple[float, float], ...]
    parameter_count: int


def diagonal_stats(diagonal: Diagonal, quantiles: Sequence[float] = QUANTILES) -> DiagonalStats:
    flat = torch.cat([t.reshape(-1).float() for t in diagonal.values()]) if diagonal else torch.zeros(1)
    # torch.quantile refuses very large inputs; a sorted copy answers every quantile exactly.
    ordered = flat.sort().values
    last = ordered.numel() - 1
    picks = tuple((q, float(ordered[round(q * last)])) for q in quantiles)
    return DiagonalStats(float(flat.sum()), float(flat.max()), float(flat.mean()), picks, int(flat.numel()))


def replay_count(new_examples: int, fraction: float, available: int) -> int:
    """Earlier examples to mix in so that they make up ``fraction`` of the combined set (capped)."""
    if fraction <= 0 or available <= 0:
        return 0
    return min(available, round(fraction * new_examples / (1.0 - fraction)))


def mix_replay(new: Sequence[T], earlier: Sequence[T], fraction: float, seed: int) -> tuple[list[T], int]:
    """``new`` plus a seeded sample of ``earlier`` (see :func:`replay_count`); returns (mixed, replayed)."""
    count = replay_count(len(new), fraction, len(earlier))
    picked = random.Random(seed).sample(list(earlier), count) if count else []
    return [*new, *picked], count
