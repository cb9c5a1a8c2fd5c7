"""FeedbackService: convert, call the ingestor / store, convert back.

Torch-free on purpose (the ingestion benchmark serves it alone). With ``feedback_ingest_processes``,
StreamFeedback messages are prepared in worker processes (``server/feedback_workers.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import grpc

from engine import FeedbackIngestApi, FeedbackRecordsApi
from engine.errors import FieldViolation, InvalidArgument
from engine.feedback.ingest import FeedbackBases, FeedbackIngestor, FeedbackLimits, FeedbackRecordStore
from engine.feedback.scrub import Scrubber
from learning.v1 import feedback_pb2 as pb
from learning.v1 import feedback_pb2_grpc as pb_grpc
from server import convert_feedback as convert
from server.feedback_workers import FeedbackWorkers
from server.settings import Settings
from server.settings_server import DEFAULT_BASE_MODEL


class FeedbackService(pb_grpc.FeedbackServiceServicer):
    def __init__(
        self,
        ingestor: FeedbackIngestApi,
        store: FeedbackRecordsApi,
        *,
        rating_positive_min: int,
        rating_negative_max: int,
        bases: FeedbackBases,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        workers: FeedbackWorkers | None = None,
    ) -> None:
        self._ingestor = ingestor
        self._bases = bases
        self.workers = workers
        self._store = store
        self._rating_positive_min = rating_positive_min
        self._rating_negative_max = rating_negative_max
        self._clock = clock

    async def SubmitFeedback(
        self,
        request: pb.SubmitFeedbackRequest,
        context: grpc.aio.ServicerContext[pb.SubmitFeedbackRequest, pb.SubmitFeedbackResponse],
    ) -> pb.SubmitFeedbackResponse:
        result = await self._ingestor.submit(convert.events_from_pb(request.events))
        return convert.submit_response(result)

    async def StreamFeedback(
        self,
        request_iterator: AsyncIterator[pb.StreamFeedbackRequest],
        context: grpc.aio.ServicerContext[pb.StreamFeedbackRequest, pb.StreamFeedbackResponse],
    ) -> pb.StreamFeedbackResponse:
        if self.workers is not None:
            prepared = self.workers.prepare_stream(request_iterator, self._ingestor.now)
            return convert.stream_response(await self._ingestor.store_prepared(prepared))

        # Conversion and preparation in one hop off the event loop, which meanwhile streams the previous batch.
        result = await self._ingestor.stream(request_iterator, lambda message: convert.events_from_pb(message.events))
        return convert.stream_response(result)

    async def GetFeedbackStats(
        self,
        request: pb.GetFeedbackStatsRequest,
        context: grpc.aio.ServicerContext[pb.GetFeedbackStatsRequest, pb.GetFeedbackStatsResponse],
    ) -> pb.GetFeedbackStatsResponse:
        start, end = convert.window_from_pb(request, self._clock())
        base_model = request.base_model
        if base_model and base_model not in self._bases.known:
            known = ", ".join(sorted(self._bases.known))
            raise InvalidArgument(
                "UNKNOWN_BASE_MODEL", f"base_model {base_model[:128]!r} is not a base model of this server "
                                      f"(known: {known})",
                violations=[FieldViolation("base_model", f"must be one of {known}, or empty for all")],
                metadata={"base_model": base_model[:128]},
            )
        stats = await self._store.stats(
            start=start, end=end, adapter_version=request.adapter_version, tenant_id=request.tenant_id,
            rating_positive_min=self._rating_positive_min, rating_negative_max=self._rating_negative_max,
            base_model=base_model,
        )
        return convert.stats_to_pb(stats)

    def close(self) -> None:
        """Stop the worker processes, if any (after the server stopped serving)."""
        if self.workers is not None:
            self.workers.close()

    async def DeleteUserFeedback(
        self,
        request: pb.DeleteUserFeedbackRequest,
        context: grpc.aio.ServicerContext[pb.DeleteUserFeedbackRequest, pb.DeleteUserFeedbackResponse],
    ) -> pb.DeleteUserFeedbackResponse:
        erased = await self._store.delete_user(convert.user_id_from_pb(request.user_id))
        return pb.DeleteUserFeedbackResponse(deleted=erased.events, online_examples_deleted=erased.online_examples)


def feedback_limits(settings: Settings) -> FeedbackLimits:
    return FeedbackLimits(
        max_events_per_batch=settings.feedback_max_events_per_batch, max_text_chars=settings.feedback_max_text_chars
    )


def feedback_bases(settings: Settings) -> FeedbackBases:
    """The base models feedback may be about: the configured ones, the built-in one and the default."""
    return FeedbackBases(settings.default_base_model, frozenset({*settings.base_models, DEFAULT_BASE_MODEL}))


def feedback_ingestor(settings: Settings, store: FeedbackRecordStore) -> FeedbackIngestor:
    """The ingestor over ``store``, configured from the settings."""
    scrubber = Scrubber(settings.feedback_scrub_patterns, enabled=settings.feedback_scrub_enabled)
    return FeedbackIngestor(store, scrubber, feedback_limits(settings), bases=feedback_bases(settings))


def build_feedback_service(
    settings: Settings, ingestor: FeedbackIngestApi, records: FeedbackRecordsApi
) -> FeedbackService:
    """The servicer, configured from the settings (used by the composition root and the bench)."""
    workers = None
    if settings.feedback_ingest_processes:
        workers = FeedbackWorkers(
            settings.feedback_ingest_processes, scrub_patterns=settings.feedback_scrub_patterns,
            scrub_enabled=settings.feedback_scrub_enabled, limits=feedback_limits(settings),
            bases=feedback_bases(settings),
        )
    return FeedbackService(
        ingestor,
        records,
        rating_positive_min=settings.feedback_rating_positive_min,
        rating_negative_max=settings.feedback_rating_negative_max,
        bases=feedback_bases(settings),
        workers=workers,
    )
