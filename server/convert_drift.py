"""Protobuf <-> domain conversion for drift reports, in one place (see server/convert.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

from engine.drift.report import DriftOutcome, DriftReport
from engine.errors import FieldViolation, InvalidArgument
from learning.v1 import common_pb2 as common
from learning.v1 import drift_pb2 as pb
from server.convert_feedback import request_time
from server.convert_jobs import timestamp_to_pb

REASON = "INVALID_DRIFT_REQUEST"

_OUTCOMES = {
    DriftOutcome.NO_DRIFT: pb.DRIFT_OUTCOME_NO_DRIFT,
    DriftOutcome.DRIFTED: pb.DRIFT_OUTCOME_DRIFTED,
    DriftOutcome.NO_REFERENCE: pb.DRIFT_OUTCOME_NO_REFERENCE,
    DriftOutcome.TOO_FEW_SAMPLES: pb.DRIFT_OUTCOME_TOO_FEW_SAMPLES,
}


def request_from_pb(request: pb.GetDriftReportRequest, *,
                    default_base_model: str) -> tuple[str, timedelta | None, datetime | None]:
    """The base model, the window (None: the default) and the end (None: now) of a request."""
    window = None
    if request.HasField("window"):
        try:
            window = request.window.ToTimedelta()
        except (ValueError, OverflowError):
            raise InvalidArgument(REASON, "window is not a valid Duration",
                                  violations=[FieldViolation("window", "not a valid Duration")]) from None
    end = request_time(request.end_time, "end_time", REASON) if request.HasField("end_time") else None
    return request.base_model or default_base_model, window, end


def report_to_pb(report: DriftReport) -> pb.DriftReport:
    return pb.DriftReport(
        base_model=report.base_model, window_start_time=timestamp_to_pb(report.window_start),
        window_end_time=timestamp_to_pb(report.window_end), outcome=_OUTCOMES[report.outcome], drifted=report.drifted,
        reference_version=report.reference_version, statistic_name=report.statistic_name,
        statistic=report.statistic, threshold=report.threshold, p_value=report.p_value,
        significance=report.significance, permutations=report.permutations, incoming_samples=report.incoming,
        reference_samples=report.reference, incoming_total=report.incoming_total,
        reference_total=report.reference_total,
        moved=[pb.MovedPrompt(prompt=m.prompt, distance=m.distance, nearest_reference=m.nearest_reference)
               for m in report.moved],
        negative_rate=[pb.FeedbackRateBucket(start_time=timestamp_to_pb(b.start), end_time=timestamp_to_pb(b.end),
                                             positive=b.positive, negative=b.negative, negative_rate=b.negative_rate)
                       for b in report.negative_rate],
        eval_scores=[pb.EvalScore(time=timestamp_to_pb(e.time), version=e.version, baseline_version=e.baseline_version,
                                  passed=e.passed, evaluation_id=e.evaluation_id,
                                  metrics=[common.EvalMetric(name=n, value=v) for n, v in e.metrics])
                     for e in report.evaluations],
        note=report.note, compute_seconds=report.seconds,
    )
