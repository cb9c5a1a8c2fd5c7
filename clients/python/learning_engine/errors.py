"""Typed exceptions for every failed call, chosen from the status's ErrorInfo.reason and code.

Reasons come from the catalogue ``learning.v1.ErrorReason`` (protos/learning/v1/error_reason.proto):
the wire reason "JOB_NOT_FOUND" is the value ERROR_REASON_JOB_NOT_FOUND. One table (``_BY_REASON``,
keyed by catalogue values, first, then ``_BY_CODE``) decides the class; nothing here or in callers
looks at message strings. Every exception keeps the gRPC ``code``, the wire ``reason`` and its
catalogue value ``error_reason``, ErrorInfo ``metadata`` and the BadRequest ``violations``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from learning.v1 import error_reason_pb2
from learning.v1.error_reason_pb2 import ErrorReason

ERROR_DOMAIN = "learning-engine"
_PREFIX = "ERROR_REASON_"
_BY_WIRE_NAME: dict[str, ErrorReason] = {
    name.removeprefix(_PREFIX): value
    for name, value in ErrorReason.items()
    if value != error_reason_pb2.ERROR_REASON_UNSPECIFIED
}


def reason_value(reason: str) -> ErrorReason:
    """The catalogue value of a wire reason ("JOB_NOT_FOUND"); ERROR_REASON_UNSPECIFIED if it has none."""
    return _BY_WIRE_NAME.get(reason, error_reason_pb2.ERROR_REASON_UNSPECIFIED)


def reason_name(value: ErrorReason) -> str:
    """The wire reason of a catalogue value: its name without ERROR_REASON_ ("" for UNSPECIFIED)."""
    if value == error_reason_pb2.ERROR_REASON_UNSPECIFIED:
        return ""
    return ErrorReason.Name(value).removeprefix(_PREFIX)


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class LearningEngineError(Exception):
    """Base of all client errors. ``exit_code`` is the numeric gRPC status code."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str | ErrorReason = "",
        metadata: dict[str, str] | None = None,
        violations: tuple[FieldViolation, ...] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason if isinstance(reason, str) else reason_name(reason)
        self.metadata = dict(metadata or {})
        self.violations = violations

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle and copy with every field (a worker process's error reaches its caller typed): BaseException's
        would rebuild from ``args``, the message alone."""
        rebuild = functools.partial(type(self), reason=self.reason, metadata=self.metadata, violations=self.violations)
        return rebuild, (self.code, self.message), self.__dict__

    @property
    def error_reason(self) -> ErrorReason:
        """The reason in the catalogue; ERROR_REASON_UNSPECIFIED for none, or one newer than this client."""
        return reason_value(self.reason)

    @property
    def exit_code(self) -> int:
        return int(self.code.value[0])

    def __str__(self) -> str:
        label = self.reason or self.code.name
        return f"{self.code.name} ({label}): {self.message}"


class InvalidArgument(LearningEngineError):
    """The request is wrong; fix it before retrying."""


class NotFound(LearningEngineError):
    pass


class AlreadyExists(LearningEngineError):
    pass


class RequestIdReused(AlreadyExists):
    """The request_id was used before for a different request."""


class FailedPrecondition(LearningEngineError):
    pass


class Aborted(LearningEngineError):
    pass


class PermissionDenied(LearningEngineError):
    """The token is valid but its role does not allow this call."""


class Unauthenticated(LearningEngineError):
    """No token, or a token the server does not know."""


class ResourceExhausted(LearningEngineError):
    """A size limit or quota was hit."""


class RateLimited(ResourceExhausted):
    """Too many calls from this principal; ``retry_after_seconds`` says when to try again."""

    @property
    def retry_after_seconds(self) -> float:
        try:
            return float(self.metadata.get("retry_after_seconds", "1"))
        except ValueError:
            return 1.0


class Unimplemented(LearningEngineError):
    """The server does not (yet) implement this RPC."""


class Unavailable(LearningEngineError):
    """The server or one of its dependencies cannot be reached; retrying may help."""


class DeadlineExceeded(LearningEngineError):
    pass


class Cancelled(LearningEngineError):
    pass


class DataLoss(LearningEngineError):
    pass


class Internal(LearningEngineError):
    pass


_BY_REASON: dict[ErrorReason, type[LearningEngineError]] = {
    error_reason_pb2.ERROR_REASON_RATE_LIMITED: RateLimited,
    error_reason_pb2.ERROR_REASON_REQUEST_ID_REUSED: RequestIdReused,
}

_BY_CODE: dict[grpc.StatusCode, type[LearningEngineError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.INTERNAL: Internal,
}


def error_class(code: grpc.StatusCode, reason: str | ErrorReason) -> type[LearningEngineError]:
    """The exception class for a status: a specific reason (wire name or catalogue value) wins, then the code."""
    value = reason_value(reason) if isinstance(reason, str) else reason
    return _BY_REASON.get(value) or _BY_CODE.get(code, LearningEngineError)


def from_rpc_error(err: grpc.aio.AioRpcError | grpc.RpcError | grpc.aio.BaseError) -> LearningEngineError:
    """Convert a failed call into its typed exception (reading ErrorInfo and BadRequest). A call gRPC failed to make
    or carry on (one of its own errors, grpc.aio.BaseError's, with no status) is Internal."""
    if isinstance(err, grpc.aio.BaseError):
        detail = " ".join(str(err).split())[:200]
        return Internal(grpc.StatusCode.INTERNAL,
                        f"gRPC failed the call on this side ({type(err).__name__}{': ' + detail if detail else ''})")
    code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
    message = (err.details() if callable(getattr(err, "details", None)) else "") or code.name
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except ValueError:  # trailers disagree with the status line: keep what the status line said
        status = None
    return _typed(code, message, status)


def from_job_error(status: status_pb2.Status) -> LearningEngineError:
    """The typed exception for a job's stored ``error`` (a google.rpc.Status with the same details as a call's)."""
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
    return _typed(code, status.message or code.name, status)


def _typed(code: grpc.StatusCode, message: str, status: status_pb2.Status | None) -> LearningEngineError:
    reason = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN or not reason:
                reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
    cls = error_class(code, reason)
    return cls(code, message, reason=reason, metadata=metadata, violations=tuple(violations))


def from_status(status_code: int, message: str, reason: str = "") -> LearningEngineError:
    """An exception for a status stored on a resource (e.g. a failed job's ``error``)."""
    code = next((c for c in grpc.StatusCode if c.value[0] == status_code), grpc.StatusCode.UNKNOWN)
    return error_class(code, reason)(code, message, reason=reason)
