"""The data calls of :class:`~learning_engine.client.AsyncClient`: stored datasets and feedback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from learning.v1 import common_pb2 as common
from learning.v1 import (
    dataset_pb2,
)
from learning.v1 import feedback_pb2 as feedback
from learning_engine.archive import sha256_file
from learning_engine.calls import CHUNK_SIZE, Calls, each


class DataCalls(Calls):
    """Stored datasets and feedback."""

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
        content: bytes | None = None,
        server_path: str = "",
        s3_uri: str = "",
        feedback: common.FeedbackDataset | None = None,
        kind: dataset_pb2.DatasetKind = dataset_pb2.DATASET_KIND_UNSPECIFIED,
    ) -> dataset_pb2.ValidateDatasetResponse:
        """What a version of one source would hold (JSONL ``content`` or as :meth:`create_dataset`), read as
        ``kind``; stores nothing. Invalid content raises InvalidArgument with ``line[N].field`` violations, and
        empty ``content`` (``b""``, an empty file) DATASET_EMPTY."""
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
            async for batch in each(batches):
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
        """Forget a user: delete their events (and the examples online sessions made of them) and refuse any of
        theirs timed before now; returns how many events were deleted (:meth:`forget_user` returns both counts)."""
        request = feedback.DeleteUserFeedbackRequest(user_id=user_id)
        return (await self._unary(self.feedback.DeleteUserFeedback, request)).deleted

    async def forget_user(self, user_id: str) -> feedback.DeleteUserFeedbackResponse:
        """:meth:`delete_user_feedback`, returning the whole response: ``deleted`` (events) and
        ``online_examples_deleted`` (the examples online sessions had made of their feedback)."""
        request = feedback.DeleteUserFeedbackRequest(user_id=user_id)
        return await self._unary(self.feedback.DeleteUserFeedback, request)


def _one_source(request: Any, **sources: Any) -> None:
    """Set the one source of a dataset request that is given (content given empty is given: the server says it
    holds no examples); the server refuses none or (here) several."""
    given = {field: value for field, value in sources.items()
             if value is not None and value != ""}
    if len(given) > 1:
        raise ValueError(f"name one source, not {' and '.join(given)}")
    for field, value in given.items():
        if isinstance(value, common.FeedbackDataset):
            getattr(request, field).CopyFrom(value)
        else:
            setattr(request, field, value)
