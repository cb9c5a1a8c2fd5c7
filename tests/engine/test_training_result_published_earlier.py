"""A training job whose version an earlier run published, its worker killed before the job's end was stored (while
it stored the job's metrics, which comes after the publish), is ended SUCCEEDED with that version by the worker
that takes it over: not trained again from its last checkpoint, to end CANCELLED (a cancel asked meanwhile) or FAILED
(the retrain failing) with no adapter_version while the version it published names it. The job core and the
registry are the real ones, on in-memory stores; the taking-over worker's runner cannot prepare or train.

Only the job's own version counts: one a client registered under the job's result request id (an import, a checkpoint
of the job it published, before such request ids were refused) does not end the job, nor is it taken for the job's
result after it trained; the job's own still counts when its labels include a checkpoint_step of its own."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from engine.domain import DatasetSummary, JsonlSource
from engine.jobs.context import JobSlots, now
from engine.jobs.core import Control, JobEvent, JobState, Noticed, StateChanged
from engine.jobs.manager import JobManager
from engine.registry import AdapterRegistry, AdapterSource, PublishRequest
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.memory import InMemoryAdapterIndex, InMemoryJobStore, InMemoryServingState, InProcessQueue
from engine.training.job_results import publish_request, result_request_id
from engine.training.loading import LoadedModel
from engine.training.models import DevicePlan
from engine.training.preparation import PreparedInputs, ResolvedDataset
from engine.training.run import TrainingResult
from engine.training.runner import TrainingRunner
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
    store, registry, slots, manager = _untrainable_worker(tiny_model_dir, tmp_path)
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


class _Trains:
    """A worker's preparer, loader and recipe that train the job in no time: the adapter it "trains" is ``adapter``."""

    def __init__(self, model_dir: Path, adapter: Path) -> None:
        self.model_dir, self.adapter, self.trained = model_dir, adapter, 0

    async def resolve(self, spec: TrainingJobSpec, summary: DatasetSummary) -> PreparedInputs:
        return PreparedInputs(spec=spec, dataset=ResolvedDataset([], summary), parent=None, model_dir=self.model_dir)

    def load(self, run) -> LoadedModel:
        return LoadedModel(model=None, tokenizer=None, plan=DevicePlan("cpu", None, "cpu"))

    def train(self, run, sink, cancel, loaded) -> TrainingResult:
        self.trained += 1
        return TrainingResult(adapter_dir=self.adapter, steps=1, final_loss=1.5, final_task_loss=1.5,
                              dataset=DatasetSummary(digest="d", example_count=4), device="cpu", train_loss=1.5)


def _manager(store: InMemoryJobStore, registry: AdapterRegistry, artifacts: LocalArtifactStore, tmp_path: Path,
             slots: JobSlots, worker_id: str, *, preparer: object, load: object, train: object) -> JobManager:
    """A worker's job manager running training jobs with these stand-ins for preparing, loading and training."""
    return JobManager(
        runner=TrainingRunner(preparer=preparer, registry=registry, artifacts=artifacts,  # type: ignore[arg-type]
                              load=load, train=train),  # type: ignore[arg-type]
        store=store, queue=InProcessQueue(), work_dir=tmp_path / "work", slots=slots, worker_id=worker_id,
        control_poll_seconds=0.01)


def _untrainable_worker(model_dir: Path, tmp_path: Path
                        ) -> tuple[InMemoryJobStore, AdapterRegistry, JobSlots, JobManager]:
    """Worker B, which takes the job up and can neither prepare, load nor train it: a job store, a registry on it,
    the worker's slots and its manager."""
    store = InMemoryJobStore()
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    registry = _registry(store, artifacts, model_dir, tmp_path)
    untrainable = _Untrainable()
    slots = JobSlots(1)
    return store, registry, slots, _manager(store, registry, artifacts, tmp_path, slots, "worker-b",
                                            preparer=untrainable, load=untrainable, train=untrainable)


def _registry(store: InMemoryJobStore, artifacts: LocalArtifactStore, model_dir: Path, tmp_path: Path):
    return AdapterRegistry(index=InMemoryAdapterIndex(leases=store.lease_token), store=artifacts,
                           serving=InMemoryServingState(), base_model_dir=lambda model: model_dir,
                           scratch_dir=tmp_path / "registry")


@pytest.mark.parametrize("whose", ["import", "checkpoint"])
async def test_a_version_a_client_registered_under_the_jobs_result_request_id_is_not_its_result(
        whose: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    """ImportAdapter and PublishCheckpoint took any request id, the job's result's among them (refused since: the
    version is one registered before). That version ended the job SUCCEEDED with it at its first claim, never
    trained (RESULT_PUBLISHED_EARLIER); and a job that did train had its publish answered with it, and ended
    SUCCEEDED with a version it did not make. The job trains, then fails naming the version in its way."""
    store = InMemoryJobStore()
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    registry = _registry(store, artifacts, tiny_model_dir, tmp_path)
    trains = _Trains(tiny_model_dir, build_peft_adapter(tiny_model_dir, tmp_path / "trained"))
    slots = JobSlots(1)
    manager = _manager(store, registry, artifacts, tmp_path, slots, "worker-a",
                       preparer=trains, load=trains.load, train=trains.train)
    try:
        job = await manager.submit(manager.new_job(
            TrainingJobSpec(base_model=TINY, dataset=JsonlSource("facts.jsonl")),
            TrainingOutput(dataset=DatasetSummary(digest="d", example_count=4))))
        adapter = build_peft_adapter(tiny_model_dir, tmp_path / "client")
        if whose == "import":  # ImportAdapter(request_id="trainingJobs/<id>/result")
            foreign = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=adapter,
                                                            source=AdapterSource.IMPORTED,
                                                            request_id=result_request_id(job)))
        else:  # PublishCheckpoint(name=<the job>, step=1, request_id="trainingJobs/<id>/result")
            foreign = await registry.publish(publish_request(
                job, None, adapter, 1.0, request_id=result_request_id(job), labels=(("checkpoint_step", "1"),)))

        await manager.execute(job.id)  # its first run

        ended = await store.get_job(job.id)
        assert trains.trained == 1, "the job was not trained"
        assert ended.output.adapter_version != foreign.version, f"the job ended with {whose} {foreign.version}"
        assert ended.state is JobState.FAILED and ended.failure is not None
        assert (ended.failure.code, ended.failure.reason) == ("ALREADY_EXISTS", "REQUEST_ID_REUSED")
        assert f"version {foreign.version} " in ended.failure.message
        assert dict(ended.failure.metadata) == {"request_id": result_request_id(job), "base_model": TINY,
                                                "adapter_version": foreign.version}
        notices = [e.payload.code for e in await store.list_events(job.id, after_sequence=0)
                   if isinstance(e.payload, Noticed)]
        assert "RESULT_PUBLISHED_EARLIER" not in notices
        versions, _ = await registry.list(page_size=10)
        assert [v.version for v in versions] == [foreign.version]  # nothing published in the job's name
    finally:
        await manager.shutdown()
        slots.shutdown()


async def test_the_jobs_own_result_counts_with_a_checkpoint_step_label_of_its_own(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    """A job labelled checkpoint_step itself: its result carries the label as the job set it, and is its own."""
    store, registry, slots, manager = _untrainable_worker(tiny_model_dir, tmp_path)
    try:
        job = await manager.submit(manager.new_job(
            TrainingJobSpec(base_model=TINY, dataset=JsonlSource("facts.jsonl"), labels=(("checkpoint_step", "7"),)),
            TrainingOutput(dataset=DatasetSummary(digest="d", example_count=4))))
        published = await registry.publish(publish_request(  # an earlier run's, its worker stopped then
            job, None, build_peft_adapter(tiny_model_dir, tmp_path / "adapter"), 1.5,
            request_id=result_request_id(job)))

        await manager.execute(job.id)

        ended = await store.get_job(job.id)
        assert (ended.state, ended.output.adapter_version) == (JobState.SUCCEEDED, published.version)
    finally:
        await manager.shutdown()
        slots.shutdown()
