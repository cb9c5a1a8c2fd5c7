"""Builds online learning: the sessions' job manager (run by training workers), what the servicer calls, and
the serving side that loads sessions' live adapters and gates their publications (in serving processes)."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from engine.jobs.context import JobSlots
from engine.jobs.manager import JobManager
from engine.jobs.ports import JobQueue
from engine.lora.feedback_rates import FeedbackStatsRates
from engine.lora.fetch import RegistryAdapters
from engine.online.ports import FeedbackExamples
from engine.online.retention import OnlineRetention
from engine.online.runner import OnlineRunner
from engine.online.service import OnlineSessions
from engine.online.serving import OnlineServing
from engine.online.spec import ONLINE_SESSION, OnlineOutput, OnlineSessionSpec
from engine.registry import AdapterRegistry
from engine.registry.ports import ArtifactStore
from engine.stores.feedback_store import PostgresFeedbackStore
from engine.stores.job_store import JobNotifications, PostgresJobStore
from engine.stores.online_store import PostgresOnlineStore
from engine.training.ports import ContinualPlanner
from engine.training.preparation import JobPreparer
from server.lora_wiring import LoraRuntime
from server.online_convert import OnlineDefaults
from server.settings import Settings


def build_online(
    settings: Settings, *, pool: asyncpg.Pool, queue: JobQueue, notifications: JobNotifications, worker_id: str,
    registry: AdapterRegistry, preparer: JobPreparer, planner: ContinualPlanner, artifacts: ArtifactStore,
    lora: LoraRuntime | None, feedback: FeedbackExamples | None,
) -> tuple[OnlineSessions, JobManager[OnlineSessionSpec, OnlineOutput], OnlineServing | None]:
    store = PostgresOnlineStore(pool)
    manager = JobManager(
        runner=OnlineRunner(store=store, registry=registry, preparer=preparer, planner=planner, artifacts=artifacts,
                            config=settings.online_config(settings.fisher_batch_size), feedback=feedback,
                            rates=FeedbackStatsRates(
                                PostgresFeedbackStore(pool), rating_positive_min=settings.feedback_rating_positive_min,
                                rating_negative_max=settings.feedback_rating_negative_max)),
        store=PostgresJobStore(pool, ONLINE_SESSION, notifications), queue=queue,
        work_dir=settings.work_dir / "online", slots=JobSlots(max(1, settings.online_max_sessions)),
        worker_id=worker_id,
    )

    def active_version(base_model: str) -> str:
        controller = lora.controller if lora is not None else None
        return controller.state.active_version if controller is not None and controller.base_model == base_model \
            else ""

    sessions = OnlineSessions(manager, store, registry=registry, active_version=active_version,
                              reserved_names=(settings.lora_alias,),
                              max_example_chars=settings.online_max_example_chars)
    serving = OnlineServing(
        sessions=sessions, store=store, artifacts=artifacts, client=lora.client, router=lora.gateway.router,
        gate=lora.controller, adapters=RegistryAdapters(registry, settings.work_dir / "serving-adapters"),
        cache_dir=settings.work_dir / "online-live",
    ) if lora is not None else None
    return sessions, manager, serving


def online_retention(settings: Settings, *, pool: asyncpg.Pool, sessions: OnlineSessions, registry: AdapterRegistry,
                     artifacts: ArtifactStore) -> OnlineRetention:
    """The sweep of ended sessions' examples and of live archives nothing reads any more."""
    return OnlineRetention(sessions=sessions, store=PostgresOnlineStore(pool), artifacts=artifacts,
                           versions=registry, retention=timedelta(days=settings.online_retention_days))


def online_defaults(settings: Settings) -> OnlineDefaults:
    return OnlineDefaults(base_model=settings.default_base_model, learning_rate=settings.online_learning_rate,
                          ewc_lambda=settings.online_ewc_lambda, replay_fraction=settings.online_replay_fraction,
                          max_seq_length=settings.training_max_seq_length)
