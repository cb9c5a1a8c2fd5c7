"""One table from typed engine errors to gRPC status codes, and the interceptor that applies it.

Every deliberate error leaves as a ``google.rpc.Status`` carrying exactly one
``ErrorInfo{reason, domain, metadata}`` and, for bad input, a ``BadRequest``
with field violations. Anything else becomes INTERNAL with a generic message
and a logged traceback.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from engine import errors as e
from server.handlers import rebuild_handler

log = logging.getLogger(__name__)

ERROR_DOMAIN = "learning-engine"

def code_for(error: e.EngineError) -> grpc.StatusCode:
    """The status code of an engine error: its class's canonical ``code``."""
    return grpc.StatusCode[error.code] if error.code in grpc.StatusCode.__members__ else grpc.StatusCode.UNKNOWN


def status_proto(
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str,
    metadata: dict[str, str] | None = None,
    violations: tuple[e.FieldViolation, ...] = (),
) -> status_pb2.Status:
    """A google.rpc.Status with one ErrorInfo and, if any violations, a BadRequest."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {}))
    details = [info]
    if violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in violations
                ]
            )
        )
        details.append(bad)
    return status_pb2.Status(code=code.value[0], message=message, details=details)


def engine_error_status(error: e.EngineError) -> status_pb2.Status:
    return status_proto(
        code_for(error),
        error.message,
        reason=error.reason,
        metadata=error.metadata,
        violations=error.violations,
    )


def failure_status(code_name: str, reason: str, message: str, metadata: dict[str, str]) -> status_pb2.Status:
    """The Status stored on a failed job, from its recorded code name."""
    code = grpc.StatusCode[code_name] if code_name in grpc.StatusCode.__members__ else grpc.StatusCode.INTERNAL
    return status_proto(code, message, reason=reason, metadata=metadata)


def internal_status() -> status_pb2.Status:
    return status_proto(grpc.StatusCode.INTERNAL, "internal error; see the server log", reason="INTERNAL")


def code_name(code_value: int) -> str:
    return code_pb2.Code.Name(code_value)


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    if isinstance(exc, e.EngineError):
        log.info("rpc error", extra={"method": method, "reason": exc.reason, "error": exc.message})
        status = engine_error_status(exc)
    elif isinstance(exc, NotImplementedError):  # generated base servicers: RPC not built yet
        status = status_proto(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet",
                              reason="NOT_IMPLEMENTED", metadata={"method": method})
    else:
        log.exception("unhandled error in %s", method, exc_info=exc)
        status = internal_status()
    await context.abort_with_status(rpc_status.to_status(status))


def _wrap_unary(behavior: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
    async def handler(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request_or_iterator, context)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception as exc:  # noqa: BLE001 - mapped, logged
            await _abort(context, exc, method)

    return handler


def _wrap_stream(behavior: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in behavior(request_or_iterator, context):
                yield item
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception as exc:  # noqa: BLE001 - mapped, logged
            await _abort(context, exc, method)

    return handler


def _wrap_streaming(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    # Response-streaming handlers are async generators, or coroutines that call context.write().
    if inspect.isasyncgenfunction(behavior):
        return _wrap_stream(behavior, method)
    return _wrap_unary(behavior, method)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps exceptions escaping servicers to statuses with ErrorInfo (see module docstring)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method

        def wrap(behavior: Callable[..., Any], streaming: bool) -> Callable[..., Any]:
            return _wrap_streaming(behavior, method) if streaming else _wrap_unary(behavior, method)

        return rebuild_handler(handler, wrap)
