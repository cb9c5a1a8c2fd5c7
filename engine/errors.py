"""Typed engine errors.

Every error the engine raises on purpose derives from :class:`EngineError` and
carries a machine-readable ``reason`` (UPPER_SNAKE_CASE, stable, documented) and,
for bad input, the offending fields. The server maps the class to a gRPC status
code in one table (``server/errors.py``); nothing matches on message strings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: ``field`` is a dotted path, e.g. ``spec.lora.rank``."""

    field: str
    description: str


class EngineError(Exception):
    """Base of all deliberate engine errors.

    ``code`` is the canonical status code name (google.rpc.Code) of the class:
    this is the one table from error to status, read by the server.
    """

    code: ClassVar[str] = "UNKNOWN"

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        violations: list[FieldViolation] | tuple[FieldViolation, ...] = (),
        metadata: dict[str, str] | None = None,
    ) -> None:
        if not reason or not reason.replace("_", "").isalnum() or reason.upper() != reason:
            raise ValueError(f"reason must be UPPER_SNAKE_CASE, got {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.violations: tuple[FieldViolation, ...] = tuple(violations)
        self.metadata: dict[str, str] = dict(metadata or {})

    def __str__(self) -> str:
        return self.message

    # Pickled whole (e.g. raised in a worker process), not as Exception(message).
    def __reduce__(self) -> tuple[Callable[..., EngineError], tuple[object, ...]]:
        return _rebuild, (type(self), self.reason, self.message, self.violations, self.metadata)


def _rebuild(
    cls: type[EngineError], reason: str, message: str, violations: tuple[FieldViolation, ...], metadata: dict[str, str]
) -> EngineError:
    return cls(reason, message, violations=violations, metadata=metadata)


class InvalidArgument(EngineError):
    """The request itself is wrong; retrying it unchanged will fail again."""

    code = "INVALID_ARGUMENT"


class NotFound(EngineError):
    """A named resource does not exist."""

    code = "NOT_FOUND"


class AlreadyExists(EngineError):
    """A resource with that identity exists and differs from the request."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(EngineError):
    """The system is not in a state where the request can run."""

    code = "FAILED_PRECONDITION"


class Aborted(EngineError):
    """A concurrency conflict; the caller may retry."""

    code = "ABORTED"


class DataLoss(EngineError):
    """Stored data is corrupt (e.g. a sha256 mismatch)."""

    code = "DATA_LOSS"


class Unavailable(EngineError):
    """A dependency (database, object store, serving engine) cannot be reached."""

    code = "UNAVAILABLE"


class ResourceExhausted(EngineError):
    """A quota or size limit was hit."""

    code = "RESOURCE_EXHAUSTED"


class Unimplemented(EngineError):
    """The operation exists in the contract but is not built yet."""

    code = "UNIMPLEMENTED"


class Cancelled(EngineError):
    """The operation was cancelled on request."""

    code = "CANCELLED"


@dataclass
class ViolationCollector:
    """Collects field violations and raises them together as one InvalidArgument."""

    violations: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.violations.append(FieldViolation(field_path, description))

    def check(self, condition: bool, field_path: str, description: str) -> None:
        if not condition:
            self.add(field_path, description)

    def raise_if_any(self, reason: str, summary: str) -> None:
        if self.violations:
            details = "; ".join(f"{v.field}: {v.description}" for v in self.violations[:5])
            more = f" (+{len(self.violations) - 5} more)" if len(self.violations) > 5 else ""
            raise InvalidArgument(reason, f"{summary}: {details}{more}", violations=self.violations)
