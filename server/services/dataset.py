"""DatasetService: receive, validate, convert, call the stored datasets (engine.training.stored_datasets), convert
back."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from engine import DatasetsApi
from engine.errors import FieldViolation, InvalidArgument
from engine.training.dataset_records import parse_dataset_name
from learning.v1 import dataset_pb2 as pb
from learning.v1 import dataset_pb2_grpc as pb_grpc
from server.convert_dataset import (
    check_filename,
    content_to_pb,
    dataset_to_pb,
    kind_from_pb,
    missing_source,
    source_from_pb,
    split_from_pb,
)
from server.convert_jobs import page_size

SHA256_HEX = frozenset("0123456789abcdef")


class DatasetService(pb_grpc.DatasetServiceServicer):
    def __init__(self, datasets: DatasetsApi, *, scratch_dir: Path) -> None:
        self._datasets = datasets
        self._scratch = scratch_dir

    async def UploadDataset(
        self,
        request_iterator: AsyncIterator[pb.UploadDatasetRequest],
        context: grpc.aio.ServicerContext[pb.UploadDatasetRequest, pb.UploadDatasetResponse],
    ) -> pb.UploadDatasetResponse:
        async with self._folder() as folder:
            received = folder / "upload.jsonl"
            meta = await self._receive(request_iterator, received)
            record, created = await self._datasets.upload(
                meta.name, received, split=split_from_pb(meta.split, "metadata.split"), sha256=meta.sha256.lower(),
                size_bytes=meta.size_bytes, filename=meta.filename, kind=kind_from_pb(meta.kind, "metadata.kind"),
            )
        return pb.UploadDatasetResponse(dataset=dataset_to_pb(record), created=created)

    async def CreateDataset(
        self,
        request: pb.CreateDatasetRequest,
        context: grpc.aio.ServicerContext[pb.CreateDatasetRequest, pb.CreateDatasetResponse],
    ) -> pb.CreateDatasetResponse:
        split = split_from_pb(request.split, "split")
        kind = kind_from_pb(request.kind, "kind")
        source = source_from_pb(request)
        parse_dataset_name(request.name, "name", versioned=False)
        if source is None:
            raise missing_source()
        record, created = await self._datasets.create(request.name, source, split=split, kind=kind)
        return pb.CreateDatasetResponse(dataset=dataset_to_pb(record), created=created)

    async def GetDataset(
        self,
        request: pb.GetDatasetRequest,
        context: grpc.aio.ServicerContext[pb.GetDatasetRequest, pb.GetDatasetResponse],
    ) -> pb.GetDatasetResponse:
        return pb.GetDatasetResponse(dataset=dataset_to_pb(await self._datasets.get(request.name)))

    async def ListDatasets(
        self,
        request: pb.ListDatasetsRequest,
        context: grpc.aio.ServicerContext[pb.ListDatasetsRequest, pb.ListDatasetsResponse],
    ) -> pb.ListDatasetsResponse:
        records, token = await self._datasets.list(dataset=request.dataset, page_size=page_size(request.page_size),
                                                   page_token=request.page_token)
        return pb.ListDatasetsResponse(datasets=[dataset_to_pb(r) for r in records], next_page_token=token)

    async def DeleteDataset(
        self,
        request: pb.DeleteDatasetRequest,
        context: grpc.aio.ServicerContext[pb.DeleteDatasetRequest, pb.DeleteDatasetResponse],
    ) -> pb.DeleteDatasetResponse:
        deleted = await self._datasets.delete(request.name)
        return pb.DeleteDatasetResponse(deleted=[r.name for r in deleted])

    async def ValidateDataset(
        self,
        request: pb.ValidateDatasetRequest,
        context: grpc.aio.ServicerContext[pb.ValidateDatasetRequest, pb.ValidateDatasetResponse],
    ) -> pb.ValidateDatasetResponse:
        split = split_from_pb(request.split, "split")
        kind = kind_from_pb(request.kind, "kind")
        source = request.content if request.WhichOneof("source") == "content" else source_from_pb(request)
        if source is None:
            raise InvalidArgument(
                "INVALID_DATASET_REQUEST", "name what to validate: content, server_path, s3_uri or feedback",
                violations=[FieldViolation("source", "set content, server_path, s3_uri or feedback")],
            )
        return content_to_pb(await self._datasets.validate(source, split=split, kind=kind))

    # ---- the upload stream --------------------------------------------------------------

    async def _receive(self, requests: AsyncIterator[pb.UploadDatasetRequest],
                       dest: Path) -> pb.UploadDatasetMetadata:
        """The metadata message (checked as soon as it arrives), with the chunks that follow it written to
        ``dest``; refused as soon as the bytes pass the declared size or the server's limit."""
        meta: pb.UploadDatasetMetadata | None = None
        size = 0
        limit = self._datasets.max_bytes
        with dest.open("wb") as out:
            async for message in requests:
                part = message.WhichOneof("part")
                if meta is None:
                    if part != "metadata":
                        raise InvalidArgument("METADATA_FIRST", "the first message must carry metadata",
                                              violations=[FieldViolation("metadata", "send it first")])
                    meta = self._check(message.metadata)
                elif part == "chunk":
                    size += len(message.chunk)
                    if size > limit:
                        raise self._datasets.too_large(size, "the upload")
                    if size > meta.size_bytes:
                        raise InvalidArgument(
                            "UPLOAD_SIZE_MISMATCH", f"more than the declared {meta.size_bytes} bytes were sent; "
                            "nothing was stored",
                            violations=[FieldViolation("metadata.size_bytes", "fewer bytes than were sent")],
                            metadata={"declared": str(meta.size_bytes), "received": str(size)})
                    await asyncio.to_thread(out.write, message.chunk)
                else:
                    raise InvalidArgument("METADATA_TWICE", "metadata may be sent only once, first",
                                          violations=[FieldViolation("metadata", "send it once, first")])
        if meta is None:
            raise InvalidArgument("METADATA_FIRST", "the upload is empty; send metadata, then chunks",
                                  violations=[FieldViolation("metadata", "required")])
        if size == 0:
            raise InvalidArgument("EMPTY_UPLOAD", "no bytes of the file were sent",
                                  violations=[FieldViolation("chunk", "send the JSONL file in one or more chunks")])
        return meta

    def _check(self, meta: pb.UploadDatasetMetadata) -> pb.UploadDatasetMetadata:
        parse_dataset_name(meta.name, "metadata.name", versioned=False)
        split_from_pb(meta.split, "metadata.split")
        kind_from_pb(meta.kind, "metadata.kind")
        check_filename(meta.filename)
        sha = meta.sha256.lower()
        if len(sha) != 64 or not set(sha) <= SHA256_HEX:
            raise InvalidArgument("MALFORMED_SHA256", "metadata.sha256 must be the file's sha256, 64 hex digits",
                                  violations=[FieldViolation("metadata.sha256", "64 hex digits")])
        if meta.size_bytes == 0:  # as an empty file validated or stored from the server's files is
            raise InvalidArgument("DATASET_EMPTY", "the file is empty (0 bytes): it contains no examples",
                                  violations=[FieldViolation("metadata.size_bytes", "the file is empty")])
        if meta.size_bytes > self._datasets.max_bytes:
            raise self._datasets.too_large(meta.size_bytes, "the declared upload")
        return meta

    @contextlib.asynccontextmanager
    async def _folder(self) -> AsyncIterator[Path]:
        def make() -> Path:
            self._scratch.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix="dataset-upload-", dir=self._scratch))

        folder = await asyncio.to_thread(make)
        try:
            yield folder
        finally:  # also when the client cuts the stream: nothing of it stays
            await asyncio.to_thread(shutil.rmtree, folder, True)
