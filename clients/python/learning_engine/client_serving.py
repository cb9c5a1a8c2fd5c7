"""The serving calls of :class:`~learning_engine.client.AsyncClient`: adapter versions (upload, download, retention),
the served adapters (activate, roll back, canaries, traffic splits, evaluate) and drift."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import grpc

from learning.v1 import adapter_pb2 as adapter
from learning.v1 import drift_pb2 as drift
from learning.v1 import lora_control_pb2 as lora
from learning.v1.error_reason_pb2 import (
    ERROR_REASON_NO_CANARY_RUNNING,
    ERROR_REASON_NO_HEADER,
    ERROR_REASON_SHA256_MISMATCH,
)
from learning_engine import errors
from learning_engine.archive import pack_adapter_directory, sha256_file
from learning_engine.calls import CHUNK_SIZE, Calls


class ServingCalls(Calls):
    """Adapter versions, what the serving engine serves, and drift."""

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
        is written; one that appeared during the download, at its end, left as it is) unless ``overwrite``. A
        ``destination`` (or a parent of it) that exists and is not a directory raises NotADirectoryError, before
        anything is asked of the server. The download has the deadline an upload of the archive would have: the
        client's ``timeout``, plus a second per MiB once the header has said its size.
        """
        not_a_directory = next((p for p in (destination, *destination.parents) if p.exists()), destination)
        if not_a_directory.exists() and not not_a_directory.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{not_a_directory} is not a directory", str(not_a_directory))
        request = adapter.DownloadAdapterRequest(
            base_model=base_model, version=version, chunk_size=CHUNK_SIZE
        )
        header: adapter.AdapterArchiveHeader | None = None
        digest, path = hashlib.sha256(), Path()
        partial: Path | None = None  # a temporary file of this download's own (two downloads never share one)
        handle = None
        try:
            async for message in self._download(self.adapters.DownloadAdapter, request, _archive_size):
                if message.HasField("header"):
                    header = message.header
                    path = destination / archive_name(header.adapter, header.filename)
                    if path.exists() and not overwrite:
                        raise _exists(path, header.adapter.version)
                    destination.mkdir(parents=True, exist_ok=True)
                    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, kept past the block
                        dir=destination, prefix=f".{path.name}.", suffix=".partial", delete=False)
                    partial = Path(handle.name)
                elif handle is not None:
                    handle.write(message.chunk)
                    digest.update(message.chunk)
            if header is None:
                raise errors.DataLoss(
                    grpc.StatusCode.DATA_LOSS, "download ended without a header", reason=ERROR_REASON_NO_HEADER
                )
            if header.sha256 and digest.hexdigest() != header.sha256:
                raise errors.DataLoss(
                    grpc.StatusCode.DATA_LOSS,
                    "downloaded archive does not match its sha256",
                    reason=ERROR_REASON_SHA256_MISMATCH,
                )
            assert handle is not None and partial is not None  # the header opened them
            handle.close()
            if overwrite:
                partial.replace(path)
            else:  # the check above ran at the header: a file may have appeared since (another download, the user's)
                try:
                    os.link(partial, path)  # unlike replace, never over an existing file
                except FileExistsError:
                    raise _exists(path, header.adapter.version) from None
                partial.unlink()
            partial = None
            return header.adapter, path
        finally:  # a download that did not end with its archive in place leaves nothing behind
            if handle is not None:
                handle.close()
            if partial is not None:
                partial.unlink(missing_ok=True)

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

    async def abort_canary(self, *, reason: str = "", version: str = "") -> lora.LoraStatus:
        """End the canary in force with no verdict: the candidate leaves traffic. With ``version``, only that
        version's canary: another version's in force is left running, FailedPrecondition (NO_CANARY_RUNNING)."""
        request = lora.AbortCanaryRequest(reason=reason, version=version)
        return (await self._operation(self.lora.AbortCanary, request)).status

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


def archive_name(described: adapter.Adapter, suggested: str = "") -> str:
    """``<base model>-<version>.tar.gz``: the file name a download of ``described`` is written to."""
    suffix = "".join(Path(suggested).suffixes) or ".tar.gz"
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", described.base_model) or "adapter"
    return f"{base}-{described.version}{suffix}"


def _exists(path: Path, version: str) -> FileExistsError:
    """What a download without ``overwrite`` raises for a file already at ``path``."""
    return FileExistsError(errno.EEXIST, f"{path} exists (another download of {version}?)", str(path))


def _archive_size(first: adapter.DownloadAdapterResponse) -> int:
    """The size a download's first message, its header, announces (0 without one: the download fails at its end)."""
    return first.header.size_bytes
