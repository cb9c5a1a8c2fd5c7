"""Typed asyncio client over the generated learning.v1 stubs.

Every method takes and returns generated messages (typed by their ``.pyi``
stubs); every failure raises a :mod:`learning_engine.errors` exception. Job
watches reconnect after a dropped connection and resume after the last
sequence they delivered, so a caller sees each event exactly once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from learning.v1 import adapter_pb2 as adapter
from learning.v1 import (
    adapter_pb2_grpc,
    feedback_pb2_grpc,
    fisher_pb2_grpc,
    lora_control_pb2_grpc,
    training_pb2_grpc,
)
from learning.v1 import feedback_pb2 as feedback
from learning.v1 import fisher_pb2 as fisher
from learning.v1 import lora_control_pb2 as lora
from learning.v1 import training_pb2 as training
from learning.v1.error_reason_pb2 import ERROR_REASON_NO_HEADER, ERROR_REASON_SHA256_MISMATCH
from learning_engine import errors
from learning_engine.connection import DEFAULT_TARGET, Connection, TlsConfig

log = logging.getLogger(__name__)

T = TypeVar("T")
U = TypeVar("U")

# A dropped connection surfaces as UNAVAILABLE; those are the only failures a watch retries.
RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
CHUNK_SIZE = 1024 * 1024


class AsyncClient:
    """``async with AsyncClient("host:port", token=...) as client: ...``"""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: TlsConfig | None = None,
        timeout: float | None = 30.0,
        channel_options: Sequence[tuple[str, Any]] = (),
        reconnect_attempts: int = 30,
        reconnect_delay: float = 0.5,
    ) -> None:
        self.connection = Connection(target, token, tls, tuple(channel_options))
        self.timeout = timeout
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay = reconnect_delay
        self._channel = self.connection.open()
        self._metadata = self.connection.metadata()
        self.training = training_pb2_grpc.TrainingServiceStub(self._channel)
        self.fisher = fisher_pb2_grpc.FisherServiceStub(self._channel)
        self.adapters = adapter_pb2_grpc.AdapterServiceStub(self._channel)
        self.lora = lora_control_pb2_grpc.LoraControlServiceStub(self._channel)
        self.feedback = feedback_pb2_grpc.FeedbackServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    # ---- call plumbing ------------------------------------------------------------

    async def _unary(
        self, method: Callable[..., Awaitable[T]], request: Any, timeout: float | None = None
    ) -> T:
        try:
            return await method(request, metadata=self._metadata, timeout=timeout or self.timeout)
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
        self, spec: training.TrainingJobSpec, *, request_id: str = "", validate_only: bool = False
    ) -> training.TrainingJob:
        request = training.CreateTrainingJobRequest(
            spec=spec, request_id=request_id, validate_only=validate_only
        )
        return (await self._unary(self.training.CreateTrainingJob, request)).training_job

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

    async def get_fisher_job(self, name: str) -> fisher.FisherJob:
        return (await self._unary(self.fisher.GetFisherJob, fisher.GetFisherJobRequest(name=name))).fisher_job

    async def list_fisher_jobs(
        self, *, states: Iterable[int] = (), page_size: int = 0, page_token: str = ""
    ) -> fisher.ListFisherJobsResponse:
        request = fisher.ListFisherJobsRequest(states=list(states), page_size=page_size, page_token=page_token)
        return await self._unary(self.fisher.ListFisherJobs, request)

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

    async def download_adapter(
        self, version: str, destination: Path, *, base_model: str = ""
    ) -> tuple[adapter.Adapter, Path]:
        """Stream an adapter archive into ``destination`` (a directory); verify its sha256."""
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
                    name = Path(header.filename or f"{version}.tar").name
                    path = destination / name
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
        archive: Path,
        *,
        base_model: str = "",
        parent_version: str = "",
        major_version_bump: bool = False,
        labels: dict[str, str] | None = None,
        request_id: str = "",
    ) -> adapter.Adapter:
        """Upload an adapter archive (metadata first, then chunks)."""
        data = archive.read_bytes()
        metadata = adapter.ImportAdapterMetadata(
            base_model=base_model,
            parent_version=parent_version,
            major_version_bump=major_version_bump,
            labels=labels or {},
            sha256=hashlib.sha256(data).hexdigest(),
            request_id=request_id,
        )

        def parts() -> Iterable[adapter.ImportAdapterRequest]:
            yield adapter.ImportAdapterRequest(metadata=metadata)
            for start in range(0, len(data), CHUNK_SIZE):
                yield adapter.ImportAdapterRequest(chunk=data[start : start + CHUNK_SIZE])

        return (await self._unary(self.adapters.ImportAdapter, iter(parts()))).adapter

    async def delete_adapter(self, version: str, *, base_model: str = "") -> None:
        await self._unary(
            self.adapters.DeleteAdapter, adapter.DeleteAdapterRequest(base_model=base_model, version=version)
        )

    # ---- LoRA control -------------------------------------------------------------

    async def get_lora_status(self) -> lora.LoraStatus:
        return (await self._unary(self.lora.GetLoraStatus, lora.GetLoraStatusRequest())).status

    async def activate_adapter(
        self, version: str, *, reason: str = "", force: bool = False, mark_known_good: bool = False
    ) -> lora.ActivateAdapterResponse:
        request = lora.ActivateAdapterRequest(
            version=version, reason=reason, force=force, mark_known_good=mark_known_good
        )
        return await self._unary(self.lora.ActivateAdapter, request)

    async def rollback_adapter(self, *, reason: str = "") -> lora.LoraStatus:
        return (
            await self._unary(self.lora.RollbackAdapter, lora.RollbackAdapterRequest(reason=reason))
        ).status

    async def enable_lora(self, *, reason: str = "") -> lora.LoraStatus:
        return (await self._unary(self.lora.EnableLora, lora.EnableLoraRequest(reason=reason))).status

    async def disable_lora(self, *, reason: str = "") -> lora.LoraStatus:
        return (await self._unary(self.lora.DisableLora, lora.DisableLoraRequest(reason=reason))).status

    # ---- feedback -----------------------------------------------------------------

    async def submit_feedback(
        self, events: Sequence[feedback.FeedbackEvent]
    ) -> feedback.SubmitFeedbackResponse:
        return await self._unary(
            self.feedback.SubmitFeedback, feedback.SubmitFeedbackRequest(events=list(events))
        )

    async def get_feedback_stats(self, *, adapter_version: str = "") -> feedback.GetFeedbackStatsResponse:
        request = feedback.GetFeedbackStatsRequest(adapter_version=adapter_version)
        return await self._unary(self.feedback.GetFeedbackStats, request)
