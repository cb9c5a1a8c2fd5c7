"""Builds LoraControl from the settings: serving client, gateway, controller (with the feedback ratings its canaries
decide on), auto-rollback, and the embedded reference backend (a subprocess) when no ``serving_url`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from engine.errors import Unavailable
from engine.lora import evaluation as ev
from engine.lora.auto_rollback import AutoRollback, AutoRollbackConfig
from engine.lora.controller import ControlConfig, LoraController
from engine.lora.feedback_rates import FeedbackStatsRates
from engine.lora.fetch import RegistryAdapters
from engine.lora.judge import JudgeConfig
from engine.lora.suites import LineageSuites, VersionExamples
from engine.periodic import Periodic
from engine.registry import AdapterRegistry
from engine.registry.ports import ArtifactStore
from engine.serving.alias_router import AliasRouter
from engine.serving.client import ServingClient, ServingConfig, ServingMode, ServingPaths
from engine.serving.gateway import Gateway
from engine.serving.reference_backend import MAX_TOKENS_LIMIT
from engine.stores.feedback_store import PostgresFeedbackStore
from engine.stores.lora_store import PostgresLoraStore
from engine.stores.online_store import PostgresOnlineStore
from engine.stores.serving_state import PostgresServingState
from engine.training.models import resolve_base_model
from server.access import netloc, server_ssl_context, tokens_from_settings
from server.http_doors import GATEWAY_ROLES, bearer_auth
from server.settings import Settings
from server.startup import port_taken

log = logging.getLogger(__name__)


@dataclass
class LoraRuntime:
    controller: LoraController
    gateway: Gateway
    client: ServingClient
    auto_rollback: AutoRollback | None
    backend: asyncio.subprocess.Process | None
    follower: Periodic | None = None
    closing: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # other clients to close, first

    async def stop(self) -> None:
        for close in self.closing:
            await close()
        if self.follower is not None:
            await self.follower.stop()
        if self.auto_rollback is not None:
            await self.auto_rollback.stop()
        await self.controller.close()
        await self.gateway.stop()
        await self.client.close()
        if self.backend is not None:
            await _end(self.backend)


async def _end(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        async with asyncio.timeout(10):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


BACKEND_HOST = "127.0.0.1"  # where the embedded reference backend listens


def backend_max_tokens(settings: Settings) -> int:
    """The longest answer the embedded reference backend serves: its own default (MAX_TOKENS_LIMIT), or the longest
    one a configured setting asks the serving target for (a gate prompt, a judge's verdict, a generated chunk's
    pairs)."""
    return max(MAX_TOKENS_LIMIT, settings.eval_max_tokens, settings.eval_judge_max_tokens, settings.prepare_max_tokens)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def embedded_backend_name(settings: Settings) -> str:
    """The name LoraControl keeps the embedded reference backend's state under: its port is picked afresh at each
    start (reference_backend_port 0), and state kept under its URL was lost at every restart (the active version,
    the known-good one, a split), while the rows of the old URL went on protecting their versions. The backend is
    this server's own, so it is named after the machine and the data dir, which a restart keeps."""
    return f"reference-backend://{socket.gethostname()}{settings.data_dir.resolve()}"


async def start_reference_backend(settings: Settings) -> tuple[asyncio.subprocess.Process, str]:
    """``python -m engine.serving.reference_backend`` on the default base model; waits until healthy."""
    model_dir: Path = await asyncio.to_thread(
        resolve_base_model, settings.default_base_model, models=settings.base_models, cache_dir=settings.models_dir
    )
    # On loopback whatever ``host`` is: the gateway, in this process, is its only caller, and it has no tokens or TLS
    # of its own (anyone reaching it could load and unload adapters).
    host = BACKEND_HOST
    port = settings.reference_backend_port or _free_port(host)
    log_file = (settings.data_dir / "reference-backend.log").open("ab")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.serving.reference_backend", "--model", str(model_dir),
        "--served-model-name", settings.default_base_model, "--host", host, "--port", str(port),
        "--enable-lora", "--threads", str(settings.torch_threads or 1), "--parent-pid", str(os.getpid()),
        "--max-tokens-limit", str(backend_max_tokens(settings)),
        stdout=log_file, stderr=log_file,
    )  # from the event loop's thread, the main thread, which --parent-pid ties its end to (engine.serving.lifetime)
    log_file.close()
    url = f"http://{host}:{port}"
    probe = ServingClient(ServingConfig(base_url=url, timeout_seconds=2.0, retries=0))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.reference_backend_start_timeout_seconds
    try:
        while not await probe.health():
            if process.returncode is not None or loop.time() > deadline:
                raise Unavailable("REFERENCE_BACKEND_FAILED",
                                  f"the reference backend did not become healthy; see {settings.data_dir}/"
                                  "reference-backend.log")
            await asyncio.sleep(0.2)
    except BaseException:  # failed, or start-up cancelled: it must not outlive this
        await _end(process)
        raise
    finally:
        await probe.close()
    log.info("started the reference serving backend (development target, not MAX)", extra={"url": url})
    return process, url


async def start_lora_control(settings: Settings, pool: asyncpg.Pool, registry: AdapterRegistry,
                             versions: VersionExamples, artifacts: ArtifactStore) -> LoraRuntime:
    """Everything LoraControl runs; if a part fails, the parts started before it are stopped again."""
    async with AsyncExitStack() as undo:
        runtime = await _start_lora_control(settings, pool, registry, versions, artifacts, undo)
        undo.pop_all()
        return runtime


async def _start_lora_control(settings: Settings, pool: asyncpg.Pool, registry: AdapterRegistry,
                              versions: VersionExamples, artifacts: ArtifactStore,
                              undo: AsyncExitStack) -> LoraRuntime:
    backend = None
    url = settings.serving_url
    name = ""  # a serving_url names its engine
    if url is None:
        backend, url = await start_reference_backend(settings)
        undo.push_async_callback(_end, backend)
        name = embedded_backend_name(settings)
    mode = ServingMode(settings.serving_mode)
    paths = ServingPaths(load=settings.serving_load_path, unload=settings.serving_unload_path,
                         models=settings.serving_models_path) if mode is ServingMode.CUSTOM else ServingPaths()
    client = ServingClient(ServingConfig(
        base_url=url, mode=mode, paths=paths, timeout_seconds=settings.serving_timeout_seconds,
        load_timeout_seconds=settings.serving_load_timeout_seconds, retries=settings.serving_retries,
        backoff_seconds=settings.serving_backoff_seconds, name=name,
    ))
    await client.start()
    undo.push_async_callback(client.close)
    router = AliasRouter(settings.lora_alias, settings.serving_base_model_name or settings.default_base_model)
    gateway = Gateway(router, url, timeout_seconds=settings.gateway_read_timeout_seconds,
                      connect_timeout_seconds=settings.serving_timeout_seconds,
                      middlewares=[bearer_auth(tokens_from_settings(settings), GATEWAY_ROLES)])
    try:
        await gateway.start(settings.host, settings.gateway_port, ssl_context=server_ssl_context(settings))
    except OSError as exc:
        raise port_taken("gateway", settings.host, settings.gateway_port, "gateway_port", exc) from exc
    undo.push_async_callback(gateway.stop)
    store = PostgresLoraStore(pool, PostgresServingState(pool))
    scheme = "https" if settings.tls_cert_file is not None else "http"
    config = ControlConfig(
        base_model=settings.default_base_model, alias=settings.lora_alias,
        served_base_name=settings.serving_base_model_name, drain_timeout_seconds=settings.drain_timeout_seconds,
        follow_seconds=settings.serving_follow_seconds,
        smoke_prompt=settings.smoke_prompt, gateway_url=f"{scheme}://{netloc(settings.host, gateway.port)}",
        eval_suite=(settings.datasets_dir / settings.eval_suite_path) if settings.eval_suite_path else None,
        gate=settings.eval_gate, eval_max_tokens=settings.eval_max_tokens,
        thresholds=ev.GateThresholds(
            min_pass_rate=settings.eval_min_pass_rate, max_regressions=settings.eval_max_regressions,
            max_mean_score_drop=settings.eval_max_mean_score_drop, max_forgetting=settings.eval_max_forgetting,
            max_base_forgetting=settings.eval_max_base_forgetting,
            max_hallucination_rate=settings.eval_max_hallucination_rate,
            min_judge_score=settings.eval_min_judge_score,
        ),
        judge=JudgeConfig(enabled=settings.eval_judge, model=settings.eval_judge_model,
                          max_tokens=settings.eval_judge_max_tokens,
                          max_unparseable=settings.eval_judge_max_unparseable),
    )
    judge_client = None
    if settings.eval_judge_url:  # an evaluation job may ask for the judge when the server does not
        judge_client = ServingClient(ServingConfig(
            base_url=settings.eval_judge_url, mode=ServingMode.CUSTOM, timeout_seconds=settings.serving_timeout_seconds,
            load_timeout_seconds=settings.serving_load_timeout_seconds, retries=settings.serving_retries,
            backoff_seconds=settings.serving_backoff_seconds,
        ))
        await judge_client.start()
        undo.push_async_callback(judge_client.close)
    adapters = RegistryAdapters(registry, settings.work_dir / "serving-adapters")
    gate = LineageSuites(registry, versions, max_cases=settings.eval_max_cases)
    rates = FeedbackStatsRates(  # canaries and auto-rollback read the ratings here
        PostgresFeedbackStore(pool), rating_positive_min=settings.feedback_rating_positive_min,
        rating_negative_max=settings.feedback_rating_negative_max)
    controller = LoraController(config, client, router, store, adapters, artifacts, gate, rates,
                                judge_client=judge_client,
                                routed=PostgresOnlineStore(pool))  # online sessions' live aliases: never unloaded
    await controller.start()
    undo.push_async_callback(controller.close)
    auto = None
    if settings.auto_rollback_enabled:
        auto = AutoRollback(controller, rates, AutoRollbackConfig(
            margin=settings.auto_rollback_margin, min_samples=settings.auto_rollback_min_samples,
            interval_seconds=settings.auto_rollback_interval_seconds,
        ), store.history)
        auto.start()
        undo.push_async_callback(auto.stop)
    log.info("LoraControl ready", extra={"serving_url": client.target, "gateway_port": gateway.port,
                                         "alias": settings.lora_alias})
    async def follow() -> None:  # (whether anything changed is not a reason to stop)
        await controller.follow()

    # Keep this process's gateway on the state other serving processes of the target record.
    follower = Periodic("lora-follow", follow, settings.serving_follow_seconds)
    follower.start()
    return LoraRuntime(controller, gateway, client, auto, backend, follower)
