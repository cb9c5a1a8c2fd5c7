"""Typed asyncio client over the generated learning.v1 stubs.

One method per RPC of every service in protos/learning/v1 (named after it:
``PauseTrainingJob`` is ``pause_training_job``; tests/clients/test_sdk_coverage.py
keeps it so). Every method takes and returns generated messages (typed by their
``.pyi`` stubs); every failure raises a :mod:`learning_engine.errors` exception.
Job watches reconnect after a dropped connection and resume after the last
sequence they delivered, so a caller sees each event exactly once.
``start_training_job``, ``start_fisher_job`` and ``start_evaluation_job`` return job handles
(:mod:`learning_engine.handles`). The blocking :class:`learning_engine.Client`
is generated from this class (scripts/gen_sync_client.py).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import re
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from learning.v1 import adapter_pb2 as adapter
from learning.v1 import (
    adapter_pb2_grpc,
    dataset_pb2,
    dataset_pb2_grpc,
    drift_pb2_grpc,
    evaluation_pb2_grpc,
    feedback_pb2_grpc,
    fisher_pb2_grpc,
    lora_control_pb2_grpc,
    online_pb2,
    online_pb2_grpc,
    pipeline_pb2,
    pipeline_pb2_grpc,
    preparation_pb2,
    preparation_pb2_grpc,
    training_pb2_grpc,
)
from learning.v1 import common_pb2 as common
from learning.v1 import drift_pb2 as drift
from learning.v1 import evaluation_pb2 as evaluation
from learning.v1 import feedback_pb2 as feedback
from learning.v1 import fisher_pb2 as fisher
from learning.v1 import lora_control_pb2 as lora
from learning.v1 import training_pb2 as training
from learning.v1.error_reason_pb2 import (
    ERROR_REASON_NO_CANARY_RUNNING,
    ERROR_REASON_NO_HEADER,
    ERROR_REASON_SHA256_MISMATCH,
)
from learning_engine import errors
from learning_engine.archive import pack_adapter_directory, sha256_file
from learning_engine.connection import DEFAULT_TARGET, Connection, TlsConfig
from learning_engine.handles import AsyncEvaluationJobHandle, AsyncFisherJobHandle, AsyncTrainingJobHandle

log = logging.getLogger(__name__)

T = TypeVar("T")
U = TypeVar("U")

# A dropped connection surfaces as UNAVAILABLE; those are the only failures a watch retries.
RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
CHUNK_SIZE = 1024 * 1024
UPLOAD_BYTES_PER_SECOND = 1024 * 1024  # the slowest link an upload's deadline allows for


async def _each(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    """The items of a plain or an async iterable, as an async iterator."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


class AsyncClient:
    """``async with AsyncClient("host:port", token=...) as client: ...``"""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: TlsConfig | None = None,
        timeout: float | None = 30.0,
        operation_timeout: float | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        reconnect_attempts: int = 30,
        reconnect_delay: float = 0.5,
    ) -> None:
        self.connection = Connection(target, token, tls, tuple(channel_options))
        self.timeout = timeout
        # The serving operations (activate, rollback, enable, disable, evaluate, canaries, splits) load adapters,
        # run the gate and drain: minutes for a small model on a CPU. They run to their end on the server whether
        # or not the caller waits, so by default the caller waits as long as they take.
        self.operation_timeout = operation_timeout
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay = reconnect_delay
        self._channel = self.connection.open()
        self._metadata = self.connection.metadata()
        self.training = training_pb2_grpc.TrainingServiceStub(self._channel)
        self.fisher = fisher_pb2_grpc.FisherServiceStub(self._channel)
        self.adapters = adapter_pb2_grpc.AdapterServiceStub(self._channel)
        self.lora = lora_control_pb2_grpc.LoraControlServiceStub(self._channel)
        self.evaluation = evaluation_pb2_grpc.EvaluationServiceStub(self._channel)
        self.datasets = dataset_pb2_grpc.DatasetServiceStub(self._channel)
        self.pipelines = pipeline_pb2_grpc.PipelineServiceStub(self._channel)
        self.feedback = feedback_pb2_grpc.FeedbackServiceStub(self._channel)
        self.drift = drift_pb2_grpc.DriftServiceStub(self._channel)
        self.online = online_pb2_grpc.OnlineLearningServiceStub(self._channel)
        self.preparation = preparation_pb2_grpc.DataPreparationServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    # ---- call plumbing ------------------------------------------------------------

    def _upload_timeout(self, size_bytes: int) -> float | None:
        """An upload's deadline: the client's timeout plus a second per MiB sent (a slow link still finishes a
        large file); None when the client sets no timeout."""
        return None if self.timeout is None else self.timeout + size_bytes / UPLOAD_BYTES_PER_SECOND

    async def _unary(
        self, method: Callable[..., Awaitable[T]], request: Any, timeout: float | None = None
    ) -> T:
        return await self._call(method, request, timeout or self.timeout)

    async def _operation(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        """A serving operation: its deadline is ``operation_timeout`` (none by default)."""
        return await self._call(method, request, self.operation_timeout)

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any, timeout: float | None) -> T:
        try:
            return await method(request, metadata=self._metadata, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            raise errors.from_rpc_error(err) from None

    async def _stream(
        self,
        method: Callable[..., Any],
        request: Any,
        *,
        timeout: float | None = None,
        wait_for_ready: bool = False,
    ) -> AsyncIterator[Any]:
        call = method(request, metadata=self._metadata, timeout=timeout, wait_for_ready=wait_for_ready)
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as err:
            raise errors.from_rpc_error(err) from None
        finally:
            call.cancel()

    async def _resumable(
        self,
        method: Callable[..., Any],
        make_request: Callable[[int], Any],
        after_sequence: int,
        sequence_of: Callable[[Any], int | None],
    ) -> AsyncIterator[Any]:
        """Watch a job; after UNAVAILABLE, re-open it after the last sequence seen.

        Each re-opened stream starts with a fresh snapshot, which is delivered too.
        """
        last, failures = after_sequence, 0
        while True:
            try:
                async for message in self._stream(method, make_request(last), wait_for_ready=failures > 0):
                    sequence = sequence_of(message)
                    if sequence is not None:
                        if sequence <= last:
                            continue  # already delivered before the reconnect
                        last, failures = sequence, 0
                    yield message
                return
            except errors.LearningEngineError as err:
                if err.code not in RECONNECT_CODES or failures >= self.reconnect_attempts:
                    raise
                failures += 1
                log.info("watch interrupted; resuming", extra={"after_sequence": last, "attempt": failures})
                await asyncio.sleep(min(self.reconnect_delay * failures, 5.0))

    # ---- health -------------------------------------------------------------------

    async def health(self, service: str = "") -> str:
        """SERVING, NOT_SERVING, SERVICE_UNKNOWN or UNKNOWN for ``service`` ("" = the server)."""
        response = await self._unary(self._health.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    # ---- training -----------------------------------------------------------------

    async def create_training_job(
        self,
        spec: training.TrainingJobSpec,
        *,
        request_id: str = "",
        validate_only: bool = False,
        priority: int = 0,
    ) -> training.TrainingJob:
        """Create and queue a job; with ``validate_only``, check the spec and its dataset and create nothing (the
        job returned then is what would run: defaults filled in, the dataset summarised; its name names nothing)."""
        request = training.CreateTrainingJobRequest(
            spec=spec, request_id=request_id, validate_only=validate_only, priority=priority
        )
        return (await self._unary(self.training.CreateTrainingJob, request)).training_job

    async def start_training_job(
        self, spec: training.TrainingJobSpec, *, request_id: str = "", priority: int = 0
    ) -> AsyncTrainingJobHandle:
        """Create a job and return its handle (``wait()``, ``events()``, ``cancel()``, ``pause()``, ...)."""
        job = await self.create_training_job(spec, request_id=request_id, priority=priority)
        return AsyncTrainingJobHandle(self, job.name)

    def get_training_job_handle(self, name: str) -> AsyncTrainingJobHandle:
        """A handle on an existing job ("trainingJobs/<id>"); makes no call."""
        return AsyncTrainingJobHandle(self, name)

    async def get_training_job(self, name: str) -> training.TrainingJob:
        return (
            await self._unary(self.training.GetTrainingJob, training.GetTrainingJobRequest(name=name))
        ).training_job

    async def list_training_jobs(
        self, *, states: Iterable[int] = (), page_size: int = 0, page_token: str = ""
    ) -> training.ListTrainingJobsResponse:
        request = training.ListTrainingJobsRequest(
            states=list(states), page_size=page_size, page_token=page_token
        )
        return await self._unary(self.training.ListTrainingJobs, request)

    async def cancel_training_job(self, name: str) -> training.TrainingJob:
        request = training.CancelTrainingJobRequest(name=name)
        return (await self._unary(self.training.CancelTrainingJob, request)).training_job

    async def pause_training_job(self, name: str) -> training.TrainingJob:
        """Pause a queued or running job (a running one checkpoints at its next step: PAUSING, then PAUSED)."""
        request = training.PauseTrainingJobRequest(name=name)
        return (await self._unary(self.training.PauseTrainingJob, request)).training_job

    async def resume_training_job(self, name: str) -> training.TrainingJob:
        """Queue a paused job again; it continues from its last checkpoint."""
        request = training.ResumeTrainingJobRequest(name=name)
        return (await self._unary(self.training.ResumeTrainingJob, request)).training_job

    def watch_training_job(
        self, name: str, *, after_sequence: int = 0
    ) -> AsyncIterator[training.WatchTrainingJobResponse]:
        """Snapshot, then every event until the job ends; survives dropped connections."""
        return self._resumable(
            self.training.WatchTrainingJob,
            lambda after: training.WatchTrainingJobRequest(name=name, after_sequence=after),
            after_sequence,
            lambda m: m.event.sequence if m.HasField("event") else None,
        )

    async def list_training_checkpoints(self, name: str) -> list[training.TrainingCheckpoint]:
        """The job's stored checkpoints, newest first."""
        request = training.ListTrainingCheckpointsRequest(name=name)
        return list((await self._unary(self.training.ListTrainingCheckpoints, request)).checkpoints)

    async def publish_checkpoint(self, name: str, step: int, *, request_id: str = "") -> str:
        """Publish the job's checkpoint of ``step`` as a new adapter version; returns the version."""
        request = training.PublishCheckpointRequest(name=name, step=step, request_id=request_id)
        return (await self._unary(self.training.PublishCheckpoint, request)).adapter_version

    async def get_training_metrics(self, name: str) -> training.GetTrainingMetricsResponse:
        """The job's metrics as its event log holds them now: one row per optimiser step, the same as CSV
        (``.csv``) and a loss-curve PNG (``.png``, empty while the job has no steps)."""
        request = training.GetTrainingMetricsRequest(name=name)
        return await self._unary(self.training.GetTrainingMetrics, request)

    # ---- fisher -------------------------------------------------------------------

    async def create_fisher_job(
        self, spec: fisher.FisherJobSpec, *, request_id: str = ""
    ) -> fisher.FisherJob:
        request = fisher.CreateFisherJobRequest(spec=spec, request_id=request_id)
        return (await self._unary(self.fisher.CreateFisherJob, request)).fisher_job

    async def start_fisher_job(self, spec: fisher.FisherJobSpec, *, request_id: str = "") -> AsyncFisherJobHandle:
        """Create a Fisher job and return its handle (``wait()``, ``events()``, ``cancel()``)."""
        job = await self.create_fisher_job(spec, request_id=request_id)
        return AsyncFisherJobHandle(self, job.name)

    def get_fisher_job_handle(self, name: str) -> AsyncFisherJobHandle:
        """A handle on an existing Fisher job ("fisherJobs/<id>"); makes no call."""
        return AsyncFisherJobHandle(self, name)

    async def get_fisher_job(self, name: str) -> fisher.FisherJob:
        return (await self._unary(self.fisher.GetFisherJob, fisher.GetFisherJobRequest(name=name))).fisher_job

    async def list_fisher_jobs(
        self, *, states: Iterable[int] = (), page_size: int = 0, page_token: str = ""
    ) -> fisher.ListFisherJobsResponse:
        request = fisher.ListFisherJobsRequest(states=list(states), page_size=page_size, page_token=page_token)
        return await self._unary(self.fisher.ListFisherJobs, request)

    async def cancel_fisher_job(self, name: str) -> fisher.FisherJob:
        request = fisher.CancelFisherJobRequest(name=name)
        return (await self._unary(self.fisher.CancelFisherJob, request)).fisher_job

    def watch_fisher_job(
        self, name: str, *, after_sequence: int = 0
    ) -> AsyncIterator[fisher.WatchFisherJobResponse]:
        return self._resumable(
            self.fisher.WatchFisherJob,
            lambda after: fisher.WatchFisherJobRequest(name=name, after_sequence=after),
            after_sequence,
            lambda m: m.event.sequence if m.HasField("event") else None,
        )

    async def list_fisher_snapshots(
        self, *, base_model: str = "", adapter_version: str = "", page_size: int = 0, page_token: str = ""
    ) -> fisher.ListFisherSnapshotsResponse:
        request = fisher.ListFisherSnapshotsRequest(
            base_model=base_model, adapter_version=adapter_version, page_size=page_size, page_token=page_token
        )
        return await self._unary(self.fisher.ListFisherSnapshots, request)

    async def get_fisher_snapshot(self, name: str) -> fisher.FisherSnapshot:
        request = fisher.GetFisherSnapshotRequest(name=name)
        return (await self._unary(self.fisher.GetFisherSnapshot, request)).fisher_snapshot

    async def delete_fisher_snapshot(self, name: str) -> None:
        await self._unary(self.fisher.DeleteFisherSnapshot, fisher.DeleteFisherSnapshotRequest(name=name))

    # ---- adapters -----------------------------------------------------------------

    async def list_adapters(
        self,
        *,
        base_model: str = "",
        labels: dict[str, str] | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> adapter.ListAdaptersResponse:
        request = adapter.ListAdaptersRequest(
            base_model=base_model, labels=labels or {}, page_size=page_size, page_token=page_token
        )
        return await self._unary(self.adapters.ListAdapters, request)

    async def get_adapter(self, version: str, *, base_model: str = "") -> adapter.Adapter:
        request = adapter.GetAdapterRequest(base_model=base_model, version=version)
        return (await self._unary(self.adapters.GetAdapter, request)).adapter

    async def get_lineage(self, version: str, *, base_model: str = "") -> list[adapter.Adapter]:
        """The version, then its parent, and so on to its root (deleted versions included, with delete_time)."""
        request = adapter.GetLineageRequest(base_model=base_model, version=version)
        return list((await self._unary(self.adapters.GetLineage, request)).adapters)

    async def download_adapter(
        self, version: str, destination: Path, *, base_model: str = "", overwrite: bool = False
    ) -> tuple[adapter.Adapter, Path]:
        """Stream an adapter archive into the directory ``destination`` and verify its sha256.

        The file is named after the version, ``<base model>-<version>.tar.gz``, so versions downloaded into
        one directory sit side by side. An existing file of that name raises FileExistsError (before anything
        is written) unless ``overwrite``.
        """
        request = adapter.DownloadAdapterRequest(
            base_model=base_model, version=version, chunk_size=CHUNK_SIZE
        )
        header: adapter.AdapterArchiveHeader | None = None
        digest, path, partial = hashlib.sha256(), Path(), Path()
        handle = None
        try:
            async for message in self._stream(self.adapters.DownloadAdapter, request, timeout=self.timeout):
                if message.HasField("header"):
                    header = message.header
                    path = destination / archive_name(header.adapter, header.filename)
                    if path.exists() and not overwrite:
                        raise FileExistsError(
                            errno.EEXIST, f"{path} exists (another download of {header.adapter.version}?)", str(path)
                        )
                    partial = path.with_name(path.name + ".partial")
                    destination.mkdir(parents=True, exist_ok=True)
                    handle = partial.open("wb")
                elif handle is not None:
                    handle.write(message.chunk)
                    digest.update(message.chunk)
        finally:
            if handle is not None:
                handle.close()
        if header is None:
            raise errors.DataLoss(
                grpc.StatusCode.DATA_LOSS, "download ended without a header", reason=ERROR_REASON_NO_HEADER
            )
        if header.sha256 and digest.hexdigest() != header.sha256:
            partial.unlink(missing_ok=True)
            raise errors.DataLoss(
                grpc.StatusCode.DATA_LOSS,
                "downloaded archive does not match its sha256",
                reason=ERROR_REASON_SHA256_MISMATCH,
            )
        partial.replace(path)
        return header.adapter, path

    async def import_adapter(
        self,
        source: Path,
        *,
        base_model: str = "",
        parent_version: str = "",
        major_version_bump: bool = False,
        labels: dict[str, str] | None = None,
        request_id: str = "",
    ) -> adapter.Adapter:
        """Upload an adapter trained elsewhere (metadata first, then chunks) as a new version.

        ``source`` is an archive (tar.gz of a PEFT directory) or a PEFT directory itself, holding
        ``adapter_config.json`` and ``adapter_model.safetensors`` (what PEFT's ``save_pretrained``, Axolotl and
        LLaMA-Factory write): it is packed here first (:func:`learning_engine.archive.pack_adapter_directory`;
        a directory without those files raises FileNotFoundError).
        """
        with tempfile.TemporaryDirectory(prefix="learning-engine-import-") as scratch:
            archive = source
            if source.is_dir():
                archive = await asyncio.to_thread(pack_adapter_directory, source, Path(scratch) / "adapter.tar.gz")
            metadata = adapter.ImportAdapterMetadata(
                base_model=base_model,
                parent_version=parent_version,
                major_version_bump=major_version_bump,
                labels=labels or {},
                sha256=await asyncio.to_thread(sha256_file, archive),
                request_id=request_id,
            )

            def parts() -> Iterator[adapter.ImportAdapterRequest]:
                yield adapter.ImportAdapterRequest(metadata=metadata)
                with archive.open("rb") as handle:
                    for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
                        yield adapter.ImportAdapterRequest(chunk=chunk)

            timeout = self._upload_timeout(archive.stat().st_size)
            return (await self._unary(self.adapters.ImportAdapter, parts(), timeout)).adapter

    async def delete_adapter(self, version: str, *, base_model: str = "") -> None:
        await self._unary(
            self.adapters.DeleteAdapter, adapter.DeleteAdapterRequest(base_model=base_model, version=version)
        )

    async def prune_adapters(
        self, *, base_model: str = "", keep: int = 0, dry_run: bool = False
    ) -> adapter.PruneAdaptersResponse:
        """Apply the retention policy now: keep the newest ``keep`` versions (0: the server's setting)."""
        request = adapter.PruneAdaptersRequest(base_model=base_model, keep=keep, dry_run=dry_run)
        return await self._unary(self.adapters.PruneAdapters, request)

    # ---- LoRA control -------------------------------------------------------------

    async def get_lora_status(self) -> lora.LoraStatus:
        return (await self._unary(self.lora.GetLoraStatus, lora.GetLoraStatusRequest())).status

    def watch_lora_status(self) -> AsyncIterator[lora.LoraStatus]:
        """The status now, then each change, until the caller stops; re-opened after a dropped connection
        (each re-opened stream starts with the status as it is then)."""
        return self._statuses(
            self._resumable(self.lora.WatchLoraStatus, lambda _: lora.WatchLoraStatusRequest(), 0, lambda m: None)
        )

    @staticmethod
    async def _statuses(stream: AsyncIterator[lora.WatchLoraStatusResponse]) -> AsyncIterator[lora.LoraStatus]:
        async for message in stream:
            yield message.status

    async def activate_adapter(
        self,
        version: str,
        *,
        reason: str = "",
        force: bool = False,
        mark_known_good: bool = False,
        base_model: str = "",
    ) -> lora.ActivateAdapterResponse:
        request = lora.ActivateAdapterRequest(
            version=version, reason=reason, force=force, mark_known_good=mark_known_good, base_model=base_model
        )
        return await self._operation(self.lora.ActivateAdapter, request)

    async def rollback_adapter(self, *, reason: str = "") -> lora.LoraStatus:
        return (
            await self._operation(self.lora.RollbackAdapter, lora.RollbackAdapterRequest(reason=reason))
        ).status

    async def enable_lora(self, *, reason: str = "") -> lora.LoraStatus:
        return (await self._operation(self.lora.EnableLora, lora.EnableLoraRequest(reason=reason))).status

    async def disable_lora(self, *, reason: str = "") -> lora.LoraStatus:
        return (await self._operation(self.lora.DisableLora, lora.DisableLoraRequest(reason=reason))).status

    async def list_loaded_adapters(self) -> list[lora.LoadedAdapter]:
        """What the serving engine reports loaded now."""
        return list((await self._unary(self.lora.ListLoadedAdapters, lora.ListLoadedAdaptersRequest())).loaded)

    async def evaluate_adapter(
        self,
        version: str = "",
        *,
        baseline_version: str = "",
        suite_path: str = "",
        base_model: str = "",
        suite_datasets: Iterable[str] = (),
        base_model_itself: bool = False,
    ) -> adapter.AdapterEvalSummary:
        """Run the gate's suites and the golden ones on ``version`` and a baseline (default: the active version, or
        the base model): ``suite_path`` below the server's datasets dir, ``suite_datasets`` stored dataset versions
        ("datasets/<dataset>" or ".../versions/<n>", each its test split); neither: the configured suite. With
        ``base_model_itself`` (and no ``version``), the base model itself is evaluated, on the golden suites only."""
        request = lora.EvaluateAdapterRequest(
            version=version, baseline_version=baseline_version, suite_path=suite_path, base_model=base_model,
            suite_datasets=list(suite_datasets), base_model_itself=base_model_itself,
        )
        return (await self._operation(self.lora.EvaluateAdapter, request)).eval

    async def get_evaluation_report(
        self,
        version: str = "",
        *,
        evaluation_id: str = "",
        format: lora.ReportFormat = lora.REPORT_FORMAT_UNSPECIFIED,
        base_model: str = "",
        base_model_itself: bool = False,
    ) -> lora.GetEvaluationReportResponse:
        """A stored report of one of the version's evaluations (the latest unless ``evaluation_id``; of the base
        model itself with ``base_model_itself`` and no ``version``): HTML unless ``format`` says JSON, Markdown or
        PNG; ``.content`` holds its bytes, ``.eval`` the evaluation."""
        request = lora.GetEvaluationReportRequest(
            version=version, evaluation_id=evaluation_id, format=format, base_model=base_model,
            base_model_itself=base_model_itself,
        )
        return await self._unary(self.lora.GetEvaluationReport, request)

    async def start_canary(
        self,
        version: str,
        policy: lora.CanaryPolicy | None = None,
        *,
        force: bool = False,
        reason: str = "",
        base_model: str = "",
    ) -> lora.LoraStatus:
        """Roll ``version`` out as a canary: after the eval gate (unless ``force``) it takes ``policy.share`` of the
        alias's requests, and the policy (fields left unset: the server's defaults) promotes or rolls it back.
        ``status.traffic_split`` while it runs; :meth:`wait_canary` for the decision."""
        request = lora.StartCanaryRequest(
            version=version, policy=policy, force=force, reason=reason, base_model=base_model
        )
        return (await self._operation(self.lora.StartCanary, request)).status

    async def abort_canary(self, *, reason: str = "") -> lora.LoraStatus:
        """End the canary in force with no verdict: the candidate leaves traffic."""
        return (await self._operation(self.lora.AbortCanary, lora.AbortCanaryRequest(reason=reason))).status

    async def set_traffic_split(
        self, version: str, share: float, *, reason: str = "", base_model: str = ""
    ) -> lora.LoraStatus:
        """A manual A/B split: ``share`` of the alias's requests to ``version`` (no gate, no decision) until changed;
        share 0 ends it (``version`` may then be empty)."""
        request = lora.SetTrafficSplitRequest(version=version, share=share, reason=reason, base_model=base_model)
        return (await self._operation(self.lora.SetTrafficSplit, request)).status

    async def wait_canary(self, version: str) -> lora.CanaryOutcome:
        """Follow the status until the canary of ``version`` is decided; how it ended. FailedPrecondition
        (NO_CANARY_RUNNING) if it neither runs nor was the latest decided."""
        first = True
        async for status in self.watch_lora_status():
            split = status.traffic_split
            running = (status.HasField("traffic_split") and split.kind == lora.TRAFFIC_SPLIT_KIND_CANARY
                       and split.candidate_version == version)
            if not running and status.last_canary.version == version:
                return status.last_canary
            if not running and first:
                raise errors.FailedPrecondition(
                    grpc.StatusCode.FAILED_PRECONDITION, f"no canary of {version} is in force or was the latest",
                    reason=ERROR_REASON_NO_CANARY_RUNNING,
                )
            first = False
        raise AssertionError("the status watch ended")  # it re-opens until the caller stops

    # ---- evaluation jobs ----------------------------------------------------------

    async def create_evaluation_job(
        self, spec: evaluation.EvaluationJobSpec, *, request_id: str = ""
    ) -> evaluation.EvaluationJob:
        """Evaluate a version against a baseline (the gate's suites, ``spec.suite_paths`` and
        ``spec.suite_datasets``) as a job; nothing is activated. The decision goes onto the version and the job's
        ``eval``. ``spec.base_model_itself`` (and no ``spec.version``) evaluates the base model itself, on the golden
        suites only."""
        request = evaluation.CreateEvaluationJobRequest(spec=spec, request_id=request_id)
        return (await self._unary(self.evaluation.CreateEvaluationJob, request)).evaluation_job

    async def start_evaluation_job(
        self, spec: evaluation.EvaluationJobSpec, *, request_id: str = ""
    ) -> AsyncEvaluationJobHandle:
        """Create an evaluation job and return its handle (``wait()``, ``events()``, ``cancel()``)."""
        job = await self.create_evaluation_job(spec, request_id=request_id)
        return AsyncEvaluationJobHandle(self, job.name)

    def get_evaluation_job_handle(self, name: str) -> AsyncEvaluationJobHandle:
        """A handle on an existing evaluation job ("evaluationJobs/<id>"); makes no call."""
        return AsyncEvaluationJobHandle(self, name)

    async def get_evaluation_job(self, name: str) -> evaluation.EvaluationJob:
        request = evaluation.GetEvaluationJobRequest(name=name)
        return (await self._unary(self.evaluation.GetEvaluationJob, request)).evaluation_job

    async def list_evaluation_jobs(
        self, *, states: Iterable[int] = (), page_size: int = 0, page_token: str = ""
    ) -> evaluation.ListEvaluationJobsResponse:
        request = evaluation.ListEvaluationJobsRequest(
            states=list(states), page_size=page_size, page_token=page_token
        )
        return await self._unary(self.evaluation.ListEvaluationJobs, request)

    async def cancel_evaluation_job(self, name: str) -> evaluation.EvaluationJob:
        request = evaluation.CancelEvaluationJobRequest(name=name)
        return (await self._unary(self.evaluation.CancelEvaluationJob, request)).evaluation_job

    def watch_evaluation_job(
        self, name: str, *, after_sequence: int = 0
    ) -> AsyncIterator[evaluation.WatchEvaluationJobResponse]:
        """Snapshot, then every event until the job ends; survives dropped connections."""
        return self._resumable(
            self.evaluation.WatchEvaluationJob,
            lambda after: evaluation.WatchEvaluationJobRequest(name=name, after_sequence=after),
            after_sequence,
            lambda m: m.event.sequence if m.HasField("event") else None,
        )

    # ---- data preparation jobs ----------------------------------------------------

    async def create_preparation_job(
        self, spec: preparation_pb2.PreparationJobSpec, *, request_id: str = ""
    ) -> preparation_pb2.PreparationJob:
        """Turn documents into question-answer pairs a served model writes, stored as a version of
        ``spec.dataset`` once the job succeeds (``result.dataset_version``)."""
        request = preparation_pb2.CreatePreparationJobRequest(spec=spec, request_id=request_id)
        return (await self._unary(self.preparation.CreatePreparationJob, request)).preparation_job

    async def get_preparation_job(self, name: str) -> preparation_pb2.PreparationJob:
        request = preparation_pb2.GetPreparationJobRequest(name=name)
        return (await self._unary(self.preparation.GetPreparationJob, request)).preparation_job

    async def list_preparation_jobs(
        self, *, states: Iterable[int] = (), page_size: int = 0, page_token: str = ""
    ) -> preparation_pb2.ListPreparationJobsResponse:
        request = preparation_pb2.ListPreparationJobsRequest(
            states=list(states), page_size=page_size, page_token=page_token
        )
        return await self._unary(self.preparation.ListPreparationJobs, request)

    async def cancel_preparation_job(self, name: str) -> preparation_pb2.PreparationJob:
        request = preparation_pb2.CancelPreparationJobRequest(name=name)
        return (await self._unary(self.preparation.CancelPreparationJob, request)).preparation_job

    def watch_preparation_job(
        self, name: str, *, after_sequence: int = 0
    ) -> AsyncIterator[preparation_pb2.WatchPreparationJobResponse]:
        """Snapshot, then every event (one per chunk) until the job ends; survives dropped connections."""
        return self._resumable(
            self.preparation.WatchPreparationJob,
            lambda after: preparation_pb2.WatchPreparationJobRequest(name=name, after_sequence=after),
            after_sequence,
            lambda m: m.event.sequence if m.HasField("event") else None,
        )

    # ---- pipelines ----------------------------------------------------------------

    async def create_pipeline(self, pipeline_id: str, pipeline: pipeline_pb2.Pipeline) -> pipeline_pb2.Pipeline:
        """A pipeline "pipelines/<pipeline_id>": its training template, suites, rollout and triggers."""
        request = pipeline_pb2.CreatePipelineRequest(pipeline_id=pipeline_id, pipeline=pipeline)
        return (await self._unary(self.pipelines.CreatePipeline, request)).pipeline

    async def get_pipeline(self, name: str) -> pipeline_pb2.Pipeline:
        return (await self._unary(self.pipelines.GetPipeline, pipeline_pb2.GetPipelineRequest(name=name))).pipeline

    async def list_pipelines(self, *, page_size: int = 0, page_token: str = "") -> pipeline_pb2.ListPipelinesResponse:
        request = pipeline_pb2.ListPipelinesRequest(page_size=page_size, page_token=page_token)
        return await self._unary(self.pipelines.ListPipelines, request)

    async def update_pipeline(self, pipeline: pipeline_pb2.Pipeline,
                              update_mask: Iterable[str]) -> pipeline_pb2.Pipeline:
        """Change the fields named in ``update_mask`` (training, suite_paths, rollout, triggers, enabled,
        description) of the pipeline ``pipeline.name`` to ``pipeline``'s; with ``pipeline.etag`` set, only if it
        has not changed since."""
        request = pipeline_pb2.UpdatePipelineRequest(pipeline=pipeline, update_mask=field_mask_pb2.FieldMask(
            paths=list(update_mask)))
        return (await self._unary(self.pipelines.UpdatePipeline, request)).pipeline

    async def delete_pipeline(self, name: str) -> None:
        await self._unary(self.pipelines.DeletePipeline, pipeline_pb2.DeletePipelineRequest(name=name))

    async def run_pipeline(self, name: str, *, reason: str = "", request_id: str = "") -> pipeline_pb2.PipelineRun:
        """Start a run now; the same ``request_id`` returns the run it started."""
        request = pipeline_pb2.RunPipelineRequest(name=name, reason=reason, request_id=request_id)
        return (await self._unary(self.pipelines.RunPipeline, request)).run

    async def list_pipeline_runs(
        self, pipeline: str, *, page_size: int = 0, page_token: str = ""
    ) -> pipeline_pb2.ListPipelineRunsResponse:
        request = pipeline_pb2.ListPipelineRunsRequest(pipeline=pipeline, page_size=page_size,
                                                       page_token=page_token)
        return await self._unary(self.pipelines.ListPipelineRuns, request)

    async def get_pipeline_run(self, name: str) -> pipeline_pb2.PipelineRun:
        return (await self._unary(self.pipelines.GetPipelineRun, pipeline_pb2.GetPipelineRunRequest(name=name))).run

    async def cancel_pipeline_run(self, name: str) -> pipeline_pb2.PipelineRun:
        request = pipeline_pb2.CancelPipelineRunRequest(name=name)
        return (await self._unary(self.pipelines.CancelPipelineRun, request)).run

    def watch_pipeline_run(
        self, name: str, *, after_sequence: int = 0
    ) -> AsyncIterator[pipeline_pb2.WatchPipelineRunResponse]:
        """Snapshot, then every event (stages started, progress, ended) until the run ends; survives dropped
        connections."""
        return self._resumable(
            self.pipelines.WatchPipelineRun,
            lambda after: pipeline_pb2.WatchPipelineRunRequest(name=name, after_sequence=after),
            after_sequence,
            lambda m: m.event.sequence if m.HasField("event") else None,
        )

    async def list_trigger_decisions(
        self, pipeline: str, *, page_size: int = 0
    ) -> list[pipeline_pb2.TriggerDecision]:
        """Why each of the pipeline's triggers fired or was skipped, newest first."""
        request = pipeline_pb2.ListTriggerDecisionsRequest(pipeline=pipeline, page_size=page_size)
        return list((await self._unary(self.pipelines.ListTriggerDecisions, request)).decisions)

    # ---- online learning ----------------------------------------------------------

    async def create_online_session(
        self, spec: online_pb2.OnlineSessionSpec | None = None, *, session_id: str = "", request_id: str = ""
    ) -> online_pb2.OnlineSession:
        """A session "onlineSessions/<session_id>" learning from the examples it is sent, starting from
        ``spec.start_version`` (default: the active version); unset settings take the server's defaults.
        ``spec.loss = ONLINE_LOSS_KTO`` learns by KTO from examples labelled ``desirable`` true or false."""
        request = online_pb2.CreateOnlineSessionRequest(spec=spec, session_id=session_id, request_id=request_id)
        return (await self._unary(self.online.CreateOnlineSession, request)).session

    async def get_online_session(self, name: str) -> online_pb2.OnlineSession:
        return (await self._unary(self.online.GetOnlineSession, online_pb2.GetOnlineSessionRequest(name=name))).session

    async def list_online_sessions(
        self, *, page_size: int = 0, page_token: str = ""
    ) -> online_pb2.ListOnlineSessionsResponse:
        request = online_pb2.ListOnlineSessionsRequest(page_size=page_size, page_token=page_token)
        return await self._unary(self.online.ListOnlineSessions, request)

    async def stop_online_session(self, name: str) -> online_pb2.OnlineSession:
        """Stop learning for good: a last checkpoint, then the session ends CANCELLED."""
        request = online_pb2.StopOnlineSessionRequest(name=name)
        return (await self._unary(self.online.StopOnlineSession, request)).session

    async def set_learning_rate(self, name: str, learning_rate: float) -> online_pb2.OnlineSession:
        """From the session's next update on; (0, 1]."""
        request = online_pb2.SetLearningRateRequest(name=name, learning_rate=learning_rate)
        return (await self._unary(self.online.SetLearningRate, request)).session

    async def enable_online_learning(self, name: str) -> online_pb2.OnlineSession:
        request = online_pb2.EnableOnlineLearningRequest(name=name)
        return (await self._unary(self.online.EnableOnlineLearning, request)).session

    async def disable_online_learning(self, name: str, *, reason: str = "") -> online_pb2.OnlineSession:
        """Updates stop (examples are still taken and kept) until enabled again."""
        request = online_pb2.DisableOnlineLearningRequest(name=name, reason=reason)
        return (await self._unary(self.online.DisableOnlineLearning, request)).session

    async def force_update(self, name: str) -> online_pb2.OnlineSession:
        """One update now on what is buffered, even fewer than update_every examples."""
        return (await self._unary(self.online.ForceUpdate, online_pb2.ForceUpdateRequest(name=name))).session

    async def publish_online_session(self, name: str) -> online_pb2.OnlineSession:
        """Publish the session's adapter as a version (it then goes through the gate)."""
        request = online_pb2.PublishOnlineSessionRequest(name=name)
        return (await self._unary(self.online.PublishOnlineSession, request)).session

    async def get_online_stats(self, name: str) -> online_pb2.OnlineStats:
        return (await self._unary(self.online.GetOnlineStats, online_pb2.GetOnlineStatsRequest(name=name))).stats

    async def move_live_alias(self, name: str, version: str) -> online_pb2.OnlineSession:
        """Point the session's live alias at ``version`` (no gate: the caller's choice). While the session runs, its
        next publication that passes the gate moves it again; after it ended, the alias serves ``version`` until
        moved again or removed."""
        request = online_pb2.MoveLiveAliasRequest(name=name, version=version)
        return (await self._unary(self.online.MoveLiveAlias, request)).session

    async def remove_live_alias(self, name: str) -> online_pb2.OnlineSession:
        """Stop routing the session's live alias (also one kept after the session ended); the name is free again."""
        request = online_pb2.RemoveLiveAliasRequest(name=name)
        return (await self._unary(self.online.RemoveLiveAlias, request)).session

    def watch_online_session(
        self, name: str, *, after_sequence: int = 0
    ) -> AsyncIterator[online_pb2.WatchOnlineSessionResponse]:
        """Snapshot, then every event (updates, publications, loss spikes, warnings) until the session ends;
        survives dropped connections."""
        return self._resumable(
            self.online.WatchOnlineSession,
            lambda after: online_pb2.WatchOnlineSessionRequest(name=name, after_sequence=after),
            after_sequence,
            lambda m: m.event.sequence if m.HasField("event") else None,
        )

    async def add_examples(
        self, name: str, examples: Sequence[online_pb2.OnlineExample]
    ) -> online_pb2.AddExamplesResponse:
        """Store examples for the session (a target makes one supervised); empty or oversized ones are refused
        and the response says which. A KTO session needs ``desirable`` and a target on each; an SFT session
        refuses ``desirable=False``."""
        request = online_pb2.AddExamplesRequest(name=name, examples=list(examples))
        return await self._unary(self.online.AddExamples, request)

    def stream_examples(
        self,
        name: str,
        batches: Iterable[Sequence[online_pb2.OnlineExample]] | AsyncIterable[Sequence[online_pb2.OnlineExample]],
    ) -> AsyncIterator[online_pb2.StreamExamplesResponse]:
        """Send ``batches`` of examples on one stream; yields the session's stats once at the start, after each
        update, and when everything sent has been trained on (or learning is off). Examples are refused as by
        :meth:`add_examples`."""

        async def messages() -> AsyncIterator[online_pb2.StreamExamplesRequest]:
            yield online_pb2.StreamExamplesRequest(name=name)
            async for batch in _each(batches):
                yield online_pb2.StreamExamplesRequest(examples=list(batch))

        return self._stream(self.online.StreamExamples, messages())

    # ---- datasets -----------------------------------------------------------------

    async def upload_dataset(
        self,
        name: str,
        source: Path,
        *,
        split: dataset_pb2.SplitRule | None = None,
        filename: str = "",
        kind: dataset_pb2.DatasetKind = dataset_pb2.DATASET_KIND_UNSPECIFIED,
    ) -> dataset_pb2.UploadDatasetResponse:
        """Upload the JSONL file ``source`` as a version of the dataset ``name`` ("datasets/<dataset>"); its size
        and sha256 are sent first, then its bytes. ``kind``: training examples (unspecified) or golden cases
        (``DATASET_KIND_GOLDEN``: ``{"prompt", "expected" | "references", "answer"?, "source"?}`` lines, scored as
        a golden suite, never trained on). The same bytes, split and kind again return the existing version
        (``created`` false). ``filename`` defaults to the file's name."""
        size, digest = await asyncio.to_thread(lambda: (source.stat().st_size, sha256_file(source)))
        metadata = dataset_pb2.UploadDatasetMetadata(
            name=name, split=split, sha256=digest, size_bytes=size, filename=filename or source.name, kind=kind
        )

        def parts() -> Iterator[dataset_pb2.UploadDatasetRequest]:
            yield dataset_pb2.UploadDatasetRequest(metadata=metadata)
            with source.open("rb") as handle:
                for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
                    yield dataset_pb2.UploadDatasetRequest(chunk=chunk)

        return await self._unary(self.datasets.UploadDataset, parts(), self._upload_timeout(size))

    async def create_dataset(
        self,
        name: str,
        *,
        split: dataset_pb2.SplitRule | None = None,
        server_path: str = "",
        s3_uri: str = "",
        feedback: common.FeedbackDataset | None = None,
        kind: dataset_pb2.DatasetKind = dataset_pb2.DATASET_KIND_UNSPECIFIED,
    ) -> dataset_pb2.CreateDatasetResponse:
        """Store a version of ``name`` from one source: a file below the server's datasets directory, an S3 object,
        or the examples a window of feedback gives now (frozen; training examples only). ``kind`` as
        :meth:`upload_dataset`'s."""
        request = dataset_pb2.CreateDatasetRequest(name=name, split=split, kind=kind)
        _one_source(request, server_path=server_path, s3_uri=s3_uri, feedback=feedback)
        return await self._unary(self.datasets.CreateDataset, request)

    async def get_dataset(self, name: str) -> dataset_pb2.Dataset:
        """One version ("datasets/<dataset>/versions/<n>"), or a dataset's newest ("datasets/<dataset>")."""
        return (await self._unary(self.datasets.GetDataset, dataset_pb2.GetDatasetRequest(name=name))).dataset

    async def list_datasets(
        self, *, dataset: str = "", page_size: int = 0, page_token: str = ""
    ) -> dataset_pb2.ListDatasetsResponse:
        """Versions, newest first: of ``dataset`` ("datasets/<dataset>") or of every dataset."""
        request = dataset_pb2.ListDatasetsRequest(dataset=dataset, page_size=page_size, page_token=page_token)
        return await self._unary(self.datasets.ListDatasets, request)

    async def delete_dataset(self, name: str) -> list[str]:
        """Delete a version, or every version of a dataset; returns the versions deleted."""
        request = dataset_pb2.DeleteDatasetRequest(name=name)
        return list((await self._unary(self.datasets.DeleteDataset, request)).deleted)

    async def validate_dataset(
        self,
        *,
        split: dataset_pb2.SplitRule | None = None,
        content: bytes = b"",
        server_path: str = "",
        s3_uri: str = "",
        feedback: common.FeedbackDataset | None = None,
        kind: dataset_pb2.DatasetKind = dataset_pb2.DATASET_KIND_UNSPECIFIED,
    ) -> dataset_pb2.ValidateDatasetResponse:
        """What a version of one source would hold (JSONL ``content`` or as :meth:`create_dataset`), read as
        ``kind``; stores nothing. Invalid content raises InvalidArgument with ``line[N].field`` violations."""
        request = dataset_pb2.ValidateDatasetRequest(split=split, kind=kind)
        _one_source(request, content=content, server_path=server_path, s3_uri=s3_uri, feedback=feedback)
        return await self._unary(self.datasets.ValidateDataset, request)

    # ---- feedback -----------------------------------------------------------------

    async def submit_feedback(
        self, events: Sequence[feedback.FeedbackEvent]
    ) -> feedback.SubmitFeedbackResponse:
        return await self._unary(
            self.feedback.SubmitFeedback, feedback.SubmitFeedbackRequest(events=list(events))
        )

    async def stream_feedback(
        self, batches: Iterable[Sequence[feedback.FeedbackEvent]] | AsyncIterable[Sequence[feedback.FeedbackEvent]]
    ) -> feedback.StreamFeedbackResponse:
        """Send many batches on one stream, each committed on its own, in order. If the stream fails, the
        error's ``metadata`` says what was stored (``committed_messages``, ``stored``, ``duplicates``); sending
        everything again is safe."""

        async def messages() -> AsyncIterator[feedback.StreamFeedbackRequest]:
            async for batch in _each(batches):
                yield feedback.StreamFeedbackRequest(events=list(batch))

        return await self._unary(self.feedback.StreamFeedback, messages())

    async def get_feedback_stats(
        self,
        *,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        adapter_version: str = "",
        tenant_id: str = "",
        base_model: str = "",
    ) -> feedback.GetFeedbackStatsResponse:
        """Counts of events timed in [start_time, end_time) (default: the 7 days before now), by kind and by
        adapter version; a naive datetime is taken as UTC. ``base_model`` counts only that base model's events
        (and those stored before events recorded one)."""
        request = feedback.GetFeedbackStatsRequest(
            adapter_version=adapter_version, tenant_id=tenant_id, base_model=base_model
        )
        if start_time is not None:
            request.start_time.FromDatetime(start_time)
        if end_time is not None:
            request.end_time.FromDatetime(end_time)
        return await self._unary(self.feedback.GetFeedbackStats, request)

    async def delete_user_feedback(self, user_id: str) -> int:
        """Forget a user: delete their events and refuse any of theirs timed before now; returns how many
        events were deleted."""
        request = feedback.DeleteUserFeedbackRequest(user_id=user_id)
        return (await self._unary(self.feedback.DeleteUserFeedback, request)).deleted

    # ---- drift --------------------------------------------------------------------

    async def get_drift_report(
        self,
        *,
        base_model: str = "",
        window: timedelta | None = None,
        end_time: datetime | None = None,
    ) -> drift.DriftReport:
        """The drift report of ``base_model`` (default: the server's) over ``window`` (default: the server's
        drift_window_days) ending at ``end_time`` (default: now; a naive datetime is taken as UTC): the incoming
        prompts against the active version's training data, the prompts that moved most, the negative-feedback
        rate and the evaluation scores over the window (docs/drift.md)."""
        request = drift.GetDriftReportRequest(base_model=base_model)
        if window is not None:
            request.window.FromTimedelta(window)
        if end_time is not None:
            request.end_time.FromDatetime(end_time)
        return (await self._unary(self.drift.GetDriftReport, request)).report


def _one_source(request: Any, **sources: Any) -> None:
    """Set the one source of a dataset request that is given; the server refuses none or (here) several."""
    given = {field: value for field, value in sources.items() if value}
    if len(given) > 1:
        raise ValueError(f"name one source, not {' and '.join(given)}")
    for field, value in given.items():
        if isinstance(value, common.FeedbackDataset):
            getattr(request, field).CopyFrom(value)
        else:
            setattr(request, field, value)


def archive_name(described: adapter.Adapter, suggested: str = "") -> str:
    """``<base model>-<version>.tar.gz``: the file name a download of ``described`` is written to."""
    suffix = "".join(Path(suggested).suffixes) or ".tar.gz"
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", described.base_model) or "adapter"
    return f"{base}-{described.version}{suffix}"
