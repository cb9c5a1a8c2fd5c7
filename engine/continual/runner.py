"""Fisher jobs: measure an adapter version on a dataset and store the diagonal as a snapshot.

The lifecycle (queue, events, watch, cancel, recovery) is the job core (``engine.jobs``); this module says
what running one means (:class:`FisherRunner`: PREPARING fetches the adapter and loads the dataset, RUNNING
is the closed-form Fisher in a worker thread with a FisherProgress per batch, then the snapshot is stored)
and validates a job at create time (:class:`FisherJobs`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from engine.continual.fisher import FisherResult, select_samples
from engine.continual.fisher_run import FisherRun, run_fisher
from engine.continual.planner import new_snapshot
from engine.continual.ports import FisherSnapshots
from engine.continual.spec import (
    DEFAULT_NUM_SAMPLES,
    FISHER,
    MAX_NUM_SAMPLES,
    FisherJob,
    FisherJobSpec,
    FisherOutput,
    FisherProgress,
)
from engine.domain import Example, FeedbackSource, Objective, dataset_digest
from engine.errors import FailedPrecondition, FieldViolation, InvalidArgument
from engine.feedback.dataset import FeedbackDatasetBuilder
from engine.jobs.codec import request_digest
from engine.jobs.context import JobContext
from engine.jobs.core import JobEvent, JobProgress, JobState, Warned
from engine.jobs.manager import JobManager, RetriedCreates
from engine.registry import AdapterRegistry
from engine.training.datasets import load_jsonl, resolve_dataset_path

MeasureFn = Callable[..., FisherResult]


@dataclass(frozen=True)
class FisherJobConfig:
    datasets_dir: Path
    max_seq_length: int = 512
    batch_size: int = 8


class FisherExamples:
    """The examples a Fisher job measures: a JSONL file's, or the wanted answers of a feedback dataset."""

    def __init__(self, config: FisherJobConfig, feedback: FeedbackDatasetBuilder | None) -> None:
        self._config = config
        self._feedback = feedback

    async def of(self, spec: FisherJobSpec) -> list[Example]:
        """The JSONL file's examples, or those of an SFT dataset built from feedback now: the wanted answers (thumbs
        up, high ratings, corrections), what the adapter should keep doing; a voted-down answer is never one."""
        if isinstance(spec.dataset, FeedbackSource):
            if self._feedback is None:
                raise FailedPrecondition("FEEDBACK_DATASETS_UNAVAILABLE", "this server has no feedback store")
            return (await self._feedback.build(spec.dataset, Objective.SFT, base_model=spec.base_model)).examples
        path = resolve_dataset_path(self._config.datasets_dir, spec.dataset.path)
        return await asyncio.to_thread(load_jsonl, path)


class FisherRunner:
    """The Fisher kind of job: see the module docstring."""

    kind = FISHER

    def __init__(
        self,
        *,
        registry: AdapterRegistry,
        snapshots: FisherSnapshots,
        base_model_dir: Callable[[str], Path],
        config: FisherJobConfig,
        examples: FisherExamples,
        measure: MeasureFn = run_fisher,
    ) -> None:
        self._registry = registry
        self._snapshots = snapshots
        self._base_model_dir = base_model_dir
        self._config = config
        self._examples = examples
        self._measure = measure

    async def run(self, ctx: JobContext[FisherJobSpec, FisherOutput]) -> str:
        spec = ctx.job.spec
        ctx.transition(JobState.PREPARING, "fetching the adapter and loading the dataset")
        model_dir = await asyncio.to_thread(self._base_model_dir, spec.base_model)  # the base model before its adapter
        record = await self._registry.get(spec.base_model, spec.adapter_version, field_path="spec.adapter_version")
        adapter_dir = await self._registry.fetch(record, ctx.work_dir / "adapter")
        examples = await self._examples.of(spec)
        if spec.num_samples > len(examples):
            ctx.record(Warned(
                "NUM_SAMPLES_EXCEEDS_DATASET",
                f"num_samples {spec.num_samples} is more than the dataset's {len(examples)} examples; using all",
            ))
        chosen = [examples[i] for i in select_samples(len(examples), spec.num_samples)]
        ctx.started(JobState.RUNNING, f"measuring {len(chosen)} samples ({spec.estimator.value}, "
                                      f"{spec.space.value})", total_steps=len(chosen))
        sink, started = ctx.sink, time.monotonic()

        def progress(done: int, total: int) -> None:
            elapsed = time.monotonic() - started
            sink.emit(FisherProgress(done, total, done / elapsed if elapsed > 0 else 0.0))

        run = FisherRun(model_dir, adapter_dir, chosen, spec.estimator, self._config.max_seq_length,
                        self._config.batch_size, space=spec.space)
        result = await ctx.in_worker(lambda: self._measure(run, cancel=ctx.cancel, progress=progress))
        await asyncio.sleep(0)  # let the last progress events land before the job ends
        snapshot = await self._snapshots.save(result.diagonal, new_snapshot(
            result, result.diagonal, base_model=spec.base_model, adapter_version=spec.adapter_version,
            dataset_digest=dataset_digest(chosen),
        ))
        ctx.set_output(FisherOutput(snapshot=snapshot.name))
        return f"stored {snapshot.name}"

    def fold(self, job: FisherJob, payload: object) -> FisherJob:
        if isinstance(payload, FisherProgress):
            rate = payload.samples_per_second
            eta = (payload.samples_total - payload.samples_done) / rate if rate > 0 else None
            return replace(job, progress=JobProgress(payload.samples_done, payload.samples_total, eta))
        return job


class FisherJobs(RetriedCreates[FisherJobSpec, FisherOutput]):
    """The Fisher jobs servicers see: create (validated), get, list, cancel, watch."""

    def __init__(
        self, manager: JobManager[FisherJobSpec, FisherOutput], *, registry: AdapterRegistry,
        base_model_dir: Callable[[str], Path], examples: FisherExamples,
    ) -> None:
        self._manager = manager
        self._registry = registry
        self._base_model_dir = base_model_dir
        self._examples = examples

    async def create(self, spec: FisherJobSpec, *, request_id: str = "", received: object = None) -> FisherJob:
        """Validate ``spec`` and queue a job of it; the job of an earlier create with ``request_id`` and the same
        ``received`` (the request as the client sent it; ``spec`` if None) first, whatever changed since."""
        digest = request_digest(spec if received is None else received)
        earlier = await self._manager.created_for(request_id, digest)
        if earlier is not None:
            return earlier
        if not 1 <= spec.num_samples <= MAX_NUM_SAMPLES:
            raise InvalidArgument(
                "INVALID_NUM_SAMPLES",
                f"num_samples must lie in [1, {MAX_NUM_SAMPLES}]; leave it unset for {DEFAULT_NUM_SAMPLES}",
                violations=[FieldViolation("spec.num_samples", "must be at least 1" if spec.num_samples < 1
                                           else f"must be at most {MAX_NUM_SAMPLES}")],
            )
        # The base model first: an unknown one is INVALID_ARGUMENT UNKNOWN_BASE_MODEL on spec.base_model (as for a
        # training job), not the NOT_FOUND of an adapter version looked up under it.
        await asyncio.to_thread(self._base_model_dir, spec.base_model)
        await self._registry.get(spec.base_model, spec.adapter_version, field_path="spec.adapter_version")
        await self._examples.of(spec)
        return await self._manager.submit(self._manager.new_job(spec, FisherOutput(), request_id=request_id,
                                                                digest=digest))

    async def get(self, job_id: str) -> FisherJob:
        return await self._manager.get(job_id)

    async def list(self, *, states: Sequence[JobState], page_size: int,
                   page_token: str) -> tuple[list[FisherJob], str]:
        return await self._manager.list(states=states, page_size=page_size, page_token=page_token)

    async def cancel(self, job_id: str) -> FisherJob:
        return await self._manager.cancel(job_id)

    def watch(self, job_id: str, *, after_sequence: int = 0) -> AsyncIterator[FisherJob | JobEvent]:
        return self._manager.watch(job_id, after_sequence=after_sequence)
