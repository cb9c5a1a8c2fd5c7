"""Builds the pipelines of a serving process: their runs' job manager and the Pipelines the servicer calls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import asyncpg

from engine.jobs.context import JobSlots
from engine.jobs.manager import JobManager
from engine.jobs.ports import JobQueue
from engine.lora.controller import LoraController
from engine.pipelines.ports import Datasets, DriftSource, GoldenDatasets, TrainingJobs
from engine.pipelines.runner import PipelineRunner
from engine.pipelines.service import Pipelines, TrainingCheck
from engine.pipelines.spec import PIPELINE_RUN, PipelineRunOutput, PipelineRunSpec
from engine.stores.job_store import JobNotifications, PostgresJobStore
from engine.stores.pipeline_store import PostgresPipelineStore
from engine.training.models import SMOLLM2_MODEL_ID
from server.settings import Settings


def build_pipelines(
    settings: Settings, *, pool: asyncpg.Pool, queue: JobQueue, notifications: JobNotifications, worker_id: str,
    controller: LoraController, datasets: Datasets, training: TrainingJobs, check_training: TrainingCheck,
    suite_path: Callable[[str, str], Path], suites: GoldenDatasets, drift: DriftSource | None,
) -> tuple[Pipelines, JobManager[PipelineRunSpec, PipelineRunOutput]]:
    """Pipeline runs roll out through LoraControl: they run where it does, from a queue of their own."""
    manager = JobManager(
        runner=PipelineRunner(datasets=datasets, training=training, serving=controller, suite_path=suite_path,
                              suites=suites,
                              poll_seconds=settings.pipeline_poll_seconds),
        store=PostgresJobStore(pool, PIPELINE_RUN, notifications), queue=queue,
        work_dir=settings.work_dir / "pipelines", slots=JobSlots(settings.pipeline_max_concurrent_runs),
        worker_id=worker_id,
    )
    pipelines = Pipelines(
        PostgresPipelineStore(pool), manager, serving=controller, datasets=datasets, suite_path=suite_path,
        suites=suites,
        rating_negative_max=settings.feedback_rating_negative_max,
        base_model_known=lambda model: model in settings.base_models or model == SMOLLM2_MODEL_ID,
        check_training=check_training,
        drift=drift, drift_check_seconds=settings.pipeline_drift_check_seconds,
    )
    return pipelines, manager
