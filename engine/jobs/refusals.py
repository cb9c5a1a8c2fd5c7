"""What the job API refuses a request about a stored job with (:class:`~engine.jobs.manager.JobManager`).

A create repeating a request_id that an earlier create used for another request (ALREADY_EXISTS
REQUEST_ID_REUSED: ``same_job``, ``reused``), and a cancel or pause of a job that has ended or is already stopping
(FAILED_PRECONDITION: ``check_steerable``).
"""

from __future__ import annotations

from typing import TypeVar

from engine.errors import AlreadyExists, FailedPrecondition
from engine.jobs.core import Control, Job, JobState

S = TypeVar("S")
O = TypeVar("O")  # noqa: E741 - as in engine.jobs.core


def same_job(job: Job[S, O], stored: Job[S, O]) -> None:
    """ALREADY_EXISTS REQUEST_ID_REUSED unless ``stored``, the job of ``job``'s request_id, asked for the same: the
    same request as sent (their digests), or, for a job stored without a digest, the same spec once resolved."""
    if job.request_digest and stored.request_digest:
        same = stored.request_digest == job.request_digest
    else:
        same = stored.spec == job.spec
    if not same:
        raise reused(job.request_id, stored)


def reused(request_id: str, stored: Job[S, O]) -> AlreadyExists:
    return AlreadyExists(
        "REQUEST_ID_REUSED", f"request_id {request_id!r} was used for a different job ({stored.name})",
        metadata={"request_id": request_id, "job": stored.name},
    )


def check_steerable(job: Job[S, O], control: Control) -> None:
    if job.state.terminal:
        raise FailedPrecondition(
            "JOB_NOT_CANCELLABLE" if control is Control.CANCEL else "JOB_NOT_PAUSABLE",
            f"job {job.name} already ended ({job.state.value})", metadata={"state": job.state.value},
        )
    if control is Control.PAUSE and job.state in (JobState.PAUSED, JobState.PAUSING, JobState.CANCELLING):
        raise FailedPrecondition(
            "JOB_NOT_PAUSABLE", f"job {job.name} is {job.state.value}", metadata={"state": job.state.value},
        )
