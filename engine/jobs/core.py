"""The job core's types: one generic job, its states, progress and failure, and the events every kind records.

A job is ``Job[Spec, Output]``: what every kind shares (id, kind, state, progress, failure, times, request id,
last sequence) around a kind's own typed ``spec`` (what was asked) and ``output`` (what it produced and
reports as it runs). A kind is declared once as a :class:`JobKind` (its name, its resource collection, its
spec, output and event types); adding a kind is a spec, an output and a runner (``engine.jobs.manager``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

S = TypeVar("S")  # a kind's spec
O = TypeVar("O")  # a kind's output  # noqa: E741 - the conventional name of the second type variable here


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    PREPARING = "PREPARING"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    PAUSING = "PAUSING"
    PAUSED = "PAUSED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

    @property
    def claimed(self) -> bool:
        """A worker holds the job (it is preparing, running, or stopping at a request)."""
        return self in (JobState.PREPARING, JobState.RUNNING, JobState.CANCELLING, JobState.PAUSING)


ACTIVE_STATES = (JobState.QUEUED, JobState.PREPARING, JobState.RUNNING, JobState.CANCELLING, JobState.PAUSING)


class Control(enum.StrEnum):
    """What a client asked of a job a worker holds; the worker acts on it at its next step."""

    CANCEL = "CANCEL"
    PAUSE = "PAUSE"

    @property
    def stopping(self) -> JobState:
        """The state a job a worker holds is shown in once this is asked of it (CANCELLING, PAUSING)."""
        return JobState.CANCELLING if self is Control.CANCEL else JobState.PAUSING


def shown_state(state: JobState, requested: Control | None) -> JobState:
    """The state a job is shown (and listed) in: as stored, but a job a worker holds that a client asked to stop
    is in that request's stopping state (the worker acts on it at its next step). The stores' one definition of
    it (engine.stores.job_store.SHOWN_STATE_SQL says the same in SQL)."""
    if requested is not None and state.claimed:
        return requested.stopping
    return state


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


# ---- events every kind records ------------------------------------------------------------


@dataclass(frozen=True)
class StateChanged:
    previous: JobState | None
    state: JobState
    message: str = ""


@dataclass(frozen=True)
class Noticed:
    """Something worth knowing that needs no one's attention (a Fisher was computed, examples were mixed)."""

    code: str
    message: str


@dataclass(frozen=True)
class Warned:
    """Something a person should look at (examples skipped, data changed since, an earlier Fisher is gone)."""

    code: str
    message: str


@dataclass(frozen=True)
class Failed:
    failure: JobFailure


CORE_EVENTS: tuple[type, ...] = (StateChanged, Noticed, Warned, Failed)


@dataclass(frozen=True)
class JobEvent:
    """One entry of a job's event log. ``payload`` is a core event or one of the kind's own event types."""

    sequence: int
    time: datetime
    payload: object


# ---- the generic job -------------------------------------------------------------------------


@dataclass(frozen=True)
class JobKind(Generic[S, O]):
    """A kind of job: ``name`` (e.g. "training"), its resource ``collection`` (e.g. "trainingJobs") and the
    types of its spec, its output and the events it records beside the core ones."""

    name: str
    collection: str
    spec_type: type[S]
    output_type: type[O]
    event_types: tuple[type, ...] = ()

    def __post_init__(self) -> None:
        _COLLECTIONS[self.name] = self.collection

    def resource_name(self, job_id: str) -> str:
        return f"{self.collection}/{job_id}"


_COLLECTIONS: dict[str, str] = {}


@dataclass(frozen=True)
class Job(Generic[S, O]):
    """A job as stored. Replaced (never mutated) on every change."""

    id: str
    kind: str
    spec: S
    output: O
    state: JobState
    create_time: datetime
    request_id: str = ""
    priority: int = 0  # higher runs first among queued jobs
    # engine.jobs.codec.request_digest of the create request as the client sent it (before the server's defaults and
    # any resolution): a repeat of its request_id is this job if it is the same request. "" in a job stored before
    # it was recorded: such a repeat is compared by spec, once resolved.
    request_digest: str = ""
    trace_context: tuple[tuple[str, str], ...] = ()  # the creating request's trace, continued by the worker
    worker: str = ""  # the worker that holds (or last held) the job
    progress: JobProgress = field(default_factory=JobProgress)
    failure: JobFailure | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    last_sequence: int = 0

    @property
    def name(self) -> str:
        return f"{_COLLECTIONS[self.kind]}/{self.id}"
