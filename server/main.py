"""Composition root: serves the engine over gRPC (or runs only its job side, ``learning-engine-server worker``).

With server.engine_wiring, which builds the engine's parts from the settings, the only place that knows which
implementation backs each port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import asyncpg
import grpc
import torch
from grpc_health.v1 import _async as health_aio  # health.aio at run time; the stubs declare it here
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine import Engine, telemetry
from engine.lora.dataset_suites import DatasetSuites
from engine.stores.job_store import count_jobs
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
from server.engine_wiring import Owned, build_engine
from server.errors import ErrorInterceptor
from server.health_checks import HealthChecker, start_health_checks, unchecked_health
from server.online_wiring import online_defaults
from server.reflection import enable_server_reflection
from server.services import SERVICE_NAMES
from server.services.adapter import AdapterService
from server.services.dataset import DatasetService
from server.services.drift import DriftService
from server.services.evaluation import EvaluationService
from server.services.feedback import FeedbackService, build_feedback_service
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
class App:
    """A running server and what it owns; ``stop()`` releases all of it."""

    settings: Settings
    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
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


def prepare_process(settings: Settings) -> None:
    """Folders, torch threads and the interpreter's switch interval, once per process."""
    for folder in (settings.datasets_dir, settings.artifacts_dir, settings.models_dir, settings.work_dir):
        folder.mkdir(parents=True, exist_ok=True)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    sys.setswitchinterval(settings.switch_interval_seconds)


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
        # gRPC binds with SO_REUSEPORT by default: a second server on the port bound it too, and the kernel split the
        # connections between the two (a server without auth answering beside one with it). Off, it is refused.
        ("grpc.so_reuseport", 0),
    ]
    configure_tracing(settings)
    server = grpc.aio.server(
        interceptors=[*telemetry_interceptors(), access.from_settings(settings), ErrorInterceptor()], options=options
    )
    feedback = add_servicers(server, engine, settings)
    if feedback is not None:
        undo.callback(feedback.close)
    health_servicer = await unchecked_health()  # NOT_SERVING from the first call: the probes have not answered yet
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
    log.info("serving", extra={"address": access.netloc(settings.host, port), "data_dir": str(settings.data_dir),
                               "version": SERVER_VERSION})
    log.info(access.describe(settings))
    metrics = await start_metrics(settings, owned, undo)
    return App(settings, server, port, health_servicer, engine, owned, metrics=metrics, feedback=feedback,
               health_checks=checks)


async def start_metrics(settings: Settings, owned: Owned, undo: AsyncExitStack) -> MetricsServer | None:
    """``/metrics`` on ``metrics_port`` (None when unset), behind the HTTP doors' tokens and TLS, reading the stored
    jobs from ``owned``'s database at each scrape; ``undo`` stops it if the rest of start-up fails. A serving process
    and a worker alike (a worker's page holds the training series of the jobs it runs)."""
    if settings.metrics_port is None:
        return None
    metrics = MetricsServer(settings, refresh=_stored_jobs(owned.pool))
    try:
        await metrics.start()
    except OSError as exc:
        raise port_taken("metrics", settings.host, settings.metrics_port, "metrics_port", exc) from exc
    undo.push_async_callback(metrics.stop)
    return metrics


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
    print(f"learning-engine {SERVER_VERSION} listening on {access.netloc(settings.host, app.port)}", flush=True)
    await stopping
    await app.stop()
    return 0


@dataclass
class Worker:
    """A running ``learning-engine-server worker`` and what it owns; ``stop()`` releases all of it."""

    owned: Owned
    metrics: MetricsServer | None = None
    stopped: bool = False

    async def stop(self) -> None:
        """Running jobs stop at their next step (queued again for another worker), then /metrics, then the rest."""
        if self.stopped:
            return
        self.stopped = True
        await self.owned.shutdown_jobs()
        if self.metrics is not None:
            await self.metrics.stop()
        await self.owned.close()


async def start_worker(settings: Settings) -> Worker:
    """A worker without gRPC: the engine's job side on the shared database and artifact store. Its job spans go to
    ``otlp_endpoint`` and its metrics (the training series of the jobs it runs) to ``metrics_port``, as a serving
    process's do."""
    owned = Owned()
    async with AsyncExitStack() as undo:
        undo.push_async_callback(owned.close)
        undo.push_async_callback(owned.shutdown_jobs)
        owned.lock = DataDirLock(settings.data_dir)
        prepare_process(settings)
        sweep_scratch(settings.work_dir)
        configure_tracing(settings)
        await build_engine(settings, owned, serve=False, work=True)
        metrics = await start_metrics(settings, owned, undo)
        undo.pop_all()  # started: Worker.stop() releases it all from now on
    return Worker(owned, metrics)


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
    worker = starting.result()
    print(f"learning-engine {SERVER_VERSION} worker {worker.owned.job_managers[0].worker_id} running", flush=True)
    await stopping
    await worker.stop()
    return 0
