"""Composition root: builds every dependency from the settings and serves gRPC.

The only place that knows which implementation backs each port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from engine import Engine, telemetry
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
from engine.periodic import Periodic
from engine.pipelines.spec import PIPELINE_RUN
from engine.preparation.jobs import PREPARATION, GeneratorConfig, PreparationJobs, PreparationRunner
from engine.registry import AdapterRegistry, ArtifactStore
from engine.serving.client import ServingClient, ServingConfig, ServingMode
from engine.stores import postgres
from engine.stores.adapter_index import PostgresAdapterIndex
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.artifacts_s3 import S3ArtifactStore
from engine.stores.dataset_store import PostgresDatasetIndex
from engine.stores.feedback_store import PostgresFeedbackStore
from engine.stores.fisher_store import FisherSnapshotStore
from engine.stores.job_queue import PIPELINE_QUEUE, SERVING_QUEUE, ProcrastinateQueue
from engine.stores.job_store import JobNotifications, PostgresJobStore, count_jobs
from engine.stores.online_store import PostgresOnlineStore
from engine.stores.serving_state import PostgresServingState
from engine.training.datasets import resolve_dataset_path
from engine.training.models import resolve_base_model
from engine.training.preparation import JobPreparer, PreparerConfig
from engine.training.runner import TrainingJobs, TrainingRunner
from engine.training.spec import TRAINING
from engine.training.stored_datasets import CatalogConfig, StoredDatasets
from engine.training.tracking import Trackers
from learning.v1 import (
    adapter_pb2_grpc,
    dataset_pb2_grpc,
    drift_pb2_grpc,
    evaluation_pb2_grpc,
    feedback_pb2_grpc,
    fisher_pb2_grpc,
    lora_control_pb2_grpc,
    online_pb2_grpc,
    pipeline_pb2_grpc,
    preparation_pb2_grpc,
    training_pb2_grpc,
)
from server import access
from server.convert import EwcDefaults
from server.drift_wiring import drift_detector
from server.errors import ErrorInterceptor
from server.health_checks import HealthChecker, Probe, start_health_checks
from server.lora_wiring import LoraRuntime, start_lora_control
from server.online_wiring import build_online, online_defaults, online_retention
from server.pipeline_wiring import build_pipelines
from server.reflection import enable_server_reflection
from server.services import SERVICE_NAMES
from server.services.adapter import AdapterService
from server.services.dataset import DatasetService
from server.services.drift import DriftService
from server.services.evaluation import EvaluationService
from server.services.feedback import FeedbackService, build_feedback_service, feedback_ingestor
from server.services.fisher import FisherService
from server.services.lora_control import LoraControlService
from server.services.online import OnlineLearningService
from server.services.pipeline import PipelineService
from server.services.preparation import DataPreparationService
from server.services.training import TrainingService
from server.settings import Settings
from server.startup import DataDirLock, StartError, describe, port_taken, sweep_scratch
from server.telemetry import MetricsServer, configure_tracing
from server.telemetry import interceptors as telemetry_interceptors
from server.version import SERVER_VERSION

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
        for loop in (self.triggers, self.online_follow, self.online_sweep):
            if loop is not None:
                await loop.stop()
        self.triggers = self.online_follow = self.online_sweep = None
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


@dataclass
class App:
    """A running server and what it owns; ``stop()`` releases all of it."""

    settings: Settings
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    engine: Engine
    owned: Owned
    metrics: MetricsServer | None = None
    feedback: FeedbackService | None = None
    health_checks: HealthChecker | None = None
    stopped: bool = False

    async def stop(self, grace: float | None = None) -> None:
        if self.stopped:
            return
        self.stopped = True
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        log.info("shutting down", extra={"grace_seconds": grace})
        if self.health_checks is not None:
            await self.health_checks.stop()
        await self.health.enter_graceful_shutdown()
        await self.owned.shutdown_jobs()
        await self.server.stop(grace)
        if self.feedback is not None:
            self.feedback.close()
        if self.metrics is not None:
            await self.metrics.stop()
        await self.owned.close()


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
        serving=PostgresServingState(pool, aliases=PostgresOnlineStore(pool)),  # live aliases' versions too
        base_model_dir=lambda model_id: resolve_base_model(
            model_id, models=settings.base_models, cache_dir=settings.models_dir
        ),
        scratch_dir=settings.work_dir / "registry",
        retention_keep=settings.adapter_retention_keep,
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


def prepare_process(settings: Settings) -> None:
    """Folders, torch threads and the interpreter's switch interval, once per process."""
    for folder in (settings.datasets_dir, settings.artifacts_dir, settings.models_dir, settings.work_dir):
        folder.mkdir(parents=True, exist_ok=True)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    sys.setswitchinterval(settings.switch_interval_seconds)


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
                                             queues={EVALUATION.name: SERVING_QUEUE,
                                                     PREPARATION.name: SERVING_QUEUE,
                                                     PIPELINE_RUN.name: PIPELINE_QUEUE})
    await queue.open()
    notifications = owned.notifications = JobNotifications(pool)
    preparer = JobPreparer(
        PreparerConfig(
            datasets_dir=settings.datasets_dir,
            models_cache_dir=settings.models_dir,
            base_models=settings.base_models,
            ewc_lambda_min=settings.ewc_lambda_min,
            ewc_lambda_max=settings.ewc_lambda_max,
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
        controller=owned.lora.controller, datasets=stored_datasets, training=training, suite_path=suite_path,
        suites=dataset_suites, drift=drift,
    ) if owned.lora is not None else (None, None)
    online, online_manager, online_serving = build_online(
        settings, pool=pool, queue=queue, notifications=notifications, worker_id=worker_id, registry=registry,
        preparer=preparer, planner=planner, artifacts=owned.store, lora=owned.lora, feedback=feedback_datasets)
    owned.job_managers = (training_manager, fisher_manager, online_manager,
                          *(m for m in (evaluation_manager, preparation_manager, pipeline_manager) if m is not None))
    for manager in owned.job_managers:
        await manager.recover()
    if work:
        # An online session holds its place for as long as it runs: sessions have places of their own.
        queue.start_worker({m.kind.name: job_executor(m) for m in (training_manager, fisher_manager, online_manager)},
                           concurrency=settings.max_concurrent_jobs + settings.online_max_sessions, name=worker_id)
        log.info("worker started", extra={"worker": worker_id, "concurrency": settings.max_concurrent_jobs})
    if evaluation_manager is not None and pipeline_manager is not None and pipelines is not None:
        # One worker takes both serving-side queues (each listening worker holds a database connection); each
        # kind's own slots keep an evaluation from waiting behind pipeline runs, which mostly wait themselves.
        serving_kinds = {EVALUATION.name: job_executor(evaluation_manager),
                         PIPELINE_RUN.name: job_executor(pipeline_manager)}
        if preparation_manager is not None:
            serving_kinds[PREPARATION.name] = job_executor(preparation_manager)
        queue.start_worker(serving_kinds, concurrency=len(serving_kinds) - 1 + settings.pipeline_max_concurrent_runs,
                           name=f"{worker_id}-serving")
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
    question-answer pairs: they run where LoraControl does, one at a time, from the serving queue."""
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


def add_servicers(server: grpc.aio.Server, engine: Engine, settings: Settings) -> FeedbackService | None:
    """Register a servicer for every part the engine has; returns the feedback servicer (it owns workers)."""
    training_pb2_grpc.add_TrainingServiceServicer_to_server(
        TrainingService(
            engine.training, default_base_model=settings.default_base_model,
            ewc_defaults=EwcDefaults(settings.ewc_fisher_space, settings.ewc_lambda_defaults),
            defaults=settings.training_defaults,
        ),
        server,
    )
    fisher_pb2_grpc.add_FisherServiceServicer_to_server(
        FisherService(engine.fisher, engine.snapshots, default_base_model=settings.default_base_model,
                      default_space=settings.ewc_fisher_space), server
    )
    adapter_pb2_grpc.add_AdapterServiceServicer_to_server(
        AdapterService(engine.adapters, default_base_model=settings.default_base_model,
                       scratch_dir=settings.work_dir / "adapter-rpc"),
        server,
    )
    if engine.datasets is not None:
        dataset_pb2_grpc.add_DatasetServiceServicer_to_server(
            DatasetService(engine.datasets, scratch_dir=settings.work_dir / "dataset-rpc"), server
        )
    if engine.lora is not None:
        lora_control_pb2_grpc.add_LoraControlServiceServicer_to_server(
            LoraControlService(engine.lora, datasets_dir=settings.datasets_dir,
                               datasets=DatasetSuites(engine.datasets) if engine.datasets is not None else None),
            server,
        )
    if engine.evaluations is not None:
        evaluation_pb2_grpc.add_EvaluationServiceServicer_to_server(
            EvaluationService(engine.evaluations, default_base_model=settings.default_base_model), server
        )
    if engine.preparations is not None:
        preparation_pb2_grpc.add_DataPreparationServiceServicer_to_server(
            DataPreparationService(engine.preparations), server)
    if engine.pipelines is not None:
        pipeline_pb2_grpc.add_PipelineServiceServicer_to_server(
            PipelineService(engine.pipelines, default_base_model=settings.default_base_model,
                            ewc_defaults=EwcDefaults(settings.ewc_fisher_space, settings.ewc_lambda_defaults),
                            defaults=settings.training_defaults), server
        )
    if engine.drift is not None:
        drift_pb2_grpc.add_DriftServiceServicer_to_server(
            DriftService(engine.drift, default_base_model=settings.default_base_model), server
        )
    if engine.online is not None:
        online_pb2_grpc.add_OnlineLearningServiceServicer_to_server(
            OnlineLearningService(engine.online, online_defaults(settings)), server
        )
    if engine.feedback is None or engine.feedback_records is None:
        return None
    feedback = build_feedback_service(settings, engine.feedback, engine.feedback_records)
    feedback_pb2_grpc.add_FeedbackServiceServicer_to_server(feedback, server)
    return feedback


async def start(settings: Settings, *, engine: Engine | None = None, owned: Owned | None = None) -> App:
    """Build the engine (unless one is given, e.g. over in-memory stores) and serve it. If a part fails (or
    start-up is cancelled), what had started is stopped again before the error leaves (``server/startup.py``
    says it in one line)."""
    owned = owned or Owned()
    async with AsyncExitStack() as undo:
        undo.push_async_callback(owned.close)
        undo.push_async_callback(owned.shutdown_jobs)
        app = await _start(settings, engine, owned, undo)
        undo.pop_all()  # started: App.stop() releases it all from now on
        return app


async def _start(settings: Settings, engine: Engine | None, owned: Owned, undo: AsyncExitStack) -> App:
    if owned.lock is None:
        owned.lock = DataDirLock(settings.data_dir)
    prepare_process(settings)
    sweep_scratch(settings.work_dir)
    if engine is None:
        engine = await build_engine(settings, owned)
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Clients keep a watch stream alive with HTTP/2 pings while nothing is sent (the Python client every 30 s);
        # gRPC's server default allows one per 5 min without data and answers more with GOAWAY "too_many_pings",
        # which cut `jobs watch` in a step longer than a minute.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]
    configure_tracing(settings)
    server = grpc.aio.server(
        interceptors=[*telemetry_interceptors(), access.from_settings(settings), ErrorInterceptor()], options=options
    )
    feedback = add_servicers(server, engine, settings)
    if feedback is not None:
        undo.callback(feedback.close)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_server_reflection((*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server)
    try:
        port = access.bind(server, settings)
    except RuntimeError:  # grpc says only "Failed to bind"
        port = 0
    if port == 0:
        raise StartError(f"gRPC port {settings.port} on {settings.host} is in use or cannot be bound; set port")
    await server.start()
    undo.push_async_callback(server.stop, 0)
    checks = await start_health_checks(health_servicer, settings, owned.probes())
    undo.push_async_callback(checks.stop)
    log.info("serving", extra={"address": f"{settings.host}:{port}", "data_dir": str(settings.data_dir),
                               "version": SERVER_VERSION})
    log.info(access.describe(settings))
    metrics = MetricsServer(settings, refresh=_stored_jobs(owned.pool)) if settings.metrics_port is not None else None
    if metrics is not None:
        try:
            await metrics.start()
        except OSError as exc:
            raise port_taken("metrics", settings.host, settings.metrics_port or 0, "metrics_port", exc) from exc
        undo.push_async_callback(metrics.stop)
    return App(settings, server, port, health_servicer, engine, owned, metrics=metrics, feedback=feedback,
               health_checks=checks)


def _stored_jobs(pool: asyncpg.Pool | None) -> Callable[[], Awaitable[None]] | None:
    """What /metrics reads from the database at each scrape: the jobs by kind and state (none on in-memory
    stores)."""
    if pool is None:
        return None

    async def refresh() -> None:
        telemetry.jobs_stored(await count_jobs(pool))

    return refresh


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT, then shut down gracefully; returns the exit status. A failed start is one line
    on stderr (exit 1); SIGTERM/SIGINT during start-up stops what had started (exit 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.ensure_future(start(settings))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
        print("learning-engine: stopped during start-up", file=sys.stderr, flush=True)
        return 0
    if (error := starting.exception()) is not None:
        stopping.cancel()
        log.debug("start failed", exc_info=error)
        print(f"learning-engine: cannot start: {describe(error)}", file=sys.stderr, flush=True)
        return 1
    app = starting.result()
    print(f"learning-engine {SERVER_VERSION} listening on {settings.host}:{app.port}", flush=True)
    await stopping
    await app.stop()
    return 0


async def start_worker(settings: Settings) -> Owned:
    """A worker without gRPC: the engine's job side on the shared database and artifact store."""
    owned = Owned()
    async with AsyncExitStack() as undo:
        undo.push_async_callback(owned.close)
        undo.push_async_callback(owned.shutdown_jobs)
        owned.lock = DataDirLock(settings.data_dir)
        prepare_process(settings)
        sweep_scratch(settings.work_dir)
        await build_engine(settings, owned, serve=False, work=True)
        undo.pop_all()
    return owned


async def work(settings: Settings) -> int:
    """``learning-engine-server worker``: run jobs until SIGTERM/SIGINT; running jobs then stop at their next
    step, keep their progress (checkpoint) and are queued again for another worker."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.ensure_future(start_worker(settings))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
        return 0
    if (error := starting.exception()) is not None:
        stopping.cancel()
        print(f"learning-engine worker: cannot start: {describe(error)}", file=sys.stderr, flush=True)
        return 1
    owned = starting.result()
    print(f"learning-engine {SERVER_VERSION} worker {owned.job_managers[0].worker_id} running", flush=True)
    await stopping
    await owned.shutdown_jobs()
    await owned.close()
    return 0
