"""Batch layouts: what one forward pass over a list of encoded examples looks like, and its per-example losses.

Two layouts compute the same per-example quantities (the summed next-token loss over each example's target
tokens, and how many target tokens it predicts), so every objective is written once over them:

* :class:`PaddedForward`: one example per row, right-padded, with a padding mask and logits at every
  position. The layout of the seed method, kept as ``packing: false``.
* :class:`PackedForward`: the examples laid end to end in rows of at most ``row_tokens`` tokens (one row by
  default), position ids restarting at 0 for every example, so no pad is computed. Each example attends only
  to itself: the attention path (``engine.training.attention``) isolates the examples of a row. The LM head
  runs only where a target token is predicted (the model's own boolean ``logits_to_keep``).

The per-example reduction keeps each example's identity through packing: a position's example index says
whose loss it adds to, so example weights, KTO labels and anything else per example are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from engine.training.datasets import IGNORE_INDEX, Batch, EncodedExample, collate
from engine.training.models import DevicePlan


@dataclass(frozen=True)
class TargetLogits:
    """The logits at every position that predicts a target token, with the token each predicts and whose example
    it is. Two forward passes of one layout over the same examples (with and without the adapter) give the
    positions in the same order; per-example sums are the same in every layout."""

    logits: torch.Tensor  # [N, vocab], float32
    targets: torch.Tensor  # [N]
    owner: torch.Tensor  # [N] the example (0..count-1) each position belongs to
    count: int  # examples

    def per_example(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[count] sums of a per-position quantity ([N]) by example, and [count] the positions each has."""
        sums = torch.zeros(self.count, dtype=values.dtype, device=values.device)
        return sums.index_add(0, self.owner, values), torch.bincount(self.owner, minlength=self.count)

    def nll(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[count] summed next-token NLL over each example's target tokens, and [count] their counts."""
        return self.per_example(F.cross_entropy(self.logits, self.targets, reduction="none"))


class ExampleForward(Protocol):
    """One forward pass over ``examples``: ([n] summed target-token NLL, [n] predicted target-token counts)."""

    def __call__(self, model: Any, examples: Sequence[EncodedExample]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def target_logits(self, model: Any, examples: Sequence[EncodedExample]) -> TargetLogits:
        """The same forward pass, before the loss: the logits at the positions that predict a target token."""
        ...

    def context_logits(self, model: Any, examples: Sequence[EncodedExample],
                       context: Sequence[bool]) -> tuple[TargetLogits, TargetLogits]:
        """The same forward pass, with also the logits at the positions of the ``context`` examples that predict
        no target token (their prompt's and chat markup's next tokens, ``targets`` the token each predicts):
        (the target positions' logits, as :meth:`target_logits`, the context positions')."""
        ...


def per_example_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B] summed next-token NLL over each row's target tokens, and [B] their counts, of padded rows."""
    return padded_target_logits(logits, labels).nll()


def padded_target_logits(logits: torch.Tensor, labels: torch.Tensor) -> TargetLogits:
    """:class:`TargetLogits` of padded rows' logits ([B, T, vocab]) and labels ([B, T])."""
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    owner = torch.arange(len(labels), device=labels.device)[:, None].expand_as(targets)[mask]
    return TargetLogits(logits[:, :-1][mask].float(), targets[mask], owner, len(labels))


def _context_mask(next_ids: torch.Tensor, targets: torch.Tensor, owner: torch.Tensor,
                  context: Sequence[bool]) -> torch.Tensor:
    """Where a position predicts a token of its example (``next_ids``) that is no target, in a ``context`` example
    (``owner``: each position's example, -1 on padding)."""
    flagged = torch.tensor([*context, False], dtype=torch.bool, device=owner.device)  # [-1] -> the padding's False
    return (next_ids != IGNORE_INDEX) & (targets == IGNORE_INDEX) & flagged[owner]


def split_logits(logits: torch.Tensor, is_target: torch.Tensor, targets: torch.Tensor, next_ids: torch.Tensor,
                 owner: torch.Tensor, count: int) -> tuple[TargetLogits, TargetLogits]:
    """Logits kept at target and context positions ([N, vocab], in one order) as the two :class:`TargetLogits`."""
    logits = logits.float()
    return (TargetLogits(logits[is_target], targets[is_target], owner[is_target], count),
            TargetLogits(logits[~is_target], next_ids[~is_target], owner[~is_target], count))


class PaddedForward:
    """One example per row, right-padded to the longest, with a padding mask; logits at every position."""

    description = "padded"

    def __init__(self, pad_id: int, plan: DevicePlan) -> None:
        self.pad_id, self.plan = pad_id, plan

    def __call__(self, model: Any, examples: Sequence[EncodedExample]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.target_logits(model, examples).nll()

    def target_logits(self, model: Any, examples: Sequence[EncodedExample]) -> TargetLogits:
        batch, logits = self._forward(model, examples)
        return padded_target_logits(logits, batch.labels)

    def context_logits(self, model: Any, examples: Sequence[EncodedExample],
                       context: Sequence[bool]) -> tuple[TargetLogits, TargetLogits]:
        batch, logits = self._forward(model, examples)
        targets = batch.labels[:, 1:]
        next_ids = batch.input_ids[:, 1:].masked_fill(batch.attention_mask[:, 1:] == 0, IGNORE_INDEX)
        owner = torch.arange(len(examples), device=targets.device)[:, None].expand_as(targets)
        is_target = targets != IGNORE_INDEX
        keep = is_target | _context_mask(next_ids, targets, owner, context)
        return split_logits(logits[:, :-1][keep], is_target[keep], targets[keep], next_ids[keep], owner[keep],
                            len(examples))

    def _forward(self, model: Any, examples: Sequence[EncodedExample]) -> tuple[Batch, torch.Tensor]:
        batch = collate(examples, self.pad_id).to(self.plan.torch_device)
        with self.plan.autocast():
            return batch, model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


# ---- packing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackedBatch:
    """Examples laid end to end in rows; every tensor is [rows, width]."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor  # 0, 1, ... within each example, and again within a row's trailing padding
    targets: torch.Tensor  # the token a position predicts: the example's next label, IGNORE_INDEX where none
    next_ids: torch.Tensor  # the example's next input token, target or not; IGNORE_INDEX at its end and on padding
    example_index: torch.Tensor  # which of the packed examples a position belongs to; -1 on padding
    count: int  # examples packed

    def to(self, device: str) -> PackedBatch:
        return PackedBatch(self.input_ids.to(device), self.position_ids.to(device), self.targets.to(device),
                           self.next_ids.to(device), self.example_index.to(device), self.count)


def assign_rows(lengths: Sequence[int], row_tokens: int | None) -> list[list[int]]:
    """Indices of ``lengths`` grouped into rows of at most ``row_tokens`` tokens.

    ``None`` (or a budget that holds them all) gives one row, in order. Otherwise first-fit decreasing: the
    longest example first, each into the first row with room; an example longer than the budget gets a row
    of its own.
    """
    if row_tokens is None or sum(lengths) <= row_tokens:
        return [list(range(len(lengths)))]
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, room in enumerate(free):
            if lengths[i] <= room:
                rows[r].append(i)
                free[r] -= lengths[i]
                break
        else:
            rows.append([i])
            free.append(max(row_tokens - lengths[i], 0))
    return rows


def pack(examples: Sequence[EncodedExample], pad_id: int, row_tokens: int | None = None) -> PackedBatch:
    """Lay ``examples`` end to end in rows (see :func:`assign_rows`); rows are right-padded to the longest."""
    rows = assign_rows([len(e.input_ids) for e in examples], row_tokens)
    width = max(sum(len(examples[i].input_ids) for i in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    targets = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    next_ids = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    example_index = torch.full(shape, -1, dtype=torch.long)
    position_ids = torch.empty(shape, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            example = examples[i]
            n = len(example.input_ids)
            input_ids[r, at : at + n] = torch.tensor(example.input_ids, dtype=torch.long)
            targets[r, at : at + n - 1] = torch.tensor(example.labels[1:], dtype=torch.long)
            next_ids[r, at : at + n - 1] = torch.tensor(example.input_ids[1:], dtype=torch.long)
            example_index[r, at : at + n] = i
            position_ids[r, at : at + n] = torch.arange(n)
            at += n
        position_ids[r, at:] = torch.arange(width - at)
    return PackedBatch(input_ids, position_ids, targets, next_ids, example_index, len(examples))


class PackedForward:
    """Examples packed into rows; each attends only to itself through the model's current attention path.

    The caller sets that path (``engine.training.attention.packed_attention``); this class only lays out the
    inputs: position ids restarting per example and no padding mask, which is how transformers' attention
    paths (flash-attention varlen, the block-diagonal mask, and this package's per-example segments) know
    where one example ends.
    """

    def __init__(self, pad_id: int, plan: DevicePlan, row_tokens: int | None = None, description: str = "packed"):
        self.pad_id, self.plan, self.row_tokens, self.description = pad_id, plan, row_tokens, description

    def __call__(self, model: Any, examples: Sequence[EncodedExample]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.target_logits(model, examples).nll()

    def target_logits(self, model: Any, examples: Sequence[EncodedExample]) -> TargetLogits:
        batch = pack(examples, self.pad_id, self.row_tokens).to(self.plan.torch_device)
        keep = batch.targets != IGNORE_INDEX
        return TargetLogits(self._logits(model, batch, keep).float(), batch.targets[keep], batch.example_index[keep],
                            batch.count)

    def context_logits(self, model: Any, examples: Sequence[EncodedExample],
                       context: Sequence[bool]) -> tuple[TargetLogits, TargetLogits]:
        batch = pack(examples, self.pad_id, self.row_tokens).to(self.plan.torch_device)
        is_target = batch.targets != IGNORE_INDEX
        keep = is_target | _context_mask(batch.next_ids, batch.targets, batch.example_index, context)
        return split_logits(self._logits(model, batch, keep), is_target[keep], batch.targets[keep],
                            batch.next_ids[keep], batch.example_index[keep], batch.count)

    def _logits(self, model: Any, batch: PackedBatch, keep: torch.Tensor) -> torch.Tensor:
        """[keep.sum(), vocab] the logits at the ``keep`` positions, in order (the LM head runs only there)."""
        with self.plan.autocast():
            logits: torch.Tensor = model(
                input_ids=batch.input_ids, position_ids=batch.position_ids, logits_to_keep=keep, use_cache=False
            ).logits
        return logits.reshape(-1, logits.shape[-1])
