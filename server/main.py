"""Composition root: builds every dependency from the settings and serves gRPC.

The only place that knows which implementation backs each port.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from engine import Engine
from engine.continual.planner import EwcPlanner
from engine.continual.runner import FisherExamples, FisherJobConfig, FisherJobs, FisherRunner
from engine.continual.spec import FISHER
from engine.continual.version_data import VersionDatasets
from engine.errors import EngineError
from engine.feedback.dataset import DatasetPolicy, FeedbackDatasetBuilder
from engine.feedback.events import FeedbackKind
from engine.jobs.manager import JobManager, JobSlots
from engine.registry import AdapterRegistry, ArtifactStore
from engine.stores import postgres
from engine.stores.adapter_index import PostgresAdapterIndex
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.artifacts_s3 import S3ArtifactStore
from engine.stores.feedback_store import PostgresFeedbackStore
from engine.stores.fisher_store import FisherSnapshotStore
from engine.stores.job_store import PostgresJobStore
from engine.stores.serving_state import PostgresServingState
from engine.training.models import resolve_base_model
from engine.training.preparation import JobPreparer, PreparerConfig
from engine.training.runner import TrainingJobs, TrainingRunner
from engine.training.spec import TRAINING
from learning.v1 import (
    adapter_pb2_grpc,
    feedback_pb2_grpc,
    fisher_pb2_grpc,
    lora_control_pb2_grpc,
    training_pb2_grpc,
)
from server import access
from server.convert import EwcDefaults
from server.errors import ErrorInterceptor
from server.lora_wiring import LoraRuntime, start_lora_control
from server.services import SERVICE_NAMES
from server.services.adapter import AdapterService
from server.services.feedback import FeedbackService, build_feedback_service, feedback_ingestor
from server.services.fisher import FisherService
from server.services.lora_control import LoraControlService
from server.services.training import TrainingService
from server.settings import Settings
from server.telemetry import MetricsServer, configure_tracing
from server.telemetry import interceptors as telemetry_interceptors

log = logging.getLogger(__name__)



@dataclass
class Owned:
    """What the real engine's parts hold open, released in order by :meth:`close`."""

    pool: asyncpg.Pool | None = None
    embedded: postgres.EmbeddedPostgres | None = None
    job_managers: tuple[JobManager[Any, Any], ...] = ()
    slots: JobSlots | None = None
    lora: LoraRuntime | None = None

    async def shutdown_jobs(self) -> None:
        for manager in self.job_managers:
            await manager.shutdown()
        if self.slots is not None:
            self.slots.shutdown()

    async def close(self) -> None:
        if self.lora is not None:
            await self.lora.stop()
        if self.pool is not None:
            await self.pool.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


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

    async def stop(self, grace: float | None = None) -> None:
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        log.info("shutting down", extra={"grace_seconds": grace})
        await self.health.enter_graceful_shutdown()
        await self.owned.shutdown_jobs()
        await self.server.stop(grace)
        if self.feedback is not None:
            self.feedback.close()
        if self.metrics is not None:
            self.metrics.stop()
        await self.owned.close()


async def _database(settings: Settings) -> tuple[asyncpg.Pool, postgres.EmbeddedPostgres | None]:
    embedded = None
    url = settings.database_url
    if not url:
        embedded = postgres.EmbeddedPostgres(settings.postgres_dir.resolve())
        url = await asyncio.to_thread(embedded.start)
        log.info("started embedded PostgreSQL", extra={"pgdata": str(settings.postgres_dir)})
    pool = await postgres.connect(url)
    applied = await postgres.migrate(pool)
    if applied:
        log.info("database migrated", extra={"migrations": applied})
    return pool, embedded


def _artifact_store(settings: Settings) -> ArtifactStore:
    if settings.artifact_backend == "s3":
        return S3ArtifactStore(
            endpoint=settings.s3_endpoint, bucket=settings.s3_bucket, access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(), secure=settings.s3_secure,
            region=settings.s3_region,
        )
    return LocalArtifactStore(settings.artifacts_dir)


async def _registry(settings: Settings, pool: asyncpg.Pool) -> AdapterRegistry:
    store = _artifact_store(settings)
    try:
        await store.ensure_ready()
    except EngineError as exc:  # retried on first use; the rest of the server can serve meanwhile
        log.warning("artifact store not ready", extra={"reason": exc.reason, "error": exc.message})
    return AdapterRegistry(
        index=PostgresAdapterIndex(pool),
        store=store,
        serving=PostgresServingState(pool),
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


async def build_engine(settings: Settings, owned: Owned) -> Engine:
    """The real engine: PostgreSQL, the artifact store, the serving engine; what it opens goes into ``owned``."""
    owned.pool, owned.embedded = await _database(settings)
    pool = owned.pool
    registry = await _registry(settings, pool)
    owned.lora = await start_lora_control(settings, pool, registry)
    feedback_store = PostgresFeedbackStore(pool)
    feedback_datasets = FeedbackDatasetBuilder(feedback_store, feedback_dataset_policy(settings))
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
    )
    slots = owned.slots = JobSlots(settings.max_concurrent_jobs)  # training and Fisher jobs share one limit
    snapshots = FisherSnapshotStore(pool, settings.artifacts_dir)
    planner = EwcPlanner(registry=registry, snapshots=snapshots, versions=VersionDatasets(
        datasets_dir=settings.datasets_dir, feedback=feedback_datasets))
    training_manager = JobManager(
        runner=TrainingRunner(preparer=preparer, registry=registry, planner=planner),
        store=PostgresJobStore(pool, TRAINING), work_dir=settings.work_dir, slots=slots,
    )

    def base_model_dir(model_id: str) -> Path:
        return resolve_base_model(model_id, models=settings.base_models, cache_dir=settings.models_dir)

    fisher_config = FisherJobConfig(datasets_dir=settings.datasets_dir, batch_size=settings.fisher_batch_size)
    fisher_examples = FisherExamples(fisher_config, feedback_datasets)
    fisher_manager = JobManager(
        runner=FisherRunner(registry=registry, snapshots=snapshots, base_model_dir=base_model_dir,
                            config=fisher_config, examples=fisher_examples),
        store=PostgresJobStore(pool, FISHER), work_dir=settings.work_dir / "fisher", slots=slots,
    )
    owned.job_managers = (training_manager, fisher_manager)
    for manager in owned.job_managers:
        await manager.recover()
    return Engine(
        training=TrainingJobs(training_manager, preparer, planner),
        fisher=FisherJobs(fisher_manager, registry=registry, base_model_dir=base_model_dir, examples=fisher_examples),
        snapshots=snapshots,
        adapters=registry,
        lora=owned.lora.controller,
        feedback=feedback_ingestor(settings, feedback_store),
        feedback_records=feedback_store,
    )


def add_servicers(server: grpc.aio.Server, engine: Engine, settings: Settings) -> FeedbackService | None:
    """Register a servicer for every part the engine has; returns the feedback servicer (it owns workers)."""
    training_pb2_grpc.add_TrainingServiceServicer_to_server(
        TrainingService(
            engine.training, default_base_model=settings.default_base_model,
            ewc_defaults=EwcDefaults(settings.ewc_fisher_space, settings.ewc_lambda_defaults),
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
    if engine.lora is not None:
        lora_control_pb2_grpc.add_LoraControlServiceServicer_to_server(
            LoraControlService(engine.lora, datasets_dir=settings.datasets_dir), server
        )
    if engine.feedback is None or engine.feedback_records is None:
        return None
    feedback = build_feedback_service(settings, engine.feedback, engine.feedback_records)
    feedback_pb2_grpc.add_FeedbackServiceServicer_to_server(feedback, server)
    return feedback


async def start(settings: Settings, *, engine: Engine | None = None, owned: Owned | None = None) -> App:
    """Build the engine (unless one is given, e.g. over in-memory stores) and serve it."""
    prepare_process(settings)
    owned = owned or Owned()
    if engine is None:
        engine = await build_engine(settings, owned)
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]
    configure_tracing(settings)
    server = grpc.aio.server(
        interceptors=[*telemetry_interceptors(), access.from_settings(settings), ErrorInterceptor()], options=options
    )
    feedback = add_servicers(server, engine, settings)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    port = access.bind(server, settings)
    if port == 0:
        raise RuntimeError(f"could not bind {settings.host}:{settings.port}")
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", extra={"address": f"{settings.host}:{port}", "data_dir": str(settings.data_dir)})
    log.info(access.describe(settings))
    metrics = MetricsServer(settings.host, settings.metrics_port) if settings.metrics_port is not None else None
    return App(settings, server, port, health_servicer, engine, owned, metrics=metrics, feedback=feedback)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    app = await start(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"learning-engine listening on {settings.host}:{app.port}", flush=True)
    await stop.wait()
    await app.stop()
