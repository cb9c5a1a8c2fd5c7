"""Fisher jobs: measure an adapter version on a dataset and store the diagonal as a snapshot.

The lifecycle (queue, events, watch, cancel, recovery) is the shared ``engine.jobs.JobManager``; this
module says what running one means: PREPARING (fetch the adapter, load the dataset), RUNNING (the
closed-form Fisher in a worker thread, FisherProgress per batch), then the snapshot is stored.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.continual.fisher import FisherResult, select_samples
from engine.continual.fisher_run import FisherRun, run_fisher
from engine.continual.planner import new_snapshot
from engine.continual.spec import DEFAULT_NUM_SAMPLES, MAX_NUM_SAMPLES, FisherJob, FisherJobSpec, FisherProgress
from engine.domain import Example, FeedbackSource, Objective, dataset_digest
from engine.errors import FailedPrecondition, FieldViolation, InvalidArgument
from engine.feedback.dataset import FeedbackDatasetBuilder
from engine.jobs.core import JobProgress, JobState, Warned
from engine.jobs.manager import JobManager, _LiveJob, _now
from engine.jobs.ports import JobStore
from engine.stores.fisher_store import FisherSnapshotStore
from engine.training.datasets import load_jsonl, resolve_dataset_path


@dataclass(frozen=True)
class FisherJobConfig:
    datasets_dir: Path
    max_seq_length: int = 512
    batch_size: int = 8


class FisherJobManager(JobManager):
    kind = "fisher"
    collection = "fisherJobs"

    def __init__(
        self,
        *,
        store: JobStore,
        registry: Any,
        snapshots: FisherSnapshotStore,
        base_model_dir: Callable[[str], Path],
        config: FisherJobConfig,
        work_dir: Path,
        max_concurrent_jobs: int = 1,
        feedback: FeedbackDatasetBuilder | None = None,
        measure: Callable[..., FisherResult] = run_fisher,
    ) -> None:
        super().__init__(store=store, work_dir=work_dir, max_concurrent_jobs=max_concurrent_jobs)
        self._registry = registry
        self._snapshots = snapshots
        self._base_model_dir = base_model_dir
        self._config = config
        self._feedback = feedback
        self._measure = measure

    async def create(self, spec: FisherJobSpec, *, request_id: str = "") -> FisherJob:
        if not 1 <= spec.num_samples <= MAX_NUM_SAMPLES:
            raise InvalidArgument(
                "INVALID_NUM_SAMPLES",
                f"num_samples must lie in [1, {MAX_NUM_SAMPLES}]; leave it unset for {DEFAULT_NUM_SAMPLES}",
                violations=[FieldViolation("spec.num_samples", "must be at least 1" if spec.num_samples < 1
                                           else f"must be at most {MAX_NUM_SAMPLES}")],
            )
        await self._registry.get(spec.base_model, spec.adapter_version, field_path="spec.adapter_version")
        await asyncio.to_thread(self._base_model_dir, spec.base_model)
        await self._examples(spec)
        job = FisherJob(id=uuid.uuid4().hex, spec=spec, state=JobState.QUEUED, create_time=_now(),
                        request_id=request_id)
        return await self._admit(job)

    async def _examples(self, spec: FisherJobSpec) -> list[Example]:
        """The JSONL file's examples, or the wanted answers of a dataset built from feedback now (thumbs up, high
        ratings, corrections: what the adapter should keep doing; see engine.version_data)."""
        if isinstance(spec.dataset, FeedbackSource):
            if self._feedback is None:
                raise FailedPrecondition("FEEDBACK_DATASETS_UNAVAILABLE", "this server has no feedback store")
            built = await self._feedback.build(spec.dataset, Objective.SFT)
            wanted = built.wanted()
            if not wanted:
                raise FailedPrecondition(
                    "NO_WANTED_FEEDBACK", f"the {len(built.examples)} feedback examples found are all rejected "
                    "answers; the Fisher measures what the adapter should keep doing", metadata={"found": "0"},
                )
            return wanted
        return await asyncio.to_thread(load_jsonl, resolve_dataset_path(self._config.datasets_dir, spec.dataset.path))

    async def _execute(self, live: _LiveJob, job_dir: Path) -> str:
        spec: FisherJobSpec = live.job.spec
        self._transition(live, JobState.PREPARING, "fetching the adapter and loading the dataset")
        record = await self._registry.get(spec.base_model, spec.adapter_version, field_path="spec.adapter_version")
        adapter_dir = await self._registry.fetch(record, job_dir / "adapter")
        model_dir = await asyncio.to_thread(self._base_model_dir, spec.base_model)
        examples = await self._examples(spec)
        if spec.num_samples > len(examples):
            self._record(live, Warned(
                "NUM_SAMPLES_EXCEEDS_DATASET",
                f"num_samples {spec.num_samples} is more than the dataset's {len(examples)} examples; using all",
            ))
        chosen = [examples[i] for i in select_samples(len(examples), spec.num_samples)]
        self._transition(live, JobState.RUNNING, f"measuring {len(chosen)} samples ({spec.estimator.value}, "
                                                 f"{spec.space.value})")
        self._set(live, start_time=_now(), progress=JobProgress(0, len(chosen)))
        sink, started = self._sink(live), time.monotonic()

        def progress(done: int, total: int) -> None:
            elapsed = time.monotonic() - started
            sink.emit(FisherProgress(done, total, done / elapsed if elapsed > 0 else 0.0))

        run = FisherRun(model_dir, adapter_dir, chosen, spec.estimator, self._config.max_seq_length,
                        self._config.batch_size, space=spec.space)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self._executor, lambda: self._measure(run, cancel=live.cancel, progress=progress)
        )
        await asyncio.sleep(0)  # let the last progress events land before the job ends
        snapshot = await self._snapshots.save(result.diagonal, new_snapshot(
            result, result.diagonal, base_model=spec.base_model, adapter_version=spec.adapter_version,
            dataset_digest=dataset_digest(chosen),
        ))
        self._set(live, output_snapshot=snapshot.name)
        return f"stored {snapshot.name}"

    def _fold(self, payload: Any) -> dict:
        if isinstance(payload, FisherProgress):
            rate = payload.samples_per_second
            eta = (payload.samples_total - payload.samples_done) / rate if rate > 0 else None
            return {"progress": JobProgress(payload.samples_done, payload.samples_total, eta)}
        return {}
