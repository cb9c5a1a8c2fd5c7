"""Domain types and ports of LoraControl (no gRPC here: the server converts these)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from engine.domain import BaseRetention, SuiteVerdict
from engine.jobs.core import JobFailure
from engine.lora.canary import CanaryDecision, CanaryOutcome, TrafficFigures, TrafficSplitState
from engine.lora.evaluation import Suite
from engine.serving.traffic import Tally


class OperationKind(enum.StrEnum):
    ACTIVATE = "ACTIVATE"
    ROLLBACK = "ROLLBACK"
    ENABLE = "ENABLE"
    DISABLE = "DISABLE"
    AUTO_ROLLBACK = "AUTO_ROLLBACK"
    RECONCILE = "RECONCILE"
    CANARY_START = "CANARY_START"  # the candidate passed the gate and takes its share
    CANARY_PROMOTE = "CANARY_PROMOTE"  # decided: the candidate becomes the active version
    CANARY_ROLLBACK = "CANARY_ROLLBACK"  # decided: worse, an error spike, or no evidence in time
    CANARY_ABORT = "CANARY_ABORT"  # no verdict: an operator, another operation, or the engine lost the candidate
    TRAFFIC_SPLIT = "TRAFFIC_SPLIT"  # a manual split set, changed or ended


def lora_name(base_model: str, version: str) -> str:
    """The versioned name an adapter is loaded under; a changed adapter never reuses a name."""
    return f"{base_model}@{version}"




@dataclass(frozen=True)
class TargetState:
    """What is persisted per serving target. ``pending_version`` marks an activation in progress."""

    target: str
    base_model: str
    enabled: bool = True
    active_version: str = ""
    previous_version: str = ""
    known_good_version: str = ""
    pending_version: str = ""


@dataclass(frozen=True)
class LoadedLora:
    lora_name: str
    version: str
    path: str


@dataclass(frozen=True)
class Retirement:
    """A version an operation replaced, kept loaded until ``due_time``: other serving processes may still route the
    alias to it, or stream from it. ``due``: that time has come, by the database's clock (which every serving process
    shares, so no host's clock decides alone)."""

    version: str
    due_time: datetime
    due: bool


@dataclass(frozen=True)
class OperationRecord:
    kind: OperationKind
    version: str
    actor: str
    reason: str
    start_time: datetime
    duration_seconds: float
    phases: tuple[tuple[str, float], ...] = ()
    error: JobFailure | None = None
    gate: EvalSummary | None = None  # the gate's decision, when the operation ran it
    traffic: TrafficFigures | None = None  # both sides' figures, when the operation ended or changed a split


@dataclass(frozen=True)
class LoraStatus:
    target: str
    base_model: str
    enabled: bool
    active_version: str
    previous_version: str
    known_good_version: str
    alias: str
    loaded: tuple[LoadedLora, ...]
    last_operation: OperationRecord | None
    serving_reachable: bool
    gateway_url: str = ""
    split: TrafficSplitState | None = None  # the traffic split in force, with its figures
    last_canary: CanaryOutcome | None = None  # how the latest canary ended


@dataclass(frozen=True)
class EvalSummary:
    """The gate's decision on a candidate against a baseline: every suite's verdict, and the totals."""

    suite_digest: str  # over the suites scored
    version: str
    baseline_version: str  # "" means the base model
    metrics: tuple[tuple[str, float], ...]  # every suite's, named "<suite>.<metric>"
    regressions: int
    passed: bool
    failed_checks: tuple[str, ...]
    report_uris: tuple[str, ...]
    time: datetime
    suites: tuple[SuiteVerdict, ...] = ()
    id: str = ""  # the evaluation's, under the version: its reports are stored by it
    basis: str = ""  # engine.lora.evaluation.evaluation_basis: what else the verdict rests on ("" before it was kept)


@dataclass(frozen=True)
class FetchedAdapter:
    """An adapter version verified (sha256) and unpacked into a local PEFT directory."""

    base_model: str
    version: str
    path: Path
    sha256: str = ""


@dataclass(frozen=True)
class FeedbackCounts:
    positive: int = 0
    negative: int = 0

    @property
    def total(self) -> int:
        return self.positive + self.negative

    @property
    def negative_rate(self) -> float:
        return self.negative / self.total if self.total else 0.0


# ---- ports ----------------------------------------------------------------------------


class AdapterFetcher(Protocol):
    async def fetch(self, base_model: str, version: str, *, field_path: str = "version") -> FetchedAdapter:
        """Fetch and verify a version: NotFound, InvalidArgument (malformed), DataLoss (sha mismatch)."""
        ...

    async def record_eval(self, base_model: str, summary: EvalSummary) -> None:
        """Attach an eval result to the version's metadata."""
        ...

    async def lineage(self, base_model: str, version: str) -> list[str]:
        """The version and the versions it continues, back to the root (deleted ones included), the version first."""
        ...


class GateInputs(Protocol):
    """What the gate knows of versions besides their answers (engine.lora.suites)."""

    async def suites(self, base_model: str, candidate: str, baseline: str) -> list[Suite]:
        """The target and retention suites of ``candidate`` against ``baseline`` ("" = the base model)."""
        ...

    async def base_retention(self, base_model: str, version: str) -> BaseRetention | None:
        """What ``version`` kept of the base model's general knowledge, None if not measured."""
        ...


class FeedbackRates(Protocol):
    """Per-version feedback outcomes (the Feedback service's stats)."""

    async def counts(self, base_model: str, version: str, since: datetime) -> FeedbackCounts: ...

    async def named(self, since: datetime, *names: str, base_model: str = "") -> FeedbackCounts:
        """The ratings of answers served under any of ``names`` (``adapter_version`` as clients sent it), of the
        feedback on ``base_model`` ("" for every base model's) and feedback that recorded no base model."""
        ...


class RoutedElsewhere(Protocol):
    """Versions the gateway routes under other names than the alias (an online session's live alias, which may
    outlive its session): LoraControl never unloads them, in an operation or a reconciliation."""

    async def routed_versions(self, base_model: str) -> set[str]: ...


class LoraStateStore(Protocol):
    async def load(self, target: str, base_model: str) -> TargetState: ...

    async def save(self, state: TargetState) -> None:
        """Persist the state (and the registry's ACTIVE/KNOWN_GOOD rows) atomically."""
        ...

    async def record(self, target: str, op: OperationRecord) -> None: ...

    async def last_operation(self, target: str) -> OperationRecord | None: ...

    async def history(self, target: str, limit: int) -> list[OperationRecord]: ...

    async def save_eval(self, base_model: str, summary: EvalSummary) -> None: ...

    async def latest_eval(self, base_model: str, version: str, evaluation: str = "") -> EvalSummary | None:
        """The version's latest evaluation, or the one of id ``evaluation``; None if there is none."""
        ...

    async def evaluations(self, base_model: str, versions: Sequence[str], *, per_version: int) -> list[EvalSummary]:
        """The newest ``per_version`` evaluations of each of ``versions`` ("": the base model itself), newest first."""
        ...

    async def start_split(self, target: str, split: TrafficSplitState) -> TrafficSplitState:
        """Persist a split now in force (its id assigned); at most one per target is in force."""
        ...

    async def save_split_figures(self, split_id: int, figures: TrafficFigures) -> None: ...

    async def save_split_tally(self, split_id: int, process: str, active: Tally, candidate: Tally) -> None:
        """What the gateway of serving process ``process`` counted on each side of the split (its own row)."""
        ...

    async def split_tallies(self, split_id: int, *, besides: str) -> tuple[Tally, Tally]:
        """The sums, on each side, of what every serving process but ``besides`` counted for the split."""
        ...

    async def claim_decider(self, split_id: int, process: str, lease_seconds: float) -> bool:
        """Whether ``process`` decides the canary ``split_id`` for the next ``lease_seconds``: it did already (the
        lease renewed), nobody did, or the decider's lease ran out. Exactly one process holds it at a time."""
        ...

    async def release_decider(self, split_id: int, process: str) -> None:
        """``process`` no longer decides the canary ``split_id`` (it is stopping): the next process to claim the
        decider gets it at once, not once the lease runs out. A no-op unless ``process`` holds the lease."""
        ...

    async def end_split(self, split_id: int, figures: TrafficFigures, decision: CanaryDecision | None,
                        reason: str) -> None:
        """The split is no longer in force; a canary's ``decision`` and its ``reason`` are kept."""
        ...

    async def running_split(self, target: str) -> TrafficSplitState | None: ...

    async def canary_outcome(self, target: str, version: str = "") -> CanaryOutcome | None:
        """How the latest decided canary (of ``version``, when given) ended."""
        ...

    async def retire(self, target: str, version: str, grace_seconds: float) -> None:
        """Retire ``version``: due ``grace_seconds`` from now, replacing an earlier retirement of it even when that
        one was due later (the version served again in between: its grace starts over). Operations call it holding
        the target's lock, so the latest retirement is the one kept."""
        ...

    async def postpone(self, target: str, versions: Sequence[str], grace_seconds: float) -> None:
        """Make the retirements of ``versions`` (those there are) due no sooner than ``grace_seconds`` from now: a
        serving process still streaming from them keeps them loaded. A later due time stays."""
        ...

    async def retirements(self, target: str) -> list[Retirement]:
        """The target's retirements not yet carried out, the soonest due first."""
        ...

    async def retired(self, target: str, version: str) -> None:
        """The retirement of ``version`` is over (unloaded, or needed again): forget it."""
        ...

    def serialised(self, target: str) -> AbstractAsyncContextManager[None]:
        """An async context manager that holds a lock on ``target`` across processes."""
        ...


@dataclass
class Phases:
    """Durations of an operation's phases, in order."""

    items: list[tuple[str, float]] = field(default_factory=list)

    def add(self, name: str, seconds: float) -> None:
        self.items.append((name, seconds))
