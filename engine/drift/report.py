"""What a drift report says, and how it is computed (plain dataclasses; the server converts them)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

# What the statistic is, named in every report (and in docs/drift.md).
STATISTIC = "mmd2_rbf_base_model_embeddings"


class DriftOutcome(enum.StrEnum):
    NO_DRIFT = "NO_DRIFT"  # tested: the incoming prompts look like the training data
    DRIFTED = "DRIFTED"  # tested: the p-value is at most the significance (the statistic is over the threshold)
    NO_REFERENCE = "NO_REFERENCE"  # nothing to compare with: no active version, or its training data is unknown
    TOO_FEW_SAMPLES = "TOO_FEW_SAMPLES"  # fewer incoming or reference prompts than min_samples: not tested


@dataclass(frozen=True)
class DriftConfig:
    """How reports are computed (settings drift_*)."""

    window: timedelta = timedelta(days=30)  # the window of a request that names none
    max_window: timedelta = timedelta(days=366)
    significance: float = 0.05  # the permutation test's level: drifted means p-value <= this
    permutations: int = 500
    max_samples: int = 256  # prompts taken of each side, chosen by a stable hash (the same ones every time)
    min_samples: int = 20  # fewer on either side: TOO_FEW_SAMPLES, not tested
    moved_examples: int = 10  # incoming prompts farthest from the reference, in the report
    buckets: int = 10  # of the negative-feedback rate series over the window
    max_tokens: int = 128  # of a prompt embedded (longer ones are cut)
    seed: int = 0  # of the permutations: the same data gives the same report
    max_evaluations: int = 200  # evaluation records in the report's series (the newest)


@dataclass(frozen=True)
class MovedPrompt:
    """An incoming prompt and how far it is from the training data: the distance of its embedding to the nearest
    reference prompt's (unit vectors: 0 same, 2 opposite)."""

    prompt: str
    distance: float
    nearest_reference: str


@dataclass(frozen=True)
class FeedbackBucket:
    """Explicit feedback in [start, end): positive (thumbs up, ratings at or over the positive minimum) and negative
    (thumbs down, ratings at or under the negative maximum)."""

    start: datetime
    end: datetime
    positive: int
    negative: int

    @property
    def negative_rate(self) -> float:
        total = self.positive + self.negative
        return self.negative / total if total else 0.0


@dataclass(frozen=True)
class EvalPoint:
    """One recorded evaluation of a version of the base model, or of the base model itself (LoraControl's gate or an
    evaluation job)."""

    time: datetime
    version: str  # "": the base model itself
    baseline_version: str
    passed: bool
    metrics: tuple[tuple[str, float], ...]
    evaluation_id: str = ""


@dataclass(frozen=True)
class TwoSampleTest:
    """The two-sample test: the statistic, its p-value, and the threshold: the statistic over it is exactly the
    p-value at most the significance (engine.drift.statistic.decision_threshold)."""

    statistic: float
    threshold: float
    p_value: float
    permutations: int
    moved: tuple[MovedPrompt, ...] = ()


@dataclass(frozen=True)
class DriftReport:
    base_model: str
    window_start: datetime
    window_end: datetime
    outcome: DriftOutcome
    reference_version: str  # the active version compared with ("" when none is active)
    statistic: float  # 0 when not tested
    threshold: float  # 0 when not tested; drifted means p_value <= significance, and so statistic > threshold
    p_value: float  # 1 when not tested
    significance: float
    permutations: int
    incoming: int  # incoming prompts tested (at most max_samples)
    reference: int  # reference prompts tested (at most max_samples)
    incoming_total: int  # interactions with a prompt in the window
    reference_total: int  # prompts the reference version was trained on
    moved: tuple[MovedPrompt, ...]
    negative_rate: tuple[FeedbackBucket, ...]
    evaluations: tuple[EvalPoint, ...]
    note: str = ""
    seconds: float = 0.0
    statistic_name: str = STATISTIC

    @property
    def drifted(self) -> bool:
        return self.outcome is DriftOutcome.DRIFTED

    @property
    def window(self) -> timedelta:
        return self.window_end - self.window_start
