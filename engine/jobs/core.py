"""The job core's types: states, progress, failures and the events every kind of job records."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    PREPARING = "PREPARING"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class JobProgress:
    completed_steps: int = 0
    total_steps: int = 0
    eta_seconds: float | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.completed_steps / self.total_steps) if self.total_steps else 0.0


@dataclass(frozen=True)
class JobFailure:
    """The error a job ended with: a status code name (e.g. "INVALID_ARGUMENT"), reason and message."""

    code: str
    reason: str
    message: str
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class StateChanged:
    previous: JobState | None
    state: JobState
    message: str = ""


@dataclass(frozen=True)
class Warned:
    code: str
    message: str


@dataclass(frozen=True)
class Failed:
    failure: JobFailure


@dataclass(frozen=True)
class JobEvent:
    sequence: int
    time: datetime
    payload: Any  # typed per kind of job
