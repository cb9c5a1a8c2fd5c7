"""Protobuf <-> domain conversion for FeedbackService, in one place.

Kept lean: ``event_from_pb`` runs for every ingested event (positional construction, no per-field
HasField checks beyond the two that carry meaning: interaction and time).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import cast

from google.protobuf import timestamp_pb2

from engine.errors import FieldViolation, InvalidArgument
from engine.feedback.events import FeedbackEvent, FeedbackKind, FeedbackStats, IngestResult, Interaction, Turn
from learning.v1 import feedback_pb2 as pb
from server.convert_jobs import timestamp_to_pb

KIND_FROM_PB: dict[pb.FeedbackKind, FeedbackKind] = {
    cast(pb.FeedbackKind, pb.FeedbackKind.Value(f"FEEDBACK_KIND_{k.value}")): k for k in FeedbackKind
}
KIND_TO_PB: dict[FeedbackKind, pb.FeedbackKind] = {v: k for k, v in KIND_FROM_PB.items()}
_DEFAULT_STATS_WINDOW = timedelta(days=7)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST = datetime.min.replace(tzinfo=UTC)
# A Timestamp's valid range (google/protobuf/timestamp.proto): 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799
_TIME_RANGE = "must lie in 0001-01-01T00:00:00Z..9999-12-31T23:59:59Z with nanos in 0..999999999"


class _OutOfRange(Exception):
    """A request Timestamp outside the range above (raised bare on the hot path; callers name the field)."""


def _time(ts: timestamp_pb2.Timestamp) -> datetime:
    """The one conversion of a request's Timestamp to a datetime; raises _OutOfRange outside the valid range.

    Timestamp.ToDatetime is pure Python and shows up at 100k events/s; this is the same value, to the microsecond
    (timedelta's positional arguments are days, seconds, microseconds: cheaper than keywords).
    """
    seconds, nanos = ts.seconds, ts.nanos
    if not (_MIN_SECONDS <= seconds <= _MAX_SECONDS and 0 <= nanos <= 999_999_999):
        raise _OutOfRange
    return _EPOCH + timedelta(0, seconds, nanos // 1000)


def request_time(ts: timestamp_pb2.Timestamp, field_path: str, reason: str) -> datetime:
    """A request Timestamp as a datetime; INVALID_ARGUMENT naming ``field_path`` when it is out of range."""
    try:
        return _time(ts)
    except _OutOfRange:
        raise InvalidArgument(
            reason, f"{field_path} is outside the range of a Timestamp",
            violations=[FieldViolation(field_path, _TIME_RANGE)],
        ) from None


def event_from_pb(msg: pb.FeedbackEvent) -> FeedbackEvent:
    interaction = None
    if msg.HasField("interaction"):
        it = msg.interaction
        turns = it.messages
        interaction = Interaction(
            it.interaction_id, tuple([Turn(m.role, m.content) for m in turns]) if turns else (), it.prompt, it.response
        )
    labels = msg.labels  # a map; reading each key is cheaper than .items(), which is pure Python
    return FeedbackEvent(
        msg.client_event_id,
        KIND_FROM_PB.get(msg.kind),
        msg.rating,
        msg.correction,
        msg.dwell_seconds,
        interaction,
        msg.interaction_ref,
        msg.adapter_version,
        msg.user_id,
        msg.tenant_id,
        _time(msg.time) if msg.HasField("time") else None,
        tuple([(key, labels[key]) for key in labels]) if labels else (),
        msg.base_model,
    )


def events_from_pb(msgs: Sequence[pb.FeedbackEvent]) -> list[FeedbackEvent]:
    try:
        return [event_from_pb(m) for m in msgs]
    except _OutOfRange:
        bad = [i for i, m in enumerate(msgs) if m.HasField("time") and _out_of_range(m.time)]
        raise InvalidArgument(
            "INVALID_FEEDBACK",
            f"{len(bad)} invalid event(s); nothing in this batch was stored. First: events[{bad[0]}].time: "
            "outside the range of a Timestamp",
            violations=[FieldViolation(f"events[{i}].time", _TIME_RANGE) for i in bad[:50]],
            metadata={"first_invalid_index": str(bad[0]), "invalid_events": ",".join(map(str, bad[:20]))},
        ) from None


def _out_of_range(ts: timestamp_pb2.Timestamp) -> bool:
    try:
        _time(ts)
    except _OutOfRange:
        return True
    return False


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
    reason = "INVALID_TIME_WINDOW"
    end = request_time(request.end_time, "end_time", reason) if request.HasField("end_time") else now
    if request.HasField("start_time"):
        start = request_time(request.start_time, "start_time", reason)
    else:
        start = end - _DEFAULT_STATS_WINDOW if end - _EARLIEST > _DEFAULT_STATS_WINDOW else _EARLIEST
    if start >= end:
        raise InvalidArgument(
            "INVALID_TIME_WINDOW", "start_time must be before end_time",
            violations=[FieldViolation("start_time", "must be before end_time")],
        )
    return start, end


def stats_to_pb(stats: FeedbackStats) -> pb.GetFeedbackStatsResponse:
    return pb.GetFeedbackStatsResponse(
        by_kind=[pb.FeedbackKindCount(kind=KIND_TO_PB[k], count=n) for k, n in stats.by_kind],
        by_adapter=[
            pb.AdapterFeedbackStats(
                adapter_version=a.adapter_version, positive=a.positive, negative=a.negative,
                positive_ratio=a.positive_ratio, base_model=a.base_model,
            )
            for a in stats.by_adapter
        ],
        total=stats.total,
        start_time=timestamp_to_pb(stats.start_time),
        end_time=timestamp_to_pb(stats.end_time),
    )


def user_id_from_pb(user_id: str) -> str:
    if not user_id or len(user_id) > 128 or not user_id.isprintable():
        raise InvalidArgument(
            "INVALID_USER_ID", "user_id must be 1-128 printable characters",
            violations=[FieldViolation("user_id", "must be 1-128 printable characters")],
        )
    return user_id

