"""A training job whose version an earlier run published, its worker killed before the job's end was stored (while
it stored the job's metrics, which comes after the publish), is ended SUCCEEDED with that version by the worker
that takes it over: not trained again from its last checkpoint, to end CANCELLED (a cancel asked meanwhile) or FAILED
(the retrain failing) with no adapter_version while the version it published names it. The job core and the
registry are the real ones, on in-memory stores; the taking-over worker's runner cannot prepare or train."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from engine.domain import DatasetSummary, JsonlSource
from engine.jobs.context import JobSlots, now
from engine.jobs.core import Control, JobEvent, JobState, Noticed, StateChanged
from engine.jobs.manager import JobManager
from engine.registry import AdapterRegistry
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.memory import InMemoryAdapterIndex, InMemoryJobStore, InMemoryServingState, InProcessQueue
from engine.training.runner import TrainingRunner, publish_request, result_request_id
from engine.training.spec import StepMetrics, TrainingJobSpec, TrainingOutput
from tests.fixtures.peft_adapters import build_peft_adapter
from tests.fixtures.server_settings import TINY


class _Untrainable:
    """The taking-over worker's preparer, loader and recipe: the job must not be prepared or trained again."""

    async def resolve(self, *args, **kwargs):
        raise AssertionError("the job was prepared to be trained again")

    def __call__(self, *args, **kwargs):
        raise AssertionError("the job was trained again")


@pytest.mark.parametrize("requested", [None, Control.CANCEL], ids=["nothing-asked", "cancelled-meanwhile"])
async def test_a_job_whose_version_an_earlier_run_published_ends_succeeded_with_it(
        requested: Control | None, tiny_model_dir: Path, tmp_path: Path) -> None:
    store = InMemoryJobStore()
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    registry = AdapterRegistry(index=InMemoryAdapterIndex(leases=store.lease_token), store=artifacts,
                               serving=InMemoryServingState(), base_model_dir=lambda model: tiny_model_dir,
                               scratch_dir=tmp_path / "registry")
    untrainable = _Untrainable()
    slots = JobSlots(1)
    manager = JobManager(
        runner=TrainingRunner(preparer=untrainable, registry=registry, artifacts=artifacts,  # type: ignore[arg-type]
                              load=untrainable, train=untrainable),
        store=store, queue=InProcessQueue(), work_dir=tmp_path / "work", slots=slots, worker_id="worker-b",
        control_poll_seconds=0.01)
    try:
        job = await manager.submit(manager.new_job(
            TrainingJobSpec(base_model=TINY, dataset=JsonlSource("facts.jsonl")),
            TrainingOutput(dataset=DatasetSummary(digest="d", example_count=4))))

        # Worker A: claims the job, trains (a step's metrics stored), publishes its version under its lease; then it
        # is killed as it stores the job's metrics. Nothing after the publish is stored.
        claim = await store.claim(job.id, "worker-a")
        step = StepMetrics(step=1, total_steps=1, epoch=1.0, loss=1.5, task_loss=1.5, ewc_penalty=0.0,
                           learning_rate=1e-3, grad_norm=1.0, tokens_per_second=10.0)
        running = replace(claim.job, state=JobState.RUNNING, last_sequence=3)
        await store.write(running, [JobEvent(2, now(), StateChanged(JobState.QUEUED, JobState.RUNNING, "training")),
                                    JobEvent(3, now(), step)], claim.lease)
        published = await registry.publish(publish_request(
            running, None, build_peft_adapter(tiny_model_dir, tmp_path / "adapter"), 1.5,
            fence=(job.id, claim.lease.token), request_id=result_request_id(running)))
        if requested is not None:  # a client asks while A is silent, not yet taken for stopped
            assert (await manager.cancel(job.id)).state is JobState.CANCELLING

        await manager.execute(job.id)  # worker B takes the job over

        ended = await store.get_job(job.id)
        assert (ended.state, ended.output.adapter_version, ended.failure) == (JobState.SUCCEEDED, published.version,
                                                                             None)
        assert ended.output.metrics_artifacts is not None and ended.output.metrics_artifacts.rows == 1
        notices = [e.payload.code for e in await store.list_events(job.id, after_sequence=0)
                   if isinstance(e.payload, Noticed)]
        assert notices == ["TAKEN_OVER", "RESULT_PUBLISHED_EARLIER"]
        versions, _ = await registry.list(page_size=10)
        assert [v.version for v in versions] == [published.version]  # one version per job
    finally:
        await manager.shutdown()
        slots.shutdown()
