"""One table from typed engine errors to gRPC status codes, and the interceptor that applies it.

Every deliberate error leaves as a ``google.rpc.Status`` carrying exactly one
``ErrorInfo{reason, domain, metadata}`` and, for bad input, a ``BadRequest``
with field violations. Anything else becomes INTERNAL with a generic message
and a logged traceback.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from engine import errors as e
from server import requests
from server.handlers import rebuild_handler

log = logging.getLogger(__name__)

ERROR_DOMAIN = "learning-engine"

def code_for(error: e.EngineError) -> grpc.StatusCode:
    """The status code of an engine error: its class's canonical ``code``."""
    return grpc.StatusCode[error.code] if error.code in grpc.StatusCode.__members__ else grpc.StatusCode.UNKNOWN


# An error echoes parts of the request (names, paths, field values), which can be as long as a message may be.
# Its status travels in trailers (grpc-message percent-encoded, up to 3 bytes a byte; grpc-status-details-bin
# base64-encoded), and a client refuses trailers past its metadata limit (16 KiB by default) as INTERNAL. So
# what is echoed is clipped here, the one place every status is built: at most 512 bytes of message, and a
# whole Status of at most 6 KiB (about 11 KiB on the wire), trailing field violations dropped to fit.
MAX_MESSAGE_BYTES = 512
MAX_FIELD_BYTES = 128
MAX_DESCRIPTION_BYTES = 256
MAX_METADATA_BYTES = 256
MAX_STATUS_BYTES = 6 * 1024


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, saying how much was cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    kept = data[: max(limit - 32, 0)].decode(errors="ignore")
    return f"{kept}... ({len(text) - len(kept)} more characters)"


def status_proto(
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str,
    metadata: dict[str, str] | None = None,
    violations: tuple[e.FieldViolation, ...] = (),
) -> status_pb2.Status:
    """A google.rpc.Status with one ErrorInfo and, if any violations, a BadRequest; bounded in size (see above)."""
    meta = {clip(k, 64): clip(v, MAX_METADATA_BYTES) for k, v in (metadata or {}).items()}
    shown = [
        error_details_pb2.BadRequest.FieldViolation(
            field=clip(v.field, MAX_FIELD_BYTES), description=clip(v.description, MAX_DESCRIPTION_BYTES))
        for v in violations
    ]
    while True:
        status = _status(code, clip(message, MAX_MESSAGE_BYTES), reason, meta, shown)
        if status.ByteSize() <= MAX_STATUS_BYTES or not (shown or meta):
            return status
        if shown:
            shown = shown[: len(shown) // 2]
            meta["violations_omitted"] = str(len(violations) - len(shown))
        else:
            meta = {}


def _status(code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str],
            violations: list[error_details_pb2.BadRequest.FieldViolation]) -> status_pb2.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata))
    details = [info]
    if violations:
        bad = any_pb2.Any()
        bad.Pack(error_details_pb2.BadRequest(field_violations=violations))
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



async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, method: str) -> None:
    if isinstance(exc, e.EngineError):
        log.info("rpc error", extra={"method": method, "reason": exc.reason, "error": clip(exc.message, 2048)})
        status = engine_error_status(exc)
    elif isinstance(exc, NotImplementedError):  # generated base servicers: RPC not built yet
        status = status_proto(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet",
                              reason="NOT_IMPLEMENTED", metadata={"method": method})
    else:
        log.exception("unhandled error in %s", method, exc_info=exc)
        status = internal_status()
    await context.abort_with_status(rpc_status.to_status(status))


def _checked(request_or_iterator: Any) -> Any:
    """The request (raising the error of a refused one), or a client stream that raises at a refused message."""
    if hasattr(request_or_iterator, "__aiter__"):
        return requests.checked_stream(request_or_iterator)
    return requests.check(request_or_iterator)


def _wrap_unary(behavior: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
    async def handler(request_or_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behavior(_checked(request_or_iterator), context)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception as exc:  # noqa: BLE001 - mapped, logged
            await _abort(context, exc, method)

    return handler


def _wrap_stream(behavior: Callable[..., AsyncGenerator[Any, None]], method: str) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request_or_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            async with contextlib.aclosing(behavior(_checked(request_or_iterator), context)) as items:
                async for item in items:  # closed here, in this task, even when the call is cancelled
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
    """Maps exceptions escaping servicers to statuses with ErrorInfo (see module docstring), and decodes
    every request through ``server.requests`` so that bad bytes become INVALID_ARGUMENT too."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method

        def wrap(behavior: Callable[..., Any], streaming: bool) -> Callable[..., Any]:
            return _wrap_streaming(behavior, method) if streaming else _wrap_unary(behavior, method)

        return rebuild_handler(
            handler, wrap, request_deserializer=requests.checked_deserializer(handler.request_deserializer)
        )
