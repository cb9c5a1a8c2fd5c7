"""Protobuf <-> domain conversion for FeedbackService, in one place.

Kept lean: this runs for every ingested event, so it does attribute reads and no per-field
HasField checks beyond the two that carry meaning (interaction, time).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from engine.errors import FieldViolation, InvalidArgument
from engine.feedback.events import FeedbackEvent, FeedbackKind, FeedbackStats, IngestResult, Interaction, Turn
from learning.v1 import feedback_pb2 as pb

KIND_FROM_PB: dict[int, FeedbackKind] = {
    pb.FeedbackKind.Value(f"FEEDBACK_KIND_{k.value}"): k for k in FeedbackKind
}
KIND_TO_PB: dict[FeedbackKind, int] = {v: k for k, v in KIND_FROM_PB.items()}
_DEFAULT_STATS_WINDOW = timedelta(days=7)


def _time(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def event_from_pb(msg: pb.FeedbackEvent) -> FeedbackEvent:
    interaction = None
    if msg.HasField("interaction"):
        it = msg.interaction
        interaction = Interaction(
            interaction_id=it.interaction_id,
            messages=tuple(Turn(m.role, m.content) for m in it.messages),
            prompt=it.prompt,
            response=it.response,
        )
    return FeedbackEvent(
        client_event_id=msg.client_event_id,
        kind=KIND_FROM_PB.get(msg.kind),
        rating=msg.rating,
        correction=msg.correction,
        dwell_seconds=msg.dwell_seconds,
        interaction=interaction,
        interaction_ref=msg.interaction_ref,
        adapter_version=msg.adapter_version,
        user_id=msg.user_id,
        tenant_id=msg.tenant_id,
        time=_time(msg.time) if msg.HasField("time") else None,
        labels=tuple(msg.labels.items()),
    )


def events_from_pb(msgs) -> list[FeedbackEvent]:
    return [event_from_pb(m) for m in msgs]


def submit_response(result: IngestResult) -> pb.SubmitFeedbackResponse:
    return pb.SubmitFeedbackResponse(
        stored=result.stored, duplicates=result.duplicates, scrubbed=dict(result.scrubbed),
        forgotten=result.forgotten,
    )


def stream_response(result: IngestResult) -> pb.StreamFeedbackResponse:
    return pb.StreamFeedbackResponse(
        stored=result.stored, duplicates=result.duplicates, scrubbed=dict(result.scrubbed),
        forgotten=result.forgotten, messages=result.messages,
    )


def window_from_pb(request: pb.GetFeedbackStatsRequest, now: datetime) -> tuple[datetime, datetime]:
    end = _time(request.end_time) if request.HasField("end_time") else now
    start = _time(request.start_time) if request.HasField("start_time") else end - _DEFAULT_STATS_WINDOW
    if start >= end:
        raise InvalidArgument(
            "INVALID_TIME_WINDOW", "start_time must be before end_time",
            violations=[FieldViolation("start_time", "must be before end_time")],
        )
    return start, end


def _ts(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def stats_to_pb(stats: FeedbackStats) -> pb.GetFeedbackStatsResponse:
    return pb.GetFeedbackStatsResponse(
        by_kind=[pb.FeedbackKindCount(kind=KIND_TO_PB[k], count=n) for k, n in stats.by_kind],
        by_adapter=[
            pb.AdapterFeedbackStats(
                adapter_version=a.adapter_version, positive=a.positive, negative=a.negative,
                positive_ratio=a.positive_ratio,
            )
            for a in stats.by_adapter
        ],
        total=stats.total,
        start_time=_ts(stats.start_time),
        end_time=_ts(stats.end_time),
    )


def user_id_from_pb(user_id: str) -> str:
    if not user_id or len(user_id) > 128 or not user_id.isprintable():
        raise InvalidArgument(
            "INVALID_USER_ID", "user_id must be 1-128 printable characters",
            violations=[FieldViolation("user_id", "must be 1-128 printable characters")],
        )
    return user_id

