"""What one training run is given (:class:`TrainingRun`) and gives back (:class:`TrainingResult`), and the interfaces
of what it may be given: a penalty on the adapter's weights (EWC), an objective in place of weighted SFT (KTO, the
KL term to the base model), a probe of the base model's knowledge, and the processes it trains with
(engine.training.distributed). engine.training.recipe runs it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from engine.domain import BaseRetention, DatasetSummary, Example
from engine.jobs.ports import CancelToken, ProgressSink
from engine.training.batching import Rotation, StepBatch
from engine.training.models import DevicePlan
from engine.training.packing import ExampleForward
from engine.training.run_state import Checkpointing
from engine.training.spec import TrainingJobSpec


class Penalty(Protocol):
    """A regulariser over the trainable parameters (e.g. EWC), added to the task loss every step."""

    def __call__(self, model: torch.nn.Module) -> torch.Tensor: ...


class AddedPenalties:
    """Penalties added up (EWC against a parent and EWC against the base model, engine.continual.base_ewc)."""

    def __init__(self, *parts: Penalty) -> None:
        self.parts = parts

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        total = self.parts[0](model)
        for part in self.parts[1:]:
            total = total + part(model)
        return total


class BatchObjective(Protocol):
    """An objective replacing the weighted SFT loss (e.g. engine.kto.KtoObjective), per-example aware."""

    def select(self, kept: list[int]) -> BatchObjective:
        """The objective over the examples at positions ``kept`` of ``run.examples``, renumbered 0..n-1."""
        ...

    def extended(self, replayed: int) -> BatchObjective:
        """The objective over ``run.examples`` followed by ``replayed`` examples of earlier versions (replay),
        each a target to keep producing."""
        ...

    def step_losses(self, model: Any, step: StepBatch, forward: ExampleForward) -> Iterator[torch.Tensor]:
        """Each micro-batch's share of the step's task loss in turn (the shares sum to it); the caller
        backpropagates one before asking for the next. ``step.indices`` are positions in ``run.examples``."""
        ...

    def step_weight(self, step: StepBatch) -> float:
        """What the step's loss is an average over (its examples' total weight, or their number): the weight
        of one process's share of a step when several train it together (:class:`DataParallel`)."""
        ...


class KnowledgeProbe(Protocol):
    """Measures what a trained model kept of its base model's knowledge (engine.continual.base_knowledge)."""

    def measure(self, model: Any, tokenizer: Any, plan: DevicePlan, *, base_model_dir: Path, quantization: str,
                step: int, sink: ProgressSink, cancel: CancelToken) -> BaseRetention | None:
        """Base retention of ``model`` (None when it cannot be measured: the job is told why)."""
        ...


class DataParallel(Protocol):
    """One of several processes training one adapter together (engine.training.distributed): each takes a share
    of every step's examples; their gradients are averaged, weighted by what each share's loss averages over,
    so the step is the one a single process would take on all of them."""

    @property
    def is_main(self) -> bool:
        """The process that reports, checkpoints and saves (the others compute only)."""
        ...

    def shard(self, step: StepBatch) -> StepBatch:
        """This process's share of a step's examples."""
        ...

    def agree_to_stop(self, cancel: CancelToken) -> None:
        """Cancel ``cancel`` when any process was asked to stop: all stop at the same step."""
        ...

    def loss_scale(self, weight: float) -> float:
        """What this process's share of a step's loss (an average over ``weight``) is multiplied by before its
        backward pass (1 unless the model's own hooks combine gradients: a sharded model's)."""
        ...

    def sync_gradients(self, params: Sequence[torch.nn.Parameter], weight: float, task_loss: float) -> float:
        """Replace every process's gradients by their weighted mean; the step's task loss, likewise averaged."""
        ...

    def agree(self, flag: bool) -> bool:
        """Whether ``flag`` holds in any process (all get the same answer)."""
        ...


@dataclass(frozen=True)
class TrainingRun:
    spec: TrainingJobSpec
    base_model_dir: Path
    examples: list[Example]
    output_dir: Path
    eval_examples: list[Example] = field(default_factory=list)  # the eval split: never trained on, its loss reported
    parent_adapter_dir: Path | None = None
    penalty: Penalty | None = None
    objective: BatchObjective | None = None  # None: weighted SFT
    # The eval split's objective (over ``eval_examples``, with their own labels, e.g. KTO's): what its reported loss
    # is. None: weighted SFT. It must be the task objective of ``objective`` (KTO for a KTO job).
    eval_objective: BatchObjective | None = None
    checkpointing: Checkpointing | None = None
    parallel: DataParallel | None = None  # None: this process trains alone
    probe: KnowledgeProbe | None = None  # measures base retention after training (None: not measured)
    rotation: Rotation | None = None  # the last examples are a pool trained a few at a time (None: all, every epoch)


@dataclass(frozen=True)
class TrainingResult:
    adapter_dir: Path
    steps: int
    final_loss: float  # the last optimiser step's loss (a single, often small, batch)
    final_task_loss: float  # the last optimiser step's task loss
    dataset: DatasetSummary
    device: str
    base_retention: BaseRetention | None = None
    eval_loss: float | None = None  # the objective's loss on the eval split (None: the run has none)
    # The job's train loss (what the version it publishes records as Adapter.train_loss): the ``train_end``
    # evaluation's, the task objective's loss (KTO's for a KTO job) on the examples every epoch trains measured
    # after the last step; when that was not measured (no such examples), the mean task loss of the last epoch's
    # steps. NaN: neither is known.
    train_loss: float = math.nan
