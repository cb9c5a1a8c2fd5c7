"""What a training job needs from other contexts, as interfaces: the continual-learning planner, self-rehearsal.

``engine.continual.planner.EwcPlanner`` implements :class:`ContinualPlanner` and
``engine.continual.rehearsal.SelfRehearsal`` :class:`Rehearsal`; the composition root passes them to the training
runner, so training never imports the continual context (which builds on training).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from engine.domain import Example
from engine.jobs.ports import CancelToken, ProgressSink
from engine.registry.records import AdapterRecord
from engine.splits import SplitRule
from engine.training.base_kl import Reference
from engine.training.batching import Rotation
from engine.training.loading import LoadedModel
from engine.training.models import DevicePlan
from engine.training.run import Penalty
from engine.training.spec import EwcLineage, TrainingJobSpec

T = TypeVar("T")


@dataclass(frozen=True)
class PlanRequest:
    """A job continuing ``parent``: what the planner may use to anchor it."""

    spec: TrainingJobSpec
    parent: AdapterRecord
    parent_dir: Path  # the parent adapter, fetched and verified
    model_dir: Path  # the base model
    examples: list[Example]  # the job's own examples
    model: LoadedModel  # the job's one loaded model, with the parent's adapter attached (the anchor)
    in_worker: Callable[..., Awaitable[Any]]  # runs blocking work (a Fisher pass) in the job's worker thread
    sink: ProgressSink
    cancel: CancelToken
    # The rule the job held its eval split out by (None: it held nothing out). Replay adds only the earlier
    # examples it puts in the train split, so what the job holds out is never trained on, not even replayed.
    split: SplitRule | None = None


@dataclass(frozen=True)
class ContinualPlan:
    penalty: Penalty | None  # None: EWC disabled (replay only)
    examples: list[Example]  # the job's examples, then ``replayed`` examples of earlier versions
    replayed: int
    lineage: EwcLineage
    earlier: list[Example] = field(default_factory=list)  # the pool replay drew from (empty: no replay asked)


class ContinualPlanner(Protocol):
    async def check(self, spec: TrainingJobSpec, parent: AdapterRecord) -> None:
        """Create-time checks of the job's EWC settings against its parent (raise a typed error)."""
        ...

    async def plan(self, request: PlanRequest) -> ContinualPlan:
        """The penalty, the replay-mixed examples and the lineage of a continuation."""
        ...


@dataclass(frozen=True)
class RehearsalMix:
    examples: list[Example]  # the job's examples, then the base model's answers (a pool trained in rotation)
    rehearsed: int  # the answers an epoch trains: ``fraction`` of its examples
    pool: int  # the answers after the job's examples
    references: tuple[Reference, ...] = ()  # the base model's at each answer (engine.training.base_kl)

    @property
    def rotation(self) -> Rotation:
        return Rotation(self.pool, self.rehearsed)


class BaseEwc(Protocol):
    """EWC against the base model (``engine.continual.base_ewc.BaseEwc``): a job's penalty for EWC_BASE."""

    def penalty(self, ewc_lambda: float, *, model: Any, tokenizer: Any, plan: DevicePlan, base_model_dir: Path,
                quantization: str, max_seq_length: int, cancel: CancelToken) -> tuple[Penalty, int]:
        """The penalty, and the number of the base model's answers its factors were measured on."""
        ...


class Rehearsal(Protocol):
    """Self-rehearsal (``engine.continual.rehearsal.SelfRehearsal``): the base model's own answers to general
    prompts, mixed into a job's examples so that they make up ``fraction`` of each epoch's."""

    def mix(self, examples: Sequence[Example], fraction: float, *, model: Any, tokenizer: Any,
            plan: DevicePlan, base_model_dir: Path, quantization: str, max_seq_length: int,
            cancel: CancelToken) -> RehearsalMix: ...
