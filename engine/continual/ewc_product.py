"""EWC on each LoRA pair's product D = B @ A instead of on the entries of A and B (``FisherSpace.LORA_PRODUCT``).

The model's output depends on A and B only through D (the layer adds ``scaling * D x``), and a diagonal
penalty on the entries of A and B does not see that coupling: many small moves of entries, each cheap
under the entry-wise penalty, add up in D. This penalty uses the diagonal Fisher of D (measured by
``engine.fisher.compute_fisher`` with ``space=LORA_PRODUCT``, keyed by the adapted module's name) and is
``(lambda / 2) * sum w (B @ A - D*)^2`` with ``w = F_D / mean(F_D)``, the mean normalisation of ``engine.ewc``.
A job opts in with ``ewc.fisher_space: LORA_PRODUCT``. In the forgetting benchmark it kept no more of the
earlier task than the entry-wise penalty at the lambdas chosen on validation, and more at a higher lambda at
a cost to the new task (docs/continual-learning.md), so the entries stay the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from engine.continual.ewc import (
    DEFAULT_PENALTY_NORMALIZATION,
    ModelBound,
    check_same_shapes,
    normalise_fisher,
    shapes_of,
)
from engine.continual.fisher import Diagonal, space_shapes, trainable_parameters
from engine.domain import FisherSpace
from engine.training.sharding import whole

CHUNK_ELEMENTS = 1 << 19  # products per chunk: about 2 MB of float32, so a chunk's passes stay in cache
Chunk = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
Pairs = list[tuple[list[torch.Tensor], list[torch.Tensor]]]  # per group: its pairs' B tensors and A tensors


def _added(terms: list[torch.Tensor]) -> torch.Tensor:
    """terms[0] + terms[1] + ..., in order."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


class WeightedProductDrift(torch.autograd.Function):
    """``scale * sum w (B @ A - D*)^2`` over stacked pairs ``b`` [n, out, r], ``a`` [n, r, in], in cache-sized
    chunks (``scale`` is a float: lambda / 2 for the penalty, 1 for the plain weighted drift).

    One autograd node, whatever the number of pairs; the backward recomputes ``B @ A`` instead of keeping
    every product (26.5M floats for SmolLM2's q/k/v/o) alive between forward and backward.
    """

    @staticmethod
    def _chunks(b: torch.Tensor, a: torch.Tensor, w: torch.Tensor, anchor: torch.Tensor) -> list[Chunk]:
        """(b, a, w, anchor) in chunks of about CHUNK_ELEMENTS products; the tensors themselves if all fit."""
        step = max(1, CHUNK_ELEMENTS // (w.shape[1] * w.shape[2]))
        if step >= w.shape[0]:
            return [(b, a, w, anchor)]
        return list(zip(torch.split(b, step), torch.split(a, step), torch.split(w, step), torch.split(anchor, step),
                        strict=True))

    # ``ctx`` is torch's open context object (typed Any by torch): forward keeps ``scale`` on it for backward.
    @staticmethod
    def forward(ctx: Any, b: torch.Tensor, a: torch.Tensor, w: torch.Tensor, anchor: torch.Tensor,
                scale: float = 1.0) -> torch.Tensor:
        ctx.save_for_backward(b, a, w, anchor)
        ctx.scale = scale
        total = _added([torch.baddbmm(d, b_, a_, beta=-1).square_().mul_(w_).sum()
                        for b_, a_, w_, d in WeightedProductDrift._chunks(b, a, w, anchor)])
        return total.mul_(scale) if scale != 1.0 else total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None, None]:
        grad_b: list[torch.Tensor] = []
        grad_a: list[torch.Tensor] = []
        for b, a, w, anchor in WeightedProductDrift._chunks(*ctx.saved_tensors):
            g = torch.baddbmm(anchor, b, a, beta=-1).mul_(w).mul_(2 * ctx.scale * grad)  # d/dD
            grad_b.append(torch.bmm(g, a.transpose(1, 2)))
            grad_a.append(torch.bmm(b.transpose(1, 2), g))
        if len(grad_b) == 1:
            return grad_b[0], grad_a[0], None, None, None
        return torch.cat(grad_b), torch.cat(grad_a), None, None, None


class ProductEwcPenalty:
    """``engine.training.Penalty``: (lambda/2) * sum_D w (B @ A - D*)^2 over the LoRA pairs.

    Pairs of one shape are stacked and go through :class:`WeightedProductDrift` together (two groups for
    q/k/v/o of a model with grouped-query attention), so a step adds a handful of autograd nodes.
    """

    space = FisherSpace.LORA_PRODUCT
    normalization = DEFAULT_PENALTY_NORMALIZATION

    def __init__(self, fisher: Diagonal, anchor: Diagonal, ewc_lambda: float) -> None:
        check_same_shapes(space_shapes(shapes_of(anchor), self.space), shapes_of(fisher),
                          what="the Fisher snapshot", reason="FISHER_SHAPE_MISMATCH")
        self.raw_fisher = fisher
        self.ewc_lambda = float(ewc_lambda)
        weights = normalise_fisher(fisher, self.normalization)
        by_shape: dict[tuple[int, ...], list[str]] = {}
        for prefix in weights:
            rank = anchor[f"{prefix}.lora_A.weight"].shape[0]
            by_shape.setdefault((*weights[prefix].shape, rank), []).append(prefix)
        # (prefixes, stacked weights [n, out, in], stacked anchor products B* @ A* [n, out, in])
        self._groups = [
            (prefixes, torch.stack([weights[p] for p in prefixes]),
             torch.bmm(*(torch.stack([anchor[f"{p}.lora_{side}.weight"].float() for p in prefixes])
                         for side in ("B", "A"))))
            for prefixes in by_shape.values()
        ]
        self._bound: ModelBound[Pairs] = ModelBound()

    def _sum(self, pairs: Pairs, scale: float = 1.0) -> torch.Tensor:
        terms: list[torch.Tensor] = []
        for (bs, as_), (_, w, anchor) in zip(pairs, self._groups, strict=True):
            b, a = torch.stack(bs).float(), torch.stack(as_).float()  # .float(): no copy when already float32
            terms.append(WeightedProductDrift.apply(  # type: ignore[no-untyped-call]  # torch leaves apply unannotated
                b, a, w.to(a.device), anchor.to(a.device), scale))
        return _added(terms)

    def _pairs(self, tensors: Mapping[str, torch.Tensor]) -> Pairs:
        """Per group, its pairs' B and A tensors taken from ``tensors`` (by canonical name), in group order."""
        return [([tensors[f"{p}.lora_B.weight"] for p in ps], [tensors[f"{p}.lora_A.weight"] for p in ps])
                for ps, _, _ in self._groups]

    def weighted_sum(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """sum_D w (B @ A - D*)^2 over LoRA tensors by canonical name (live parameters or a saved adapter)."""
        return self._sum(self._pairs(tensors))

    def _bind(self, model: nn.Module) -> Pairs:
        """The model's pairs, with the Fisher and the anchor moved to their device."""
        params = trainable_parameters(model)
        check_same_shapes({p: tuple(w.shape[1:]) for ps, w, _ in self._groups for p in ps},
                          space_shapes(shapes_of(params), self.space),
                          what="the Fisher snapshot", reason="FISHER_SHAPE_MISMATCH")
        device = next(iter(params.values())).device  # once, not a copy of every weight per step
        self._groups = [(ps, w.to(device), anchor.to(device)) for ps, w, anchor in self._groups]
        return self._pairs(params)

    def __call__(self, model: nn.Module) -> torch.Tensor:
        pairs = self._bound.of(model, self._bind)
        # B @ A needs whole rows of B and the whole of A: on a sharded model (engine.training.sharding) every
        # process gathers the LoRA pairs (a few MB) and computes the same penalty, its gradient sliced back
        # to each process's shards.
        pairs = [([whole(b) for b in bs], [whole(a) for a in as_]) for bs, as_ in pairs]
        return self._sum(pairs, 0.5 * self.ewc_lambda)
