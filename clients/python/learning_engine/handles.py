"""Handles on long-running jobs, in the spirit of temporalio's ``WorkflowHandle``.

``handle = await client.start_training_job(spec)`` (or ``client.get_training_job_handle(name)`` for a job
that exists) names one job; its methods call the job's RPCs::

    handle = await client.start_training_job(spec)
    async for event in handle.events():          # the Watch stream's events, each once, across reconnects
        ...
    job = await handle.wait()                    # the job once it ended; raises its error if it failed
    await handle.pause(); await handle.resume(); await handle.cancel()

Fisher and evaluation jobs have handles too (``start_fisher_job``, ``start_evaluation_job``), without pause.

``wait()`` follows the job's Watch stream, which ends when the job ends or pauses: it returns a SUCCEEDED
job, a PAUSED one (as it is: resume it and wait again), and with ``check`` (the default) raises the job's
error for a FAILED or CANCELLED one, typed as a failed call's would be (``errors.Cancelled`` for a
cancelled job, ``errors.InvalidArgument`` for a dataset it could not use, ...). ``check=False`` returns it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from learning.v1 import common_pb2 as common
from learning.v1 import evaluation_pb2 as evaluation
from learning.v1 import fisher_pb2 as fisher
from learning.v1 import training_pb2 as training
from learning_engine import errors

if TYPE_CHECKING:
    from learning_engine.client import AsyncClient

_FAILED = (common.JOB_STATE_FAILED, common.JOB_STATE_CANCELLED)
# The Watch stream ends in these states (PAUSED included); a job in one has nothing more to stream.
STREAM_ENDS = (common.JOB_STATE_SUCCEEDED, *_FAILED, common.JOB_STATE_PAUSED)


class _Job(Protocol):
    state: int
    last_sequence: int

    @property
    def error(self) -> Any: ...


J = TypeVar("J", bound=_Job)


async def _events(stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The events of a Watch stream (its snapshots left out)."""
    async for message in stream:
        if message.HasField("event"):
            yield message.event


async def _wait(describe: Callable[[], Awaitable[J]], events: Callable[[int], AsyncIterator[Any]], check: bool) -> J:
    """Follow the job's events from where it is now to the stream's end, then return it as it is then."""
    job = await describe()
    if job.state not in STREAM_ENDS:
        async for _ in events(job.last_sequence):
            pass
        job = await describe()
    if check and job.state in _FAILED:
        raise errors.from_job_error(job.error)
    return job


class _AsyncJobHandle:
    """What every job handle has: the client it calls through and the job's name."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        self._client = client
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r})"


class AsyncTrainingJobHandle(_AsyncJobHandle):
    """One training job ("trainingJobs/<id>") of an :class:`AsyncClient`."""

    async def describe(self) -> training.TrainingJob:
        """The job as it is now (GetTrainingJob)."""
        return await self._client.get_training_job(self._name)

    def events(self, *, after_sequence: int = 0) -> AsyncIterator[training.TrainingJobEvent]:
        """Every event after ``after_sequence`` (all by default), in order, live, until the job ends or pauses."""
        return _events(self._client.watch_training_job(self._name, after_sequence=after_sequence))

    async def wait(self, *, check: bool = True) -> training.TrainingJob:
        """The job once it ended or paused; with ``check``, a failed or cancelled job raises its error."""
        return await _wait(self.describe, lambda after: self.events(after_sequence=after), check)

    async def cancel(self) -> training.TrainingJob:
        return await self._client.cancel_training_job(self._name)

    async def pause(self) -> training.TrainingJob:
        return await self._client.pause_training_job(self._name)

    async def resume(self) -> training.TrainingJob:
        return await self._client.resume_training_job(self._name)

    async def metrics(self) -> training.GetTrainingMetricsResponse:
        return await self._client.get_training_metrics(self._name)

    async def checkpoints(self) -> list[training.TrainingCheckpoint]:
        """The job's stored checkpoints, newest first."""
        return await self._client.list_training_checkpoints(self._name)

    async def publish_checkpoint(self, step: int, *, request_id: str = "") -> str:
        """Publish the checkpoint of ``step`` as a new adapter version; returns the version."""
        return await self._client.publish_checkpoint(self._name, step, request_id=request_id)


class AsyncFisherJobHandle(_AsyncJobHandle):
    """One Fisher job ("fisherJobs/<id>") of an :class:`AsyncClient`; Fisher jobs cannot be paused."""

    async def describe(self) -> fisher.FisherJob:
        return await self._client.get_fisher_job(self._name)

    def events(self, *, after_sequence: int = 0) -> AsyncIterator[fisher.FisherJobEvent]:
        """Every event after ``after_sequence`` (all by default), in order, live, until the job ends."""
        return _events(self._client.watch_fisher_job(self._name, after_sequence=after_sequence))

    async def wait(self, *, check: bool = True) -> fisher.FisherJob:
        """The job once it ended (``output_snapshot`` names its snapshot); with ``check``, a failed or cancelled
        job raises its error."""
        return await _wait(self.describe, lambda after: self.events(after_sequence=after), check)

    async def cancel(self) -> fisher.FisherJob:
        return await self._client.cancel_fisher_job(self._name)


class AsyncEvaluationJobHandle(_AsyncJobHandle):
    """One evaluation job ("evaluationJobs/<id>") of an :class:`AsyncClient`; evaluations cannot be paused."""

    async def describe(self) -> evaluation.EvaluationJob:
        return await self._client.get_evaluation_job(self._name)

    def events(self, *, after_sequence: int = 0) -> AsyncIterator[evaluation.EvaluationJobEvent]:
        """Every event after ``after_sequence`` (all by default), in order, live, until the job ends."""
        return _events(self._client.watch_evaluation_job(self._name, after_sequence=after_sequence))

    async def wait(self, *, check: bool = True) -> evaluation.EvaluationJob:
        """The job once it ended (``eval`` holds the decision); with ``check``, a failed or cancelled job raises
        its error. A version that fails the gate is no failed job: see ``eval.passed``."""
        return await _wait(self.describe, lambda after: self.events(after_sequence=after), check)

    async def cancel(self) -> evaluation.EvaluationJob:
        return await self._client.cancel_evaluation_job(self._name)
