"""What the TrainingService calls: training jobs validated and resolved at create time, then queued for a worker
(the run: engine.training.runner), and got, listed, cancelled, paused, resumed and watched; a stored checkpoint's
adapter published as a version; a job's metrics.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from engine.errors import FieldViolation, InvalidArgument, NotFound
from engine.jobs.codec import request_digest
from engine.jobs.core import JobEvent, JobState
from engine.jobs.manager import JobManager, RetriedCreates
from engine.names import resource_id
from engine.registry import AdapterRecord, AdapterRegistry
from engine.registry.ports import ArtifactStore
from engine.training.checkpoint_store import CheckpointArchive
from engine.training.job_results import CHECKPOINT_STEP_LABEL, publish_request
from engine.training.metrics import TrainingMetrics, training_metrics
from engine.training.ports import ContinualPlanner
from engine.training.preparation import JobPreparer
from engine.training.spec import TrainingJob, TrainingJobSpec, TrainingOutput

SNAPSHOT_FIELD = "spec.ewc.fisher_snapshot"


def _check_named_snapshot_is_used(spec: TrainingJobSpec) -> None:
    """INVALID_ARGUMENT INVALID_EWC_CONFIG (a violation on spec.ewc.fisher_snapshot) for a Fisher snapshot named
    where nothing would read it: a job without a parent trains no EWC, and one with ``ewc.disabled`` none either
    (replay reads the lineage's datasets, never a snapshot). Accepted, the name would be dropped without a word."""
    named = spec.ewc.fisher_snapshot
    if not named:
        return
    if not spec.parent_adapter_version:
        why = "names a snapshot for EWC against a parent; this job has none"
        summary = "a Fisher snapshot is named, and this job has no parent_adapter_version to hold EWC against"
    elif spec.ewc.disabled:
        resource_id(named, "fisherSnapshots", SNAPSHOT_FIELD)  # a malformed name is MALFORMED_NAME, as with EWC on
        why = "names a snapshot for EWC; this job disables EWC (ewc.disabled)"
        summary = "a Fisher snapshot is named, and this job disables EWC, so nothing would use it"
    else:
        return
    raise InvalidArgument("INVALID_EWC_CONFIG", f"invalid EWC settings: {summary}; leave {SNAPSHOT_FIELD} empty",
                          violations=[FieldViolation(SNAPSHOT_FIELD, why)])


class TrainingJobs(RetriedCreates[TrainingJobSpec, TrainingOutput]):
    """The training jobs servicers see: create (validate, resolve, submit), get, list, cancel, watch."""

    def __init__(
        self, manager: JobManager[TrainingJobSpec, TrainingOutput], preparer: JobPreparer,
        planner: ContinualPlanner | None = None, *, registry: AdapterRegistry, artifacts: ArtifactStore,
        scratch_dir: Path,
    ) -> None:
        self._manager = manager
        self._preparer = preparer
        self._planner = planner
        self._registry = registry
        self._artifacts = artifacts
        self._scratch = scratch_dir

    async def create(self, spec: TrainingJobSpec, *, request_id: str = "", validate_only: bool = False,
                     priority: int = 0, received: object = None) -> TrainingJob:
        """Validate and resolve ``spec``, and queue a job of it. ``received`` is the request as the client sent it,
        before the server's defaults (``spec`` if None): the job of an earlier create with ``request_id`` and the
        same request is returned before anything is validated (a validate_only one too), whatever changed since."""
        digest = request_digest(spec if received is None else received)
        earlier = await self._manager.created_for(request_id, digest)
        if earlier is not None:
            return earlier
        _check_named_snapshot_is_used(spec)
        inputs = await self._preparer.validate(spec)
        if self._planner is not None and inputs.parent is not None and not inputs.spec.ewc.disabled:
            await self._planner.check(inputs.spec, inputs.parent)
        job = self._manager.new_job(inputs.spec, TrainingOutput(dataset=inputs.dataset.summary),
                                    request_id=request_id, priority=priority, digest=digest)
        if validate_only:  # answered as the real request would be, a reused request_id included
            await self._manager.check_request(job)
            return job
        # its dataset version and parent still there as it is stored, and kept by it from then on
        return await self._manager.submit(job, prepared=inputs,
                                          pins=self._preparer.pins(inputs.dataset.summary, inputs.parent))

    async def get(self, job_id: str) -> TrainingJob:
        return await self._manager.get(job_id)

    async def list(self, *, states: Sequence[JobState], page_size: int,
                   page_token: str) -> tuple[list[TrainingJob], str]:
        return await self._manager.list(states=states, page_size=page_size, page_token=page_token)

    async def cancel(self, job_id: str) -> TrainingJob:
        return await self._manager.cancel(job_id)

    async def pause(self, job_id: str) -> TrainingJob:
        return await self._manager.pause(job_id)

    async def resume(self, job_id: str) -> TrainingJob:
        return await self._manager.resume(job_id)

    async def publish_checkpoint(self, job_id: str, step: int, *, request_id: str = "") -> AdapterRecord:
        """Publish the adapter of one of the job's stored checkpoints as a new version (labelled with its step),
        in any state of the job: a child of the job's parent, as the job's own result would be."""
        job = await self._manager.get(job_id)
        record = next((c for c in job.output.checkpoints if c.step == step), None)
        if record is None:
            steps = ", ".join(str(c.step) for c in job.output.checkpoints) or "none"
            raise NotFound("CHECKPOINT_NOT_FOUND", f"job {job.name} has no stored checkpoint of step {step} "
                                                   f"(stored: {steps})", metadata={"name": job.name, "step": str(step)})
        parent = None
        if job.spec.parent_adapter_version:
            parent = await self._registry.get(job.spec.base_model, job.spec.parent_adapter_version)
        self._scratch.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="publish-checkpoint-", dir=self._scratch))
        try:
            state = await CheckpointArchive(self._artifacts, work / "archive").fetch(record, work / "state")
            return await self._registry.publish(publish_request(  # what it names still there as it is registered
                job, parent, state / "adapter", record.loss, request_id=request_id,
                pins=self._preparer.pins(job.output.dataset, parent),
                labels=((CHECKPOINT_STEP_LABEL, str(step)),), eval_loss=record.eval_loss,
            ))
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    def watch(self, job_id: str, *, after_sequence: int = 0) -> AsyncIterator[TrainingJob | JobEvent]:
        return self._manager.watch(job_id, after_sequence=after_sequence)

    async def metrics(self, job_id: str) -> tuple[TrainingJob, TrainingMetrics]:
        """The job and its metrics as its event log holds them now (engine.training.metrics)."""
        job, events = await self._manager.events(job_id)
        return job, await asyncio.to_thread(training_metrics, job.name, events)
