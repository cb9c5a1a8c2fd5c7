"""Protobuf <-> domain conversion every kind of job shares: times, states, a job's common fields and events, its
error, and the checks of list, watch and create requests (request ids, state filters, page sizes, priorities,
watch positions, and that a spec's numbers are finite).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast, overload

from google.protobuf import duration_pb2, json_format, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import status_pb2

from engine.errors import FieldViolation, InvalidArgument, ViolationCollector
from engine.jobs.core import Failed, Job, JobEvent, JobFailure, JobState, Noticed, StateChanged, Warned
from learning.v1 import common_pb2 as common
from server.errors import failure_status

JOB_STATE_TO_PB = {s: cast(common.JobState, common.JobState.Value(f"JOB_STATE_{s.value}")) for s in JobState}
JOB_STATE_FROM_PB = {v: k for k, v in JOB_STATE_TO_PB.items()}


@overload
def timestamp_to_pb(value: datetime) -> timestamp_pb2.Timestamp: ...
@overload
def timestamp_to_pb(value: None) -> None: ...
def timestamp_to_pb(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def duration_to_pb(seconds: float | None) -> duration_pb2.Duration | None:
    if seconds is None:
        return None
    dur = duration_pb2.Duration()
    dur.FromNanoseconds(int(seconds * 1e9))
    return dur


def failure_to_pb(f: JobFailure) -> status_pb2.Status:
    return failure_status(f.code, f.reason, f.message, dict(f.metadata))


class JobMessage(Protocol):
    """The fields every kind's protobuf job message has (TrainingJob, FisherJob, ...)."""

    name: str
    request_id: str
    state: common.JobState
    progress: common.JobProgress
    last_sequence: int
    error: status_pb2.Status


class JobEventMessage(Protocol):
    """The fields every kind's protobuf job event message has (TrainingJobEvent, FisherJobEvent, ...)."""

    sequence: int
    time: timestamp_pb2.Timestamp
    state_change: common.JobStateChange
    notice: common.JobNotice
    warning: common.JobWarning
    error: common.JobError


M = TypeVar("M", bound=JobMessage)  # a job kind's protobuf job message
E = TypeVar("E", bound=JobEventMessage)  # a job kind's protobuf event message


def job_core_to_pb(job: Job[Any, Any], msg: M) -> M:
    """``msg`` (a TrainingJob, FisherJob, EvaluationJob) with what every kind of job has set: name, request id,
    state, progress, times, last sequence and its error."""
    p = job.progress
    msg.name, msg.request_id, msg.state = job.name, job.request_id, JOB_STATE_TO_PB[job.state]
    msg.progress.CopyFrom(common.JobProgress(fraction=p.fraction, completed_steps=p.completed_steps,
                                             total_steps=p.total_steps, eta=duration_to_pb(p.eta_seconds)))
    for field, value in (("create_time", job.create_time), ("start_time", job.start_time),
                         ("end_time", job.end_time)):
        if value is not None:
            getattr(msg, field).CopyFrom(timestamp_to_pb(value))
    msg.last_sequence = job.last_sequence
    if job.failure is not None:
        msg.error.CopyFrom(failure_to_pb(job.failure))
    return msg


def core_event_to_pb(event: JobEvent, msg: E) -> E:
    """``msg`` (a job kind's event) with its sequence and time, and a payload every kind records: a state change,
    notice, warning or error (the kind's own payloads are left to it)."""
    msg.sequence, payload = event.sequence, event.payload
    msg.time.CopyFrom(timestamp_to_pb(event.time))
    if isinstance(payload, StateChanged):
        msg.state_change.CopyFrom(state_change_to_pb(payload))
    elif isinstance(payload, Noticed):
        msg.notice.CopyFrom(common.JobNotice(code=payload.code, message=payload.message))
    elif isinstance(payload, Warned):
        msg.warning.CopyFrom(common.JobWarning(code=payload.code, message=payload.message))
    elif isinstance(payload, Failed):
        msg.error.CopyFrom(common.JobError(status=failure_to_pb(payload.failure)))
    return msg


def state_change_to_pb(p: StateChanged) -> common.JobStateChange:
    return common.JobStateChange(
        previous_state=JOB_STATE_TO_PB[p.previous] if p.previous else common.JOB_STATE_UNSPECIFIED,
        state=JOB_STATE_TO_PB[p.state], message=p.message,
    )


def states_from_pb(values: Iterable[common.JobState]) -> list[JobState]:
    issues = ViolationCollector()
    states = []
    for i, v in enumerate(values):
        if v in JOB_STATE_FROM_PB:
            states.append(JOB_STATE_FROM_PB[v])
        else:
            issues.add(f"states[{i}]", f"unknown or unspecified job state {v}")
    issues.raise_if_any("INVALID_STATE_FILTER", "invalid state filter")
    return states


def page_size(requested: int, *, default: int = 50, maximum: int = 1000) -> int:
    return min(requested or default, maximum)


def priority_from_pb(value: int) -> int:
    if not -1000 <= value <= 1000:
        raise InvalidArgument("INVALID_PRIORITY", "priority must lie in [-1000, 1000]",
                              violations=[FieldViolation("priority", "must lie in [-1000, 1000]")])
    return value


# The request ids the server publishes under for itself: a training job's result (trainingJobs/<id>/result,
# engine.training.job_results.result_request_id) and an online session's publications (onlineSessions/<id>/publish/<n>,
# engine.online.artifacts). A client's publish under one (ImportAdapter, PublishCheckpoint: the registry keys versions
# by request id) would be taken for the job's or the session's, and their own publish answered with the client's
# version. check_request_id refuses them in every request that takes a request id: no client needs one, and the
# rule is the same wherever a client names its request.
RESERVED_REQUEST_IDS = {re.compile(r"trainingJobs/.+/result"): "trainingJobs/<id>/result",
                        re.compile(r"onlineSessions/.+/publish/.+"): "onlineSessions/<id>/publish/<n>"}


def check_request_id(value: str, field_path: str, max_length: int) -> None:
    if len(value) > max_length or not value.isprintable():
        raise InvalidArgument(
            "INVALID_REQUEST_ID", f"{field_path} must be at most {max_length} printable characters",
            violations=[FieldViolation(field_path, f"at most {max_length} printable characters")],
        )
    for pattern, form in RESERVED_REQUEST_IDS.items():
        if pattern.fullmatch(value):
            raise InvalidArgument(
                "INVALID_REQUEST_ID", f"{field_path} {value!r} is reserved: the server publishes under request ids "
                                      f"of the form {form} for itself",
                violations=[FieldViolation(field_path, f"of the form {form}, reserved to the server's own "
                                                       "publications")],
            )


NOT_ASKED = ("request_id", "validate_only", "priority")  # how a create is handled, not what it asks for


def as_sent(request: Message) -> dict[str, Any]:
    """A create request as the client sent it, before the server's defaults, for the digest its job records
    (engine.jobs.codec.request_digest): a retry with its request_id returns the job if it sends the same. The
    request_id itself, validate_only and priority are not part of it: a retry with another priority (or a
    validate_only one) asks for the same job, and is answered with it as it is."""
    fields = json_format.MessageToDict(request, preserving_proto_field_name=True)
    for name in NOT_ASKED:
        fields.pop(name, None)
    return fields


MAX_SEQUENCE = 2**63 - 1  # the largest event sequence a job can have (the store's bigint)


def after_sequence_from_pb(value: int) -> int:
    """A Watch* request's ``after_sequence`` (a uint64): values past the largest sequence any job can reach are
    clamped to it, so they watch for nothing after the snapshot, as any value past the job's last event does."""
    return min(value, MAX_SEQUENCE)


def check_finite(msg: Message, field_path: str, issues: ViolationCollector) -> None:
    """Add a violation, named by its exact path (``spec.lora.alpha``), for every float or double of ``msg``, its
    sub-messages, repeated fields and maps included, that is infinite or NaN: no setting takes one, and a stored
    job could not hold it."""
    for field, value in msg.ListFields():
        path = f"{field_path}.{field.name}"
        if field.type in _FLOAT_TYPES:
            values = value if _is_repeated(field) else [value]
            for i, v in enumerate(values):
                if not math.isfinite(v):
                    issues.add(f"{path}[{i}]" if _is_repeated(field) else path, "must be a finite number")
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                for key, item in value.items():
                    if value_field.type in _FLOAT_TYPES and not math.isfinite(item):
                        issues.add(f"{path}[{key}]", "must be a finite number")
                    elif value_field.type == FieldDescriptor.TYPE_MESSAGE:
                        check_finite(item, f"{path}[{key}]", issues)
            elif _is_repeated(field):
                for i, item in enumerate(value):
                    check_finite(item, f"{path}[{i}]", issues)
            else:
                check_finite(value, path, issues)


_FLOAT_TYPES = frozenset({FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE})


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)
