"""Composition root: builds every dependency from the settings and serves gRPC.

The only place that knows which implementation backs each port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass

import asyncpg
import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from engine.continual.planner import EwcPlanner
from engine.continual.runner import FisherJobConfig, FisherJobManager
from engine.continual.version_data import VersionDatasets
from engine.errors import EngineError
from engine.feedback.dataset import DatasetPolicy, FeedbackDatasetBuilder
from engine.feedback.events import FeedbackKind
from engine.jobs.manager import TrainingJobManager
from engine.registry import AdapterRegistry, ArtifactStore
from engine.stores import postgres
from engine.stores.adapter_index import PostgresAdapterIndex
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.artifacts_s3 import S3ArtifactStore
from engine.stores.feedback_store import PostgresFeedbackStore
from engine.stores.fisher_store import FisherSnapshotStore
from engine.stores.job_store import FISHER_TABLES, PostgresJobStore
from engine.stores.serving_state import PostgresServingState
from engine.training.models import resolve_base_model
from engine.training.preparation import JobPreparer, PreparerConfig
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
from server.health_checks import HealthChecker, start_health_checks
from server.lora_wiring import LoraRuntime, start_lora_control
from server.services import SERVICE_NAMES
from server.services.adapter import AdapterService
from server.services.feedback import FeedbackService, build_feedback_service
from server.services.fisher import FisherService
from server.services.lora_control import LoraControlService
from server.services.training import TrainingService
from server.settings import Settings
from server.startup import DataDirLock, StartError, describe, port_taken, sweep_scratch
from server.telemetry import MetricsServer, configure_tracing
from server.telemetry import interceptors as telemetry_interceptors
from server.version import SERVER_VERSION

log = logging.getLogger(__name__)



@dataclass
class App:
    """A running server and what it owns; ``stop()`` releases all of it."""

    settings: Settings
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    jobs: TrainingJobManager
    pool: asyncpg.Pool
    embedded: postgres.EmbeddedPostgres | None
    metrics: MetricsServer | None = None
    lora: LoraRuntime | None = None
    fisher: FisherJobManager | None = None
    feedback: FeedbackService | None = None
    health_checks: HealthChecker | None = None
    lock: DataDirLock | None = None
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
        await self.jobs.shutdown()
        if self.fisher is not None:
            await self.fisher.shutdown()
        await self.server.stop(grace)
        if self.feedback is not None:
            self.feedback.close()
        if self.metrics is not None:
            await self.metrics.stop()
        if self.lora is not None:
            await self.lora.stop()
        await self.pool.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        if self.lock is not None:
            self.lock.release()


async def _database(settings: Settings, undo: AsyncExitStack) -> tuple[asyncpg.Pool, postgres.EmbeddedPostgres | None]:
    embedded = None
    url = settings.database_url
    if not url:
        embedded = postgres.EmbeddedPostgres(settings.postgres_dir.resolve())
        url = embedded.start()  # in the main thread, which its keeper process is tied to
        undo.push_async_callback(asyncio.to_thread, embedded.stop)
        log.info("started embedded PostgreSQL", extra={"pgdata": str(settings.postgres_dir)})
    pool = await postgres.connect(url)
    undo.push_async_callback(pool.close)
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


async def _registry(settings: Settings, pool: asyncpg.Pool, store: ArtifactStore) -> AdapterRegistry:
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


async def start(settings: Settings) -> App:
    """Build and start everything. If a part fails (or start-up is cancelled), what had started is stopped
    again, in reverse order, before the error leaves (``server/startup.py`` says it in one line)."""
    async with AsyncExitStack() as undo:
        app = await _start(settings, undo)
        undo.pop_all()  # started: App.stop() releases it all from now on
        return app


async def _start(settings: Settings, undo: AsyncExitStack) -> App:
    lock = DataDirLock(settings.data_dir)
    undo.callback(lock.release)
    for folder in (settings.datasets_dir, settings.artifacts_dir, settings.models_dir, settings.work_dir):
        folder.mkdir(parents=True, exist_ok=True)
    sweep_scratch(settings.work_dir)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    sys.setswitchinterval(settings.switch_interval_seconds)
    pool, embedded = await _database(settings, undo)

    store = _artifact_store(settings)
    registry = await _registry(settings, pool, store)
    await registry.recover()
    lora = await start_lora_control(settings, pool, registry)
    undo.push_async_callback(lora.stop)
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
    training_store = PostgresJobStore(pool)
    snapshots = FisherSnapshotStore(pool, settings.artifacts_dir)
    jobs = TrainingJobManager(
        store=training_store,
        registry=registry,
        preparer=preparer,
        work_dir=settings.work_dir,
        max_concurrent_jobs=settings.max_concurrent_jobs,
        ewc=EwcPlanner(registry=registry, snapshots=snapshots, versions=VersionDatasets(
            training_job=training_store.get_job, datasets_dir=settings.datasets_dir, feedback=feedback_datasets)),
    )
    await jobs.recover()
    undo.push_async_callback(jobs.shutdown)
    fisher_jobs = FisherJobManager(
        store=PostgresJobStore(pool, FISHER_TABLES), registry=registry, snapshots=snapshots,
        base_model_dir=lambda model_id: resolve_base_model(
            model_id, models=settings.base_models, cache_dir=settings.models_dir
        ),
        config=FisherJobConfig(datasets_dir=settings.datasets_dir, batch_size=settings.fisher_batch_size),
        work_dir=settings.work_dir / "fisher",
        max_concurrent_jobs=settings.max_concurrent_jobs, feedback=feedback_datasets,
    )
    await fisher_jobs.recover()
    undo.push_async_callback(fisher_jobs.shutdown)

    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]
    configure_tracing(settings)
    server = grpc.aio.server(
        interceptors=[*telemetry_interceptors(), access.from_settings(settings), ErrorInterceptor()], options=options
    )
    training_pb2_grpc.add_TrainingServiceServicer_to_server(
        TrainingService(
            jobs, default_base_model=settings.default_base_model,
            ewc_defaults=EwcDefaults(settings.ewc_fisher_space, settings.ewc_lambda_defaults),
        ),
        server,
    )
    fisher_pb2_grpc.add_FisherServiceServicer_to_server(
        FisherService(fisher_jobs, snapshots, default_base_model=settings.default_base_model,
                      default_space=settings.ewc_fisher_space), server
    )
    adapter_pb2_grpc.add_AdapterServiceServicer_to_server(
        AdapterService(registry, default_base_model=settings.default_base_model,
                       scratch_dir=settings.work_dir / "adapter-rpc"),
        server,
    )
    lora_control_pb2_grpc.add_LoraControlServiceServicer_to_server(
        LoraControlService(lora.controller, datasets_dir=settings.datasets_dir), server
    )
    feedback = build_feedback_service(settings, feedback_store)
    undo.callback(feedback.close)
    feedback_pb2_grpc.add_FeedbackServiceServicer_to_server(feedback, server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    try:
        port = access.bind(server, settings)
    except RuntimeError:  # grpc says only "Failed to bind"
        port = 0
    if port == 0:
        raise StartError(f"gRPC port {settings.port} on {settings.host} is in use or cannot be bound; set port")
    await server.start()
    undo.push_async_callback(server.stop, 0)
    checks = await start_health_checks(health_servicer, settings, pool=pool, store=store, serving=lora.client)
    undo.push_async_callback(checks.stop)
    log.info("serving", extra={"address": f"{settings.host}:{port}", "data_dir": str(settings.data_dir),
                               "version": SERVER_VERSION})
    log.info(access.describe(settings))
    metrics = MetricsServer(settings) if settings.metrics_port is not None else None
    if metrics is not None:
        try:
            await metrics.start()
        except OSError as exc:
            raise port_taken("metrics", settings.host, settings.metrics_port or 0, "metrics_port", exc) from exc
        undo.push_async_callback(metrics.stop)
    return App(
        settings, server, port, health_servicer, jobs, pool, embedded, lora=lora, metrics=metrics, fisher=fisher_jobs,
        feedback=feedback, health_checks=checks, lock=lock,
    )


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
