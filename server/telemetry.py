"""Server telemetry: OTLP trace export, the OpenTelemetry gRPC interceptor, RPC latency, /metrics.

The metrics themselves are defined once in ``engine/telemetry.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engine import telemetry
from server.access import netloc, server_ssl_context, tokens_from_settings
from server.handlers import rebuild_handler
from server.http_doors import METRICS_ROLES, bearer_auth
from server.settings import Settings

log = logging.getLogger(__name__)

# The server's deadline is the client's timeout from when the call's headers arrived, so it passes after the
# client's by the time they took: a client whose deadline passed cancels the call (RST_STREAM) while the server's
# time still remains. A call stopped within this much of its deadline is taken as past it.
DEADLINE_SLACK_SECONDS = 0.25


_configured_endpoint: str | None = None


def configure_tracing(settings: Settings) -> None:
    """Export spans over OTLP/gRPC when ``otlp_endpoint`` is set; otherwise spans stay no-ops.

    OpenTelemetry allows one global tracer provider per process, so the first
    configured endpoint wins (a later, different one is logged and ignored).
    """
    global _configured_endpoint
    if not settings.otlp_endpoint:
        return
    if _configured_endpoint is not None:
        if _configured_endpoint != settings.otlp_endpoint:
            log.warning("tracing already exports elsewhere", extra={"endpoint": _configured_endpoint})
        return
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    provider = TracerProvider(resource=Resource.create({"service.name": "learning-engine"}))
    # the settings keep the endpoint as their check parsed it, its scheme (http or https) in lowercase
    exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=settings.otlp_endpoint.startswith("http://"))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured_endpoint = settings.otlp_endpoint
    log.info("exporting traces over OTLP", extra={"endpoint": settings.otlp_endpoint})


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Observes every RPC's duration and final status code into the latency histogram."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method

        def timed(behavior: Callable[..., Any], streaming: bool) -> Callable[..., Any]:
            if streaming:

                async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                    code = "OK"
                    try:
                        result = behavior(request, context)
                        if hasattr(result, "__aiter__"):
                            async with contextlib.aclosing(result):
                                async for item in result:
                                    yield item
                        else:
                            await result
                    except (asyncio.CancelledError, GeneratorExit):
                        code = _code(context, _stopped(context))
                        raise
                    except BaseException:
                        code = _code(context, "UNKNOWN")
                        raise
                    finally:
                        telemetry.stream_finished(method, _code(context, code))

                return stream

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started, code = time.perf_counter(), "OK"
                try:
                    return await behavior(request, context)
                except (asyncio.CancelledError, GeneratorExit):
                    code = _code(context, _stopped(context))
                    raise
                except BaseException:
                    code = _code(context, "UNKNOWN")
                    raise
                finally:
                    if handler.request_streaming:  # an upload lasts as long as the client sends: not latency
                        telemetry.stream_finished(method, _code(context, code))
                    else:
                        telemetry.rpc_finished(method, _code(context, code), time.perf_counter() - started)

            return unary

        return rebuild_handler(handler, timed)


def _stopped(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The code of a call stopped from outside its handler (the client cancelled it, or its deadline passed), as
    gRPC reports it to the client: no status is set on such a call, and it is no server error (UNKNOWN)."""
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= DEADLINE_SLACK_SECONDS else "CANCELLED"


def _code(context: grpc.aio.ServicerContext[Any, Any], default: str) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), default)
    return default


def interceptors() -> list[grpc.aio.ServerInterceptor]:
    """Tracing outermost (its span covers everything), then latency."""
    # opentelemetry-instrumentation-grpc leaves aio_server_interceptor unannotated
    return [aio_server_interceptor(), RpcMetricsInterceptor()]  # type: ignore[no-untyped-call]


REFRESH_SECONDS = 5.0  # a scrape waits at most this long for the database


class MetricsServer:
    """The Prometheus text endpoint on its own port, a door like the others (``server/http_doors.py``): bearer
    tokens (role reader) and TLS from the settings, on ``host``."""

    def __init__(self, settings: Settings, refresh: Callable[[], Awaitable[None]] | None = None) -> None:
        self._settings = settings
        self._refresh = refresh  # brings what the database knows (the jobs by state) up to date before a scrape
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> int:
        settings = self._settings
        app = web.Application(middlewares=[bearer_auth(tokens_from_settings(settings), METRICS_ROLES)])
        app.add_routes([web.get("/metrics", self._metrics)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.host, settings.metrics_port,
                           ssl_context=server_ssl_context(settings))
        try:
            await site.start()
        except BaseException:
            await self.stop()
            raise
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("serving metrics", extra={"address": netloc(settings.host, self.port)})
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._refresh is not None:
            try:
                async with asyncio.timeout(REFRESH_SECONDS):
                    await self._refresh()
            except Exception:  # noqa: BLE001 - the rest of the page is served; those series stay as last read
                log.warning("could not read the jobs by state from the database for /metrics", exc_info=True)
        body = generate_latest(telemetry.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
