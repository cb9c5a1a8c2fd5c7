"""What pipelines need from the rest of the engine and from storage, as ports the composition root fills."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from engine.jobs.core import Job
from engine.lora.canary import CanaryOutcome, CanaryPolicy
from engine.lora.controller import Activation
from engine.lora.evaluation import Suite
from engine.lora.state import EvalSummary, LoraStatus
from engine.pipelines.spec import Pipeline, TriggerDecision
from engine.training.spec import TrainingJobSpec, TrainingOutput


class PipelineStore(Protocol):
    """Pipelines, their trigger decisions, and what is asked of their runs (engine.stores.pipeline_store)."""

    async def insert(self, pipeline: Pipeline) -> Pipeline:
        """ALREADY_EXISTS when the id is taken."""
        ...

    async def get(self, pipeline_id: str) -> Pipeline:
        """NOT_FOUND PIPELINE_NOT_FOUND."""
        ...

    async def list(self, *, page_size: int, page_token: str) -> tuple[builtins.list[Pipeline], str]: ...

    async def replace(self, pipeline: Pipeline, *, etag: str) -> Pipeline:
        """ABORTED when ``etag`` is given and the stored pipeline has changed since."""
        ...

    async def delete(self, pipeline_id: str) -> None: ...

    def locked(self, pipeline_id: str) -> AbstractAsyncContextManager[PipelineStore]:
        """Held while deciding whether to start a run: one decision at a time per pipeline, across replicas. Inside the
        block use the store it gives, whose calls run on the lock's own connection instead of taking another."""
        ...

    async def record(self, decision: TriggerDecision) -> bool:
        """Keep a decision; False when that pipeline's occasion (``key``) was already decided."""
        ...

    async def decision(self, pipeline_id: str, key: str) -> TriggerDecision | None: ...

    async def decisions(self, pipeline_id: str, *, page_size: int,
                        page_token: str = "") -> tuple[builtins.list[TriggerDecision], str]:
        """The pipeline's trigger decisions, newest first, a page at a time (the token of the next, "" on the
        last)."""
        ...

    async def run_ids(self, pipeline: Pipeline, *, active_only: bool, page_size: int,
                      page_token: str) -> tuple[builtins.list[str], str]:
        """The pipeline's runs, newest first (only those not ended with ``active_only``): those of this pipeline,
        not of an earlier one deleted under the same id (told apart by the creation time a run's spec records)."""
        ...

    async def last_run_start(self, pipeline: Pipeline) -> datetime | None:
        """When the newest of the pipeline's runs (as ``run_ids`` finds them) started; None before its first."""
        ...

    async def feedback_count(self, *, base_model: str, since: datetime, labels: Sequence[tuple[str, str]],
                             negative_only: bool, rating_negative_max: int) -> int:
        """Feedback events on ``base_model`` (and those that recorded no base model) received since ``since``
        carrying ``labels`` (only thumbs down and low ratings when asked)."""
        ...


class TrainingJobs(Protocol):
    async def create(self, spec: TrainingJobSpec, *, request_id: str = "", validate_only: bool = False,
                     priority: int = 0) -> Job[TrainingJobSpec, TrainingOutput]: ...

    async def get(self, job_id: str) -> Job[TrainingJobSpec, TrainingOutput]: ...

    async def cancel(self, job_id: str) -> Job[TrainingJobSpec, TrainingOutput]: ...


class Datasets(Protocol):
    """The part of engine.training.stored_datasets.StoredDatasets a run uses."""

    async def create(self, name: str, source: Any, *, split: Any, base_model: str = "") -> tuple[Any, bool]:
        """A version of ``source``; a feedback window reads the feedback on ``base_model`` (the pipeline's)."""
        ...

    async def trainable(self, name: str, field_path: str) -> Any:
        """The version ``name`` names, refused (GOLDEN_DATASET_NOT_TRAINABLE) when it is golden."""
        ...

    async def validate(self, source: Any, *, split: Any, base_model: str = "") -> Any: ...


class GoldenDatasets(Protocol):  # engine.lora.dataset_suites.DatasetSuites
    async def suite(self, name: str, field_path: str) -> Suite:
        """The golden suite of a stored dataset version ("datasets/x": its newest); raises as an evaluation's."""


class Serving(Protocol):
    """The part of engine.lora.controller.LoraController a run uses."""

    @property
    def base_model(self) -> str: ...

    async def status(self) -> LoraStatus: ...

    async def evaluate(self, version: str, baseline_version: str | None, suites: Sequence[Path | Suite] = (), *,
                       progress: Any = None, reuse: bool = False) -> EvalSummary: ...

    async def activate(self, version: str, *, actor: str, reason: str, force: bool = False,
                       mark_known_good: bool = False) -> Activation: ...

    async def start_canary(self, version: str, policy: CanaryPolicy, *, actor: str, reason: str,
                           force: bool = False) -> LoraStatus: ...

    async def wait_canary(self, version: str, *, poll_seconds: float = 5.0) -> CanaryOutcome: ...

    async def abort_canary(self, *, actor: str, reason: str, version: str = "", split_id: int = 0) -> LoraStatus:
        """With ``version``, only that version's canary; with ``split_id``, only the canary of that split
        (NO_CANARY_RUNNING when none such is in force)."""
        ...


class DriftReading(Protocol):
    """What the drift trigger reads of a drift report (engine.drift.report.DriftReport)."""

    @property
    def statistic(self) -> float: ...

    @property
    def threshold(self) -> float: ...

    @property
    def drifted(self) -> bool: ...

    @property
    def incoming(self) -> int: ...

    @property
    def reference_version(self) -> str: ...  # the active version measured against ("" when none is active)


class DriftSource(Protocol):
    """Drift reports of a base model's incoming prompts against the active version's training data
    (engine.drift.detector.DriftDetector), over the detector's default window."""

    async def report(self, base_model: str, *, window: timedelta | None = None,
                     end: datetime | None = None) -> DriftReading: ...
