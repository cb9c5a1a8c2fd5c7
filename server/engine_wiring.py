"""The real engine built from the settings: PostgreSQL (embedded or ``database_url``), the artifact store, the job
queue, every kind's job manager and worker, and, in serving processes, the serving engine and what follows it.

:class:`Owned` holds what it opens, released in order by ``Owned.close``; server.main serves the engine over gRPC
(or runs only its job side, ``learning-engine-server worker``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from engine import Engine
from engine.continual.base_ewc import BaseEwc
from engine.continual.base_knowledge import BaseKnowledgeProbe
from engine.continual.planner import EwcPlanner
from engine.continual.rehearsal import SelfRehearsal
from engine.continual.runner import FisherExamples, FisherJobConfig, FisherJobs, FisherRunner
from engine.continual.spec import FISHER
from engine.continual.version_data import VersionDatasets
from engine.errors import EngineError
from engine.feedback.dataset import DatasetPolicy, FeedbackDatasetBuilder
from engine.feedback.events import FeedbackKind
from engine.jobs.context import JobSlots
from engine.jobs.manager import JobManager
from engine.jobs.ports import JobExecutor, WorkerQueue
from engine.lora.dataset_suites import DatasetSuites
from engine.lora.evaluation_jobs import EVALUATION, EvaluationJobs, EvaluationRunner
from engine.online.spec import ONLINE_SESSION
from engine.periodic import Periodic
from engine.pipelines.spec import PIPELINE_RUN
from engine.preparation.creation import PreparationJobs
from engine.preparation.jobs import PREPARATION, GeneratorConfig, PreparationRunner
from engine.registry import AdapterRegistry, ArtifactStore
from engine.serving.client import ServingClient, ServingConfig, ServingMode
from engine.stores import postgres
from engine.stores.adapter_index import PostgresAdapterIndex
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.artifacts_s3 import S3ArtifactStore
from engine.stores.dataset_store import PostgresDatasetIndex
from engine.stores.feedback_store import PostgresFeedbackStore
from engine.stores.fisher_store import FisherSnapshotStore
from engine.stores.job_queue import ONLINE_QUEUE, PIPELINE_QUEUE, PREPARATION_QUEUE, SERVING_QUEUE, ProcrastinateQueue
from engine.stores.job_store import JobNotifications, PostgresJobStore
from engine.stores.online_store import PostgresOnlineStore
from engine.stores.serving_state import PostgresServingState
from engine.training.datasets import resolve_dataset_path
from engine.training.models import resolve_base_model
from engine.training.preparation import JobPreparer, PreparerConfig
from engine.training.runner import TrainingRunner
from engine.training.service import TrainingJobs
from engine.training.spec import TRAINING
from engine.training.stored_datasets import CatalogConfig, StoredDatasets
from engine.training.tracking import Trackers
from server.drift_wiring import drift_detector
from server.health_checks import Probe
from server.lora_wiring import LoraRuntime, start_lora_control
from server.online_wiring import build_online, online_retention
from server.pipeline_wiring import build_pipelines
from server.services.feedback import feedback_ingestor
from server.settings import Settings
from server.startup import DataDirLock

log = logging.getLogger(__name__)


@dataclass
class Owned:
    """What the real engine's parts hold open, released in order by :meth:`close`."""

    pool: asyncpg.Pool | None = None
    embedded: postgres.EmbeddedPostgres | None = None
    job_managers: tuple[JobManager[Any, Any], ...] = ()
    slots: JobSlots | None = None
    lora: LoraRuntime | None = None
    queue: WorkerQueue | None = None
    notifications: JobNotifications | None = None
    store: ArtifactStore | None = None
    triggers: Periodic | None = None  # pipelines' triggers, in serving processes
    online_follow: Periodic | None = None  # online sessions' live adapters and gate, in serving processes
    online_sweep: Periodic | None = None  # what ended online sessions leave (examples past retention, archives)
    recover: Periodic | None = None  # QUEUED jobs with nothing queued to run them, queued again
    lock: DataDirLock | None = None  # one server per data dir; released last

    def probes(self) -> dict[str, Probe]:
        """Health probes of the dependencies held open here (an engine on in-memory stores has none)."""
        pool = self.pool
        probes: dict[str, Probe] = {}
        if pool is not None:
            probes["postgresql"] = lambda: pool.fetchval("SELECT 1")
        if self.store is not None:
            probes["artifact_store"] = self.store.probe
        if self.lora is not None:
            probes["serving_engine"] = self.lora.client.health
        return probes

    async def shutdown_jobs(self) -> None:
        """Stop running jobs (they keep their progress and are queued again) and stop taking new ones."""
        # Together: the queue's worker stops taking jobs at once (a closing manager would hand each back, in a
        # loop) but keeps its heartbeats going until the running jobs are released (engine.stores.job_queue).
        for loop in (self.triggers, self.online_follow, self.online_sweep, self.recover):
            if loop is not None:
                await loop.stop()
        self.triggers = self.online_follow = self.online_sweep = self.recover = None
        stopping = [asyncio.ensure_future(m.shutdown()) for m in self.job_managers]
        if self.queue is not None:
            await self.queue.stop_worker()
        await asyncio.gather(*stopping)
        if self.slots is not None:
            self.slots.shutdown()

    async def close(self) -> None:
        if self.lora is not None:
            await self.lora.stop()
            self.lora = None
        if self.queue is not None:
            await self.queue.close()
            self.queue = None
        if self.notifications is not None:
            await self.notifications.close()
            self.notifications = None
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
            self.embedded = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None


async def _database(settings: Settings, owned: Owned) -> tuple[asyncpg.Pool, postgres.EmbeddedPostgres | None, str]:
    embedded = None
    url = settings.database_url
    if not url:
        embedded = owned.embedded = postgres.EmbeddedPostgres(settings.postgres_dir.resolve())
        url = embedded.start()  # in the main thread, which its keeper process is tied to
        log.info("started embedded PostgreSQL", extra={"pgdata": str(settings.postgres_dir)})
    pool = owned.pool = await postgres.connect(url)
    applied = await postgres.migrate(pool)
    if applied:
        log.info("database migrated", extra={"migrations": applied})
    return pool, embedded, url


def _artifact_store(settings: Settings) -> ArtifactStore:
    if settings.artifact_backend == "s3":
        return S3ArtifactStore(
            endpoint=settings.s3_endpoint, bucket=settings.s3_bucket, access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(), secure=settings.s3_secure,
            region=settings.s3_region,
        )
    return LocalArtifactStore(settings.artifacts_dir)


async def _registry(settings: Settings, pool: asyncpg.Pool, store: ArtifactStore) -> AdapterRegistry:
    try:
        await store.ensure_ready()
    except EngineError as exc:  # retried on first use; the rest of the server can serve meanwhile
        log.warning("artifact store not ready", extra={"reason": exc.reason, "error": exc.message})
    return AdapterRegistry(
        index=PostgresAdapterIndex(pool),
        store=store,
        serving=PostgresServingState(pool, sessions=PostgresOnlineStore(pool)),  # online sessions' too
        base_model_dir=lambda model_id: resolve_base_model(
            model_id, models=settings.base_models, cache_dir=settings.models_dir
        ),
        scratch_dir=settings.work_dir / "registry",
        retention_keep=settings.adapter_retention_keep,
        serving_limits=settings.serving_limits,
    )


def feedback_dataset_policy(settings: Settings) -> DatasetPolicy:
    """How feedback becomes examples, from the settings."""
    return DatasetPolicy(
        rating_positive_min=settings.feedback_rating_positive_min,
        rating_negative_max=settings.feedback_rating_negative_max,
        correction_weight=settings.feedback_correction_weight,
        implicit=tuple(
            (FeedbackKind(kind), label == "desirable")
            for kind, label in settings.feedback_kto_implicit.items() if label != "ignore"
        ),
        dwell_desirable_seconds=settings.feedback_kto_dwell_desirable_seconds,
    )


def knowledge_probe(settings: Settings) -> BaseKnowledgeProbe | None:
    """What measures base retention after training (its suites cached beside the converted base models)."""
    return BaseKnowledgeProbe(settings.models_dir) if settings.base_retention_probe else None


def base_protections(settings: Settings) -> dict[str, Any]:
    """A training runner's base protections (TrainingRunner's ``rehearsal`` and ``base_ewc``): the base model's
    answers for self-rehearsal and BASE_KL, and EWC against the base model on the same answers, all cached beside
    the converted base models."""
    rehearsal = SelfRehearsal(settings.models_dir)
    return {"rehearsal": rehearsal, "base_ewc": BaseEwc(settings.models_dir, rehearsal)}


def job_executor(manager: JobManager[Any, Any]) -> JobExecutor:
    async def execute(kind: str, job_id: str) -> None:
        await manager.execute(job_id)

    return execute


# The queue of each kind not in the training queue (engine.stores.job_queue.QUEUE): what only serving processes run,
# and what runs within limits of its own (online sessions; evaluations, preparations and pipeline runs, each its own).
JOB_QUEUES = {EVALUATION.name: SERVING_QUEUE, PREPARATION.name: PREPARATION_QUEUE, PIPELINE_RUN.name: PIPELINE_QUEUE,
              ONLINE_SESSION.name: ONLINE_QUEUE}


def start_workers(queue: WorkerQueue, workers: Sequence[tuple[str, Sequence[JobManager[Any, Any]]]]) -> None:
    """One queue worker per (name, managers): the managers' kinds, which share one JobSlots and one queue
    (``JOB_QUEUES``), taken with as many places as those slots run at once. procrastinate's worker takes an item
    whenever one of its places is free, whatever the item's kind: places beyond what its kinds run at once would
    take the next item and hold it here waiting for a slot, "doing" under a live worker, which no idle worker may
    take; kinds with limits of their own in one worker would take each other's places."""
    for name, managers in workers:
        slots = {id(m.slots): m.slots for m in managers}
        if len(slots) != 1:
            raise ValueError(f"the job kinds of worker {name} share one JobSlots: one worker takes their queue")
        (shared,) = slots.values()
        queue.start_worker({m.kind.name: job_executor(m) for m in managers}, concurrency=shared.max_concurrent_jobs,
                           name=name)


def start_job_workers(queue: WorkerQueue, jobs: Sequence[JobManager[Any, Any]],
                      sessions: JobManager[Any, Any] | None, *, name: str) -> None:
    """This process's workers of the training side (``start_workers``). ``jobs`` (training and Fisher) share the
    process's job slots and the training queue: their worker takes as many items at once as those slots run, so a
    busy worker leaves the next item to an idle one. ``sessions`` (online sessions, None where this worker runs
    none) have a queue and a worker of their own, with as many places as their own slots: a session never holds a
    training job's place, nor a training job a session's."""
    start_workers(queue, [(name, jobs), *([(f"{name}-online", (sessions,))] if sessions is not None else [])])


def start_serving_workers(queue: WorkerQueue, evaluations: JobManager[Any, Any],
                          preparations: JobManager[Any, Any] | None, pipeline_runs: JobManager[Any, Any], *,
                          name: str) -> None:
    """This process's workers of the serving side (``start_workers``): evaluations, preparations (None where this
    process runs none) and pipeline runs each run within slots of their own (one evaluation and one preparation at
    a time, ``pipeline_max_concurrent_runs`` runs), so each has a queue and a worker of its own with as many places:
    a replica running an evaluation leaves the next one to an idle replica (with one worker over them all, its
    places beyond the running evaluation's took it and held it here), and likewise a preparation or a run."""
    start_workers(queue, [(f"{name}-evaluation", (evaluations,)),
                          *([(f"{name}-preparation", (preparations,))] if preparations is not None else []),
                          (f"{name}-pipelines", (pipeline_runs,))])


async def build_engine(settings: Settings, owned: Owned, *, serve: bool = True, work: bool | None = None) -> Engine:
    """The real engine: PostgreSQL, the artifact store, the job queue and, when ``serve``, the serving engine.

    ``work`` runs jobs in this process (default: the ``embedded_worker`` setting). What it opens goes into
    ``owned`` as it opens, so a failure part way closes what was opened."""
    work = settings.embedded_worker if work is None else work
    pool, _, url = await _database(settings, owned)
    owned.store = _artifact_store(settings)
    registry = await _registry(settings, pool, owned.store)
    await registry.recover()
    feedback_store = PostgresFeedbackStore(pool)
    feedback_datasets = FeedbackDatasetBuilder(feedback_store, feedback_dataset_policy(settings))
    stored_datasets = StoredDatasets(
        CatalogConfig(datasets_dir=settings.datasets_dir, scratch_dir=settings.work_dir / "datasets",
                      max_bytes=settings.dataset_max_bytes),
        index=PostgresDatasetIndex(pool), store=owned.store, feedback=feedback_datasets,
        objects=owned.store if isinstance(owned.store, S3ArtifactStore) else None,  # s3:// sources: its client
    )
    versions = VersionDatasets(datasets_dir=settings.datasets_dir, feedback=feedback_datasets, stored=stored_datasets,
                               online=PostgresOnlineStore(pool))  # what online sessions' versions trained on
    if serve:
        owned.lora = await start_lora_control(settings, pool, registry, versions, owned.store)
    queue = owned.queue = ProcrastinateQueue(url, heartbeat_seconds=settings.worker_heartbeat_seconds,
                                             stalled_seconds=settings.worker_stalled_seconds,
                                             queues=JOB_QUEUES)
    await queue.open()
    notifications = owned.notifications = JobNotifications(pool)
    preparer = JobPreparer(
        PreparerConfig(
            datasets_dir=settings.datasets_dir,
            models_cache_dir=settings.models_dir,
            base_models=settings.base_models,
            ewc_lambda_min=settings.ewc_lambda_min,
            ewc_lambda_max=settings.ewc_lambda_max,
            serving_limits=settings.serving_limits,
        ),
        registry,
        feedback_datasets,
        datasets=stored_datasets,
    )
    slots = owned.slots = JobSlots(settings.max_concurrent_jobs)  # training and Fisher jobs share one limit
    snapshots = FisherSnapshotStore(pool, owned.store)
    planner = EwcPlanner(registry=registry, snapshots=snapshots, versions=versions)
    worker_id = f"{socket.gethostname()}-{os.getpid()}"
    training_manager = JobManager(
        runner=TrainingRunner(preparer=preparer, registry=registry, planner=planner, artifacts=owned.store,
                              probe=knowledge_probe(settings), **base_protections(settings),
                              trackers=Trackers(settings.training_trackers, settings.trackers_dir)),
        store=PostgresJobStore(pool, TRAINING, notifications), queue=queue, work_dir=settings.work_dir, slots=slots,
        worker_id=worker_id,
    )

    def base_model_dir(model_id: str) -> Path:
        return resolve_base_model(model_id, models=settings.base_models, cache_dir=settings.models_dir)

    fisher_config = FisherJobConfig(datasets_dir=settings.datasets_dir, batch_size=settings.fisher_batch_size)
    fisher_examples = FisherExamples(fisher_config, feedback_datasets)
    fisher_manager = JobManager(
        runner=FisherRunner(registry=registry, snapshots=snapshots, base_model_dir=base_model_dir,
                            config=fisher_config, examples=fisher_examples),
        store=PostgresJobStore(pool, FISHER, notifications), queue=queue, work_dir=settings.work_dir / "fisher",
        slots=slots, worker_id=worker_id,
    )
    def suite_path(relative: str, field_path: str) -> Path:
        return resolve_dataset_path(settings.datasets_dir, relative, field_path)

    dataset_suites = DatasetSuites(stored_datasets)  # stored dataset versions as golden suites

    # Evaluation jobs need the serving engine: they run where LoraControl does, one at a time, taken from their
    # own queue by their own worker (a training job never holds their place).
    evaluation_manager = JobManager(
        runner=EvaluationRunner(owned.lora.controller, suite_path=suite_path, datasets=dataset_suites),
        store=PostgresJobStore(pool, EVALUATION, notifications), queue=queue,
        work_dir=settings.work_dir / "evaluations", slots=JobSlots(1), worker_id=worker_id,
    ) if owned.lora is not None else None
    preparation_manager = await _preparation_manager(settings, owned, pool, stored_datasets,
                                                                notifications, worker_id) \
        if owned.lora is not None else None
    training = TrainingJobs(training_manager, preparer, planner, registry=registry, artifacts=owned.store,
                            scratch_dir=settings.work_dir / "checkpoint-publish")
    drift = drift_detector(settings, pool, registry, versions)
    pipelines, pipeline_manager = build_pipelines(
        settings, pool=pool, queue=queue, notifications=notifications, worker_id=worker_id,
        controller=owned.lora.controller, datasets=stored_datasets, training=training,
        check_training=preparer.check_request, suite_path=suite_path,
        suites=dataset_suites, drift=drift,
    ) if owned.lora is not None else (None, None)
    online, online_manager, online_serving = build_online(
        settings, pool=pool, queue=queue, notifications=notifications, worker_id=worker_id, registry=registry,
        preparer=preparer, planner=planner, artifacts=owned.store, lora=owned.lora, feedback=feedback_datasets)
    owned.job_managers = (training_manager, fisher_manager, online_manager,
                          *(m for m in (evaluation_manager, preparation_manager, pipeline_manager) if m is not None))
    managers = owned.job_managers

    async def recover() -> None:
        for manager in managers:
            await manager.recover()

    await recover()
    owned.recover = Periodic("job-recover", recover, settings.job_recover_seconds)
    owned.recover.start()
    if work:
        start_job_workers(queue, (training_manager, fisher_manager),
                          online_manager if settings.online_max_sessions else None, name=worker_id)
        log.info("worker started", extra={"worker": worker_id, "concurrency": settings.max_concurrent_jobs,
                                          "online_sessions": settings.online_max_sessions})
    if evaluation_manager is not None and pipeline_manager is not None and pipelines is not None:
        start_serving_workers(queue, evaluation_manager, preparation_manager, pipeline_manager,
                              name=worker_id)
        owned.triggers = Periodic("pipeline-triggers", pipelines.tick, settings.pipeline_trigger_interval_seconds)
        owned.triggers.start()
    if online_serving is not None:
        owned.online_follow = Periodic("online-serving", online_serving.tick, settings.online_follow_seconds)
        owned.online_follow.start()
    retention = online_retention(settings, pool=pool, sessions=online, registry=registry, artifacts=owned.store)
    owned.online_sweep = Periodic("online-retention", retention.sweep, settings.online_sweep_seconds)
    owned.online_sweep.start()
    return Engine(
        training=training,
        fisher=FisherJobs(fisher_manager, registry=registry, base_model_dir=base_model_dir, examples=fisher_examples),
        snapshots=snapshots,
        adapters=registry,
        lora=owned.lora.controller if owned.lora is not None else None,
        evaluations=EvaluationJobs(evaluation_manager, registry=registry, suite_path=suite_path,
                                   datasets=dataset_suites, base_model=settings.default_base_model,
                                   configured_suite=bool(settings.eval_suite_path))
        if evaluation_manager is not None else None,
        feedback=feedback_ingestor(settings, feedback_store),
        feedback_records=feedback_store,
        datasets=stored_datasets,
        pipelines=pipelines,
        drift=drift,
        online=online if owned.lora is not None else None,
        preparations=PreparationJobs(preparation_manager, artifacts=owned.store, server_path=suite_path,
                                     max_bytes=settings.dataset_max_bytes)
        if preparation_manager is not None else None,
    )


async def _preparation_manager(settings: Settings, owned: Owned, pool: asyncpg.Pool, datasets: StoredDatasets,
                               notifications: JobNotifications, worker_id: str) -> JobManager[Any, Any]:
    """Data preparation jobs ask the serving engine's model (or the engine prepare_generator_url names) for
    question-answer pairs: they run where LoraControl does, one at a time, from their own queue."""
    assert owned.lora is not None and owned.store is not None and owned.queue is not None
    lora = owned.lora
    generator = lora.client
    if settings.prepare_generator_url:
        generator = ServingClient(ServingConfig(
            base_url=settings.prepare_generator_url, mode=ServingMode.CUSTOM,
            timeout_seconds=settings.serving_timeout_seconds,
            load_timeout_seconds=settings.serving_load_timeout_seconds, retries=settings.serving_retries,
            backoff_seconds=settings.serving_backoff_seconds,
        ))
        await generator.start()
        lora.closing.append(generator.close)
    runner = PreparationRunner(
        generator, artifacts=owned.store, datasets=datasets,
        config=GeneratorConfig(model=settings.prepare_generator_model, max_tokens=settings.prepare_max_tokens),
        base_model=lambda: lora.controller.served_base_model)
    return JobManager(runner=runner, store=PostgresJobStore(pool, PREPARATION, notifications),
                      queue=owned.queue, work_dir=settings.work_dir / "preparations", slots=JobSlots(1),
                      worker_id=worker_id)
