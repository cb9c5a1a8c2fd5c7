"""Canary rollouts and manual traffic splits: the policy, the figures, the decision, and the loop that decides.

A canary sends ``policy.share`` of the gateway alias's requests to a candidate version (which passed the
forgetting-aware gate first, as an activation must) and compares the two sides from its start, every
``check_interval_seconds``:

- an **error spike** rolls back at any time: the candidate's error rate reaches ``error_spike`` over at least
  ``error_spike_min_requests`` requests;
- once the candidate has served ``min_requests`` and ``duration_seconds`` has passed, and each side has at least
  ``min_feedback`` ratings, it is **promoted** when its negative-feedback rate is at most the active version's plus
  ``feedback_margin`` and its error rate at most the active's plus ``error_margin``; else it is **rolled back**;
- without that evidence after ``max_duration_seconds`` (0: no limit) it is rolled back too: a candidate is not
  promoted on no evidence.

Requests, errors and latency are the gateway's counts for each side (engine/serving/traffic.py); ratings are the
feedback events whose ``adapter_version`` is the version or its serving name (``<base>@<version>``), through the
``FeedbackRates`` port, counted since the canary started. A canary is *aborted* (no verdict on the candidate) by
an operator, by another operation that changes what the alias serves (activate, rollback, enable, disable), or when
the serving engine loses the candidate (engine/serving/gateway.py fails its requests over to the active version).
"""

from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Protocol, TypeAlias

from engine.errors import ViolationCollector
from engine.periodic import Periodic
from engine.serving.traffic import Tally
from engine.thresholds import at_least, at_most

log = logging.getLogger(__name__)

ACTOR = "canary"  # the actor of the decisions the loop takes
_YEAR = 365 * 86_400.0


class CanaryDecision(enum.StrEnum):
    PROMOTED = "PROMOTED"
    ROLLED_BACK = "ROLLED_BACK"
    ABORTED = "ABORTED"


class SplitKind(enum.StrEnum):
    CANARY = "CANARY"  # decided by the policy
    MANUAL = "MANUAL"  # an A/B test: no decision, ended by the operator


@dataclass(frozen=True)
class CanaryPolicy:
    share: float = 0.1
    min_requests: int = 100  # candidate requests before a decision
    duration_seconds: float = 0.0  # least time before a decision
    max_duration_seconds: float = 86_400.0  # no evidence by then: rolled back; 0 = no limit
    feedback_margin: float = 0.05  # how much higher the candidate's negative-feedback rate may be
    error_margin: float = 0.01  # how much higher its error rate may be
    min_feedback: int = 20  # ratings each side needs before a decision
    error_spike: float = 0.5  # candidate error rate that rolls back at any time
    error_spike_min_requests: int = 10  # candidate requests before the spike counts
    check_interval_seconds: float = 10.0

    def check(self, prefix: str = "policy") -> None:
        """INVALID_ARGUMENT INVALID_CANARY_POLICY naming each bad field (``policy.<field>``)."""
        issues = ViolationCollector()
        for f in fields(self):
            value = getattr(self, f.name)
            issues.check(math.isfinite(value), f"{prefix}.{f.name.removesuffix('_seconds')}",
                         "must be a finite number")
        issues.raise_if_any("INVALID_CANARY_POLICY", "invalid canary policy")
        issues.check(0.0 < self.share < 1.0, f"{prefix}.share", "must be in (0, 1), e.g. 0.1 for 10%")
        issues.check(self.min_requests >= 0, f"{prefix}.min_requests", "must be >= 0")
        issues.check(0 <= self.duration_seconds <= _YEAR, f"{prefix}.duration", "must be in [0, 365 days]")
        issues.check(self.min_requests > 0 or self.duration_seconds > 0, f"{prefix}.min_requests",
                     "set min_requests or duration (or both): a canary decides on some evidence")
        issues.check(self.max_duration_seconds == 0 or self.max_duration_seconds >= self.duration_seconds,
                     f"{prefix}.max_duration", "must be 0 (no limit) or at least duration")
        issues.check(0 <= self.max_duration_seconds <= _YEAR, f"{prefix}.max_duration", "must be in [0, 365 days]")
        for name in ("feedback_margin", "error_margin"):
            issues.check(0.0 <= getattr(self, name) <= 1.0, f"{prefix}.{name}", "must be in [0, 1]")
        issues.check(self.min_feedback >= 0, f"{prefix}.min_feedback", "must be >= 0")
        issues.check(0.0 < self.error_spike <= 1.0, f"{prefix}.error_spike", "must be in (0, 1]")
        issues.check(self.error_spike_min_requests >= 1, f"{prefix}.error_spike_min_requests", "must be >= 1")
        issues.check(0.0 < self.check_interval_seconds <= 86_400, f"{prefix}.check_interval",
                     "must be in (0, 1 day]")
        issues.raise_if_any("INVALID_CANARY_POLICY", "invalid canary policy")


@dataclass(frozen=True)
class VersionFigures:
    """What one side of a split served (the gateway's counts) and heard back (ratings) since the split began."""

    version: str
    requests: int = 0
    errors: int = 0
    failovers: int = 0
    mean_latency_seconds: float = 0.0
    positive: int = 0
    negative: int = 0

    @property
    def feedback(self) -> int:
        return self.positive + self.negative

    @property
    def negative_rate(self) -> float:
        return self.negative / self.feedback if self.feedback else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def tally(self) -> Tally:
        return Tally(self.requests, self.errors, self.failovers, self.mean_latency_seconds * self.requests)

    def describe(self) -> str:
        return (f"{self.version}: {self.requests} requests, {self.errors} errors ({self.error_rate:.1%}), "
                f"{self.failovers} failed over, {self.mean_latency_seconds * 1000:.0f} ms mean; "
                f"{self.feedback} ratings, {self.negative_rate:.1%} negative")


@dataclass(frozen=True)
class TrafficFigures:
    active: VersionFigures
    candidate: VersionFigures
    elapsed_seconds: float = 0.0

    def describe(self) -> str:
        return (f"candidate {self.candidate.describe()} | active {self.active.describe()} | "
                f"over {self.elapsed_seconds:.0f} s")


def figures_of(active: VersionFigures, candidate: VersionFigures, tallies: tuple[Tally, Tally],
               elapsed_seconds: float) -> TrafficFigures:
    """``active`` and ``candidate`` (their ratings) with the gateway's ``tallies`` (active, candidate)."""
    def side(f: VersionFigures, t: Tally) -> VersionFigures:
        return VersionFigures(f.version, t.requests, t.errors, t.failovers, t.mean_seconds, f.positive, f.negative)

    return TrafficFigures(side(active, tallies[0]), side(candidate, tallies[1]), elapsed_seconds)


@dataclass(frozen=True)
class CanaryOutcome:
    """How a canary ended: its decision, why (with the figures in words), and the figures."""

    version: str
    decision: CanaryDecision
    reason: str
    figures: TrafficFigures
    time: datetime


@dataclass(frozen=True)
class TrafficSplitState:
    """A traffic split in force (persisted: a restarted server resumes it)."""

    id: int  # the store's; 0 before it is stored
    kind: SplitKind
    active_version: str
    candidate_version: str
    share: float
    start_time: datetime
    actor: str
    reason: str
    policy: CanaryPolicy | None = None  # a canary's
    figures: TrafficFigures | None = None  # requests as counted now; ratings as of the last check


CanaryState: TypeAlias = TrafficSplitState  # a split of kind CANARY


def decide(policy: CanaryPolicy, figures: TrafficFigures) -> tuple[CanaryDecision, str] | None:
    """The policy's decision on ``figures``, with its reason; None while it waits for evidence."""
    a, c = figures.active, figures.candidate
    said = figures.describe()
    if c.requests >= policy.error_spike_min_requests and at_least(c.error_rate, policy.error_spike):
        return CanaryDecision.ROLLED_BACK, (
            f"error spike: the candidate failed {c.error_rate:.1%} of {c.requests} requests "
            f"(spike threshold {policy.error_spike:.1%}); {said}")
    missing = []
    if c.requests < policy.min_requests:
        missing.append(f"{c.requests} of {policy.min_requests} candidate requests")
    if figures.elapsed_seconds < policy.duration_seconds:
        missing.append(f"{figures.elapsed_seconds:.0f} of {policy.duration_seconds:.0f} s")
    for side, name in ((c, "candidate"), (a, "active")):
        if side.feedback < policy.min_feedback:
            missing.append(f"{side.feedback} of {policy.min_feedback} ratings of the {name}")
    if missing:
        if policy.max_duration_seconds and figures.elapsed_seconds >= policy.max_duration_seconds:
            return CanaryDecision.ROLLED_BACK, (
                f"not enough evidence after {policy.max_duration_seconds:.0f} s: {', '.join(missing)}; {said}")
        return None
    worse = []
    if not at_most(c.negative_rate, a.negative_rate + policy.feedback_margin):
        worse.append(f"negative feedback {c.negative_rate:.1%} > the active's {a.negative_rate:.1%} "
                     f"+ margin {policy.feedback_margin:.1%}")
    if not at_most(c.error_rate, a.error_rate + policy.error_margin):
        worse.append(f"error rate {c.error_rate:.1%} > the active's {a.error_rate:.1%} "
                     f"+ margin {policy.error_margin:.1%}")
    if worse:
        return CanaryDecision.ROLLED_BACK, f"worse than the active version: {'; '.join(worse)}; {said}"
    return CanaryDecision.PROMOTED, (
        f"not worse than the active version: negative feedback {c.negative_rate:.1%} vs {a.negative_rate:.1%} "
        f"(margin {policy.feedback_margin:.1%}), errors {c.error_rate:.1%} vs {a.error_rate:.1%} "
        f"(margin {policy.error_margin:.1%}); {said}")


class CanaryHost(Protocol):
    """What the loop needs of the controller."""

    async def check_canary(self, split_id: int) -> bool:
        """Count, decide and act on the canary ``split_id``; False once it has ended."""
        ...


class CanaryLoop:
    """The background decision loop of one canary, in the serving process: ends once the canary has."""

    def __init__(self, host: CanaryHost, split_id: int, interval_seconds: float) -> None:
        self.split_id = split_id
        self._periodic = Periodic(f"canary-{split_id}", lambda: host.check_canary(split_id), interval_seconds)

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        """Stop the loop; a no-op from the loop's own task (the decision it is acting on ends it anyway)."""
        await self._periodic.stop()
