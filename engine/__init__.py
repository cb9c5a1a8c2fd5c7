"""The engine's interface to the servicers: one :class:`Engine` holding what each service calls.

Servicers (``server/services``) depend on these protocols, never on the concrete classes; the composition root
(``server/engine_wiring.py``) builds the real engine, and tests may build the same facades over in-memory stores. The
engine itself knows nothing of gRPC or protobuf.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from engine.continual.ports import FisherSnapshots
    from engine.continual.spec import FisherJobSpec, FisherOutput
    from engine.drift.report import DriftConfig, DriftReport
    from engine.errors import ResourceExhausted
    from engine.feedback.events import FeedbackEvent, FeedbackStats, IngestResult, UserErasure
    from engine.feedback.ingest import Prepared
    from engine.jobs.core import Job, JobEvent, JobState
    from engine.lora.canary import CanaryPolicy
    from engine.lora.controller import Activation
    from engine.lora.evaluation import Suite
    from engine.lora.evaluation_jobs import EvaluationJobs
    from engine.lora.state import EvalSummary, LoadedLora, LoraStatus
    from engine.online.service import OnlineSessions
    from engine.pipelines.service import Pipelines
    from engine.preparation.creation import PreparationJobs
    from engine.registry.records import AdapterRecord
    from engine.splits import SplitRule
    from engine.training.dataset_content import DatasetContent, DatasetKind
    from engine.training.dataset_records import ScoredPart, Source, StoredDataset
    from engine.training.metrics import TrainingMetrics
    from engine.training.spec import TrainingJobSpec, TrainingOutput

S = TypeVar("S")
O = TypeVar("O")  # noqa: E741 - as in engine.jobs.core
T = TypeVar("T")


class Jobs(Protocol[S, O]):
    """Reading and steering the jobs of one kind."""

    async def created(self, request_id: str, received: object) -> Job[S, O] | None:
        """The job an earlier create with ``request_id`` and the same request made (REQUEST_ID_REUSED for another):
        engine.jobs.manager.RetriedCreates."""
        ...

    async def get(self, job_id: str) -> Job[S, O]: ...

    async def list(self, *, states: Sequence[JobState], page_size: int,
                   page_token: str) -> tuple[list[Job[S, O]], str]: ...

    async def cancel(self, job_id: str) -> Job[S, O]: ...

    def watch(self, job_id: str, *, after_sequence: int = 0) -> AsyncIterator[Job[S, O] | JobEvent]:
        """The job as it is now, then every event after ``after_sequence``, until it ends."""
        ...


class TrainingJobsApi(Jobs["TrainingJobSpec", "TrainingOutput"], Protocol):
    async def create(self, spec: TrainingJobSpec, *, request_id: str = "", validate_only: bool = False,
                     priority: int = 0, received: object = None) -> Job[TrainingJobSpec, TrainingOutput]: ...

    async def pause(self, job_id: str) -> Job[TrainingJobSpec, TrainingOutput]: ...

    async def resume(self, job_id: str) -> Job[TrainingJobSpec, TrainingOutput]: ...

    async def publish_checkpoint(self, job_id: str, step: int, *, request_id: str = "") -> AdapterRecord:
        """Publish one of the job's stored checkpoints as a new version."""
        ...

    async def metrics(self, job_id: str) -> tuple[Job[TrainingJobSpec, TrainingOutput], TrainingMetrics]:
        """The job and its metrics (a table, its CSV and loss curve) from its event log as it is now."""
        ...


class FisherJobsApi(Jobs["FisherJobSpec", "FisherOutput"], Protocol):
    async def create(self, spec: FisherJobSpec, *, request_id: str = "",
                     received: object = None) -> Job[FisherJobSpec, FisherOutput]: ...


class AdaptersApi(Protocol):
    """The adapter registry as the AdapterService uses it."""

    retention_keep: int

    async def get(self, base_model: str, version: str, *, field_path: str = "version") -> AdapterRecord: ...

    async def list(self, *, base_model: str = "", labels: Mapping[str, str] | None = None, page_size: int,
                   page_token: str = "") -> tuple[list[AdapterRecord], str]: ...

    # ``list`` below names the method above: annotations in this class spell the type ``builtins.list``.
    async def lineage(self, base_model: str, version: str) -> builtins.list[AdapterRecord]: ...

    async def download(self, base_model: str, version: str, dest: Path) -> AdapterRecord: ...

    async def import_base_model_dir(self, base_model: str) -> Path: ...

    async def import_archive(self, *, base_model: str, upload: Path, expected_sha256: str = "",
                             parent_version: str = "", major_bump: bool = False,
                             labels: tuple[tuple[str, str], ...] = (), request_id: str = "") -> AdapterRecord: ...

    async def delete(self, base_model: str, version: str) -> AdapterRecord: ...

    async def prune(
        self, base_model: str, *, keep: int, dry_run: bool = False
    ) -> tuple[builtins.list[str], builtins.list[str]]: ...


class DatasetsApi(Protocol):
    """Stored datasets as the DatasetService uses them (engine.training.stored_datasets.StoredDatasets)."""

    @property
    def max_bytes(self) -> int:
        """The largest dataset accepted (dataset_max_bytes)."""
        ...

    def too_large(self, size: int, what: str) -> ResourceExhausted:
        """The error refusing ``what`` of ``size`` bytes (DATASET_TOO_LARGE)."""
        ...

    async def upload(self, name: str, received: Path, *, split: SplitRule, sha256: str, size_bytes: int,
                     filename: str = "", kind: DatasetKind = ...) -> tuple[StoredDataset, bool]: ...

    async def create(self, name: str, source: Source, *, split: SplitRule, base_model: str = "",
                     kind: DatasetKind = ...) -> tuple[StoredDataset, bool]: ...

    async def validate(self, source: Source | bytes, *, split: SplitRule, base_model: str = "",
                       kind: DatasetKind = ...) -> DatasetContent: ...

    async def get(self, name: str, field_path: str = "name") -> StoredDataset: ...

    async def list(self, *, dataset: str, page_size: int,
                   page_token: str) -> tuple[builtins.list[StoredDataset], str]: ...

    async def delete(self, name: str) -> builtins.list[StoredDataset]: ...

    async def scored_part(self, name: str, field_path: str) -> ScoredPart: ...


class LoraControlApi(Protocol):
    """Serving control as the LoraControlService uses it."""

    @property
    def base_model(self) -> str:
        """The base model this process serves."""
        ...

    async def status(self) -> LoraStatus: ...

    async def activate(self, version: str, *, actor: str, reason: str, force: bool = False,
                       mark_known_good: bool = False) -> Activation: ...

    async def rollback(self, *, actor: str, reason: str, automatic: bool = False) -> LoraStatus: ...

    async def set_enabled(self, enabled: bool, *, actor: str, reason: str) -> LoraStatus: ...

    async def list_loaded(self) -> tuple[LoadedLora, ...]: ...

    def watch(self) -> AsyncIterator[LoraStatus]: ...

    async def evaluate(self, version: str, baseline_version: str | None, suites: Sequence[Path | Suite] = (), *,
                       progress: Callable[[str, int, int], None] | None = None) -> EvalSummary:
        """``version`` "" evaluates the base model itself (golden suites only)."""
        ...

    async def start_canary(self, version: str, policy: CanaryPolicy, *, actor: str, reason: str,
                           force: bool = False) -> LoraStatus: ...

    async def abort_canary(self, *, actor: str, reason: str, version: str = "", split_id: int = 0) -> LoraStatus: ...

    async def set_traffic_split(self, version: str, share: float, *, actor: str, reason: str) -> LoraStatus: ...

    async def report(self, version: str, evaluation: str, file: str) -> tuple[EvalSummary, bytes, str]:
        """``version`` "" is the base model itself."""
        ...


class FeedbackIngestApi(Protocol):
    """Feedback ingestion as the FeedbackService uses it (engine.feedback.ingest.FeedbackIngestor)."""

    def now(self) -> datetime: ...

    async def submit(self, events: Sequence[FeedbackEvent]) -> IngestResult: ...

    async def stream(self, batches: AsyncIterator[T],
                     to_events: Callable[[T], Sequence[FeedbackEvent]] | None = None) -> IngestResult: ...

    async def store_prepared(self, batches: AsyncIterator[Awaitable[Prepared]]) -> IngestResult: ...


class FeedbackRecordsApi(Protocol):
    """Statistics and erasure over the stored feedback (engine.stores.feedback_store)."""

    async def stats(self, *, start: datetime, end: datetime, adapter_version: str, tenant_id: str,
                    rating_positive_min: int, rating_negative_max: int, base_model: str = "") -> FeedbackStats: ...

    async def delete_user(self, user_id: str) -> UserErasure: ...


class DriftApi(Protocol):
    """Drift reports as the DriftService (and a pipeline's drift trigger) uses them
    (engine.drift.detector.DriftDetector)."""

    @property
    def config(self) -> DriftConfig: ...

    async def report(self, base_model: str, *, window: timedelta | None = None,
                     end: datetime | None = None) -> DriftReport: ...


@dataclass(frozen=True)
class Engine:
    """Everything the servicers call, built once by the composition root."""

    training: TrainingJobsApi
    fisher: FisherJobsApi
    snapshots: FisherSnapshots
    adapters: AdaptersApi
    lora: LoraControlApi | None = None  # None: this process controls no serving engine
    evaluations: EvaluationJobs | None = None  # set with lora: evaluation jobs run where LoraControl does
    feedback: FeedbackIngestApi | None = None  # None: no feedback store (both feedback fields are set or neither)
    feedback_records: FeedbackRecordsApi | None = None
    datasets: DatasetsApi | None = None  # None: no dataset store (an engine on in-memory stores)
    pipelines: Pipelines | None = None  # set with lora: pipeline runs roll out where LoraControl runs
    drift: DriftApi | None = None  # None: no feedback store to read incoming prompts from
    online: OnlineSessions | None = None  # set with lora: a session's adapter is served where LoraControl runs
    preparations: PreparationJobs | None = None  # set with lora and datasets: they ask the serving engine's model


__all__ = [
    "AdaptersApi", "DatasetsApi", "Engine", "FeedbackIngestApi", "FeedbackRecordsApi", "FisherJobsApi", "Jobs",
    "LoraControlApi", "TrainingJobsApi", "DriftApi",
]
