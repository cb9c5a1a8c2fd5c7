"""How a run's examples become optimiser steps, micro-batches and forward passes.

An optimiser step takes ``batch_size * gradient_accumulation_steps`` examples of the epoch's order; it runs
as ``gradient_accumulation_steps`` micro-batches of ``batch_size`` examples, one forward and backward pass
each, whose gradients add up to the step's (the objectives scale each micro-batch's share, so accumulated
gradients equal one big batch's). How a micro-batch is laid out is the run's :class:`Batching`:

* ``packing: true`` (the default): the micro-batch's examples packed into one row, on the first attention
  path that isolates them in this model (``engine.training.attention``); same losses and gradients as
  padded batches, without computing padding.
* ``packing: true`` on a model where no path isolates the examples: padded batches of similar lengths
  (length-grouped order), with a warning.
* ``packing: false``: padded batches in random order, as before packing existed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from engine.training.attention import choose_attention, packed_attention
from engine.training.datasets import EncodedExample
from engine.training.models import DevicePlan
from engine.training.packing import ExampleForward, PackedForward, PaddedForward


@dataclass(frozen=True)
class StepBatch:
    """The examples of one optimiser step and how they split into micro-batches."""

    examples: Sequence[EncodedExample]
    indices: Sequence[int]  # their positions in the run's data (for per-example labels such as KTO's)
    micro_size: int

    @property
    def micro_batches(self) -> list[range]:
        return [range(start, min(start + self.micro_size, len(self.examples)))
                for start in range(0, len(self.examples), self.micro_size)]

    @property
    def real_tokens(self) -> int:
        """Every token of the step's rows, prompt and targets (padding is not a row's): ``tokens_per_second``."""
        return sum(len(e.input_ids) for e in self.examples)


@dataclass(frozen=True)
class Rotation:
    """The last ``pool`` of a run's examples are trained ``per_epoch`` at a time, in rotation (see
    :class:`EpochRows`): self-rehearsal's answers of the base model, engine.continual.rehearsal."""

    pool: int
    per_epoch: int


class EpochRows:
    """Which of a run's examples each epoch trains: all of them, or, with a rotating pool, every other one and the
    next ``per_epoch`` of the pool in a seeded order of it. An epoch then costs ``per_epoch`` of the pool whatever
    its size, and the epochs together go through all of it (the next epoch starts where this one stopped). A
    function of the epoch's number only, so a resumed run draws the same rows again."""

    def __init__(self, size: int, pool: Sequence[int] = (), per_epoch: int = 0, seed: int = 0) -> None:
        pooled = set(pool)
        self.fixed = [i for i in range(size) if i not in pooled]
        shuffled = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed)).tolist()
        self.pool = [pool[i] for i in shuffled]
        self.per_epoch = min(per_epoch, len(self.pool))

    @property
    def size(self) -> int:
        """Examples an epoch trains."""
        return len(self.fixed) + self.per_epoch

    def rows(self, epoch: int) -> list[int]:
        start = epoch * self.per_epoch
        return self.fixed + [self.pool[(start + j) % len(self.pool)] for j in range(self.per_epoch)]


@dataclass(frozen=True)
class Batching:
    forward: ExampleForward
    length_grouped: bool  # order each epoch by length groups (padded fallback) instead of at random
    description: str
    fallback_reason: str = ""  # why packing was asked for and not used

    def epoch_order(self, data: Sequence[EncodedExample], rows: Sequence[int], batch_size: int,
                    generator: torch.Generator) -> list[int]:
        """The order of an epoch training ``rows`` of ``data`` (indices into ``data``)."""
        return [rows[i] for i in self.order([data[i] for i in rows], batch_size, generator)]

    def order(self, data: Sequence[EncodedExample], batch_size: int, generator: torch.Generator) -> list[int]:
        if self.length_grouped:
            return length_grouped_order([len(e.input_ids) for e in data], batch_size, generator)
        return torch.randperm(len(data), generator=generator).tolist()

    @staticmethod
    def steps(data: Sequence[EncodedExample], order: Sequence[int], batch_size: int,
              accumulation: int) -> Iterator[StepBatch]:
        per_step = batch_size * accumulation
        for start in range(0, len(order), per_step):
            indices = order[start : start + per_step]
            yield StepBatch([data[i] for i in indices], indices, batch_size)


@contextlib.contextmanager
def batching(model: Any, data: Sequence[EncodedExample], *, packing: bool, pad_id: int,
             plan: DevicePlan) -> Iterator[Batching]:
    """The run's layout (see the module docstring), with its attention path in force for the duration."""
    if not packing:
        yield Batching(PaddedForward(pad_id, plan), length_grouped=False, description="padded")
        return
    attention = choose_attention(model, data, pad_id, plan)
    if attention is None:
        yield Batching(
            PaddedForward(pad_id, plan), length_grouped=True, description="padded, length-grouped",
            fallback_reason="no attention path of this model was shown to keep examples packed into one row apart",
        )
        return
    with packed_attention(model, attention):
        yield Batching(PackedForward(pad_id, plan), length_grouped=False,
                       description=f"packed ({attention.name.lower()} attention)")


def length_grouped_order(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[int]:
    """A random order whose consecutive ``batch_size`` examples have similar lengths (less padding).

    transformers' own grouping (``get_length_grouped_indices``, its Trainer's ``group_by_length``): random
    mega-batches of up to 50 batches, each sorted by length, the longest example first.
    """
    from transformers.trainer_pt_utils import get_length_grouped_indices

    # transformers leaves get_length_grouped_indices unannotated
    grouped = get_length_grouped_indices(list(lengths), batch_size, generator=generator)  # type: ignore[no-untyped-call]
    return [int(i) for i in grouped]
