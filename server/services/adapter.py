"""AdapterService: validate, convert, call the adapter registry, convert back."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

import grpc

from engine import AdaptersApi
from engine.errors import FieldViolation, InvalidArgument, ResourceExhausted
from engine.registry.records import ARCHIVE_NAME
from learning.v1 import adapter_pb2 as pb
from learning.v1 import adapter_pb2_grpc as pb_grpc
from server.convert_adapter import adapter_to_pb, labels_from_pb, required_version
from server.convert_jobs import check_request_id, page_size

DEFAULT_CHUNK = 1 << 20
MIN_CHUNK = 4 << 10
MAX_CHUNK = 4 << 20
MAX_IMPORT_BYTES = 4 << 30
MAX_REQUEST_ID = 128


class AdapterService(pb_grpc.AdapterServiceServicer):
    def __init__(self, registry: AdaptersApi, *, default_base_model: str, scratch_dir: Path) -> None:
        self._registry = registry
        self._default_base_model = default_base_model
        self._scratch = scratch_dir

    def _base(self, base_model: str) -> str:
        return base_model or self._default_base_model

    async def ListAdapters(
        self,
        request: pb.ListAdaptersRequest,
        context: grpc.aio.ServicerContext[pb.ListAdaptersRequest, pb.ListAdaptersResponse],
    ) -> pb.ListAdaptersResponse:
        records, token = await self._registry.list(
            base_model=request.base_model,
            labels=dict(labels_from_pb(request.labels)),
            page_size=page_size(request.page_size),
            page_token=request.page_token,
        )
        return pb.ListAdaptersResponse(adapters=[adapter_to_pb(r) for r in records], next_page_token=token)

    async def GetAdapter(
        self,
        request: pb.GetAdapterRequest,
        context: grpc.aio.ServicerContext[pb.GetAdapterRequest, pb.GetAdapterResponse],
    ) -> pb.GetAdapterResponse:
        record = await self._registry.get(self._base(request.base_model), required_version(request.version))
        return pb.GetAdapterResponse(adapter=adapter_to_pb(record))

    async def DownloadAdapter(
        self,
        request: pb.DownloadAdapterRequest,
        context: grpc.aio.ServicerContext[pb.DownloadAdapterRequest, pb.DownloadAdapterResponse],
    ) -> AsyncIterator[pb.DownloadAdapterResponse]:
        chunk_size = min(max(request.chunk_size or DEFAULT_CHUNK, MIN_CHUNK), MAX_CHUNK)
        folder = await asyncio.to_thread(self._tempdir)
        try:
            path = folder / ARCHIVE_NAME
            record = await self._registry.download(
                self._base(request.base_model), required_version(request.version), path
            )
            yield pb.DownloadAdapterResponse(header=pb.AdapterArchiveHeader(
                adapter=adapter_to_pb(record), sha256=record.sha256, size_bytes=record.size_bytes,
                filename=ARCHIVE_NAME,
            ))
            with path.open("rb") as handle:
                while chunk := await asyncio.to_thread(handle.read, chunk_size):
                    yield pb.DownloadAdapterResponse(chunk=chunk)
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def DeleteAdapter(
        self,
        request: pb.DeleteAdapterRequest,
        context: grpc.aio.ServicerContext[pb.DeleteAdapterRequest, pb.DeleteAdapterResponse],
    ) -> pb.DeleteAdapterResponse:
        await self._registry.delete(self._base(request.base_model), required_version(request.version))
        return pb.DeleteAdapterResponse()

    async def GetLineage(
        self,
        request: pb.GetLineageRequest,
        context: grpc.aio.ServicerContext[pb.GetLineageRequest, pb.GetLineageResponse],
    ) -> pb.GetLineageResponse:
        chain = await self._registry.lineage(self._base(request.base_model), required_version(request.version))
        return pb.GetLineageResponse(adapters=[adapter_to_pb(r) for r in chain])

    async def ImportAdapter(
        self,
        request_iterator: AsyncIterator[pb.ImportAdapterRequest],
        context: grpc.aio.ServicerContext[pb.ImportAdapterRequest, pb.ImportAdapterResponse],
    ) -> pb.ImportAdapterResponse:
        folder = await asyncio.to_thread(self._tempdir)
        try:
            upload = folder / "upload"
            checked = await _receive(request_iterator, upload,
                                     lambda meta: self._registry.import_base_model_dir(self._base(meta.base_model)))
            meta = checked.message
            record = await self._registry.import_archive(
                base_model=self._base(meta.base_model), upload=upload, expected_sha256=checked.sha256,
                parent_version=meta.parent_version, major_bump=meta.major_version_bump,
                labels=checked.labels, request_id=meta.request_id,
            )
            return pb.ImportAdapterResponse(adapter=adapter_to_pb(record))
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def PruneAdapters(
        self,
        request: pb.PruneAdaptersRequest,
        context: grpc.aio.ServicerContext[pb.PruneAdaptersRequest, pb.PruneAdaptersResponse],
    ) -> pb.PruneAdaptersResponse:
        keep = request.keep or self._registry.retention_keep
        if keep < 1:
            raise InvalidArgument(
                "RETENTION_NOT_CONFIGURED", "keep is 0 and no retention (adapter_retention_keep) is configured",
                violations=[FieldViolation("keep", "set how many of the newest versions to keep")],
            )
        deleted, kept = await self._registry.prune(
            self._base(request.base_model), keep=keep, dry_run=request.dry_run
        )
        return pb.PruneAdaptersResponse(deleted_versions=deleted, kept_versions=kept)

    def _tempdir(self) -> Path:
        self._scratch.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="adapter-rpc-", dir=self._scratch))


class _Metadata(NamedTuple):
    """The metadata message, checked: its sha256 in lower case, its labels as the registry takes them."""

    message: pb.ImportAdapterMetadata
    sha256: str
    labels: tuple[tuple[str, str], ...]


def _check(meta: pb.ImportAdapterMetadata) -> _Metadata:
    check_request_id(meta.request_id, "metadata.request_id", MAX_REQUEST_ID)
    sha = meta.sha256.lower()
    if sha and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        raise InvalidArgument("MALFORMED_SHA256", "metadata.sha256 must be 64 hex digits",
                              violations=[FieldViolation("metadata.sha256", "64 hex digits or empty")])
    return _Metadata(meta, sha, labels_from_pb(meta.labels, "metadata.labels"))


async def _receive(requests: AsyncIterator[pb.ImportAdapterRequest], dest: Path,
                   check_base: Callable[[pb.ImportAdapterMetadata], Awaitable[object]]) -> _Metadata:
    """The metadata message (checked as soon as it arrives, its base model by ``check_base`` too, not after an
    archive of up to 4 GiB), with the chunks that follow it written to ``dest``."""
    meta: _Metadata | None = None
    size = 0
    with dest.open("wb") as out:
        async for message in requests:
            part = message.WhichOneof("part")
            if meta is None:
                if part != "metadata":
                    raise InvalidArgument("METADATA_FIRST", "the first message must carry metadata",
                                          violations=[FieldViolation("metadata", "send it first")])
                meta = _check(message.metadata)
                await check_base(meta.message)
            elif part == "chunk":
                size += len(message.chunk)
                if size > MAX_IMPORT_BYTES:
                    raise ResourceExhausted("UPLOAD_TOO_LARGE", f"an upload may be at most {MAX_IMPORT_BYTES} bytes")
                await asyncio.to_thread(out.write, message.chunk)
            else:
                raise InvalidArgument("METADATA_TWICE", "metadata may be sent only once, first",
                                      violations=[FieldViolation("metadata", "send it once, first")])
    if meta is None:
        raise InvalidArgument("METADATA_FIRST", "the upload is empty; send metadata, then chunks",
                              violations=[FieldViolation("metadata", "required")])
    if size == 0:
        raise InvalidArgument("EMPTY_UPLOAD", "no archive bytes were sent",
                              violations=[FieldViolation("chunk", "send the tar.gz in one or more chunks")])
    return meta
