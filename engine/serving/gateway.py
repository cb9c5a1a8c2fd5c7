"""OpenAI-compatible routing gateway: the alias clients call, switched atomically between adapters.

MAX Serve has no alias: a request picks an adapter with ``"model": "<lora_name>"``. Clients
send ``"model": "<alias>"`` here instead; the gateway rewrites it to the active lora_name
(or the base model while LoRA is disabled), forwards to the serving engine, and counts
in-flight requests per upstream model so a replaced adapter can be drained before unload.
Any other ``model`` passes through unchanged (and is counted too).

``/v1/models`` lists models by name only (the engine's entries may carry the adapter's or the
model's filesystem path as ``root``; those never leave). ``/health`` answers 200 only while the
serving engine answers its own health check (probed then, with a 2 s timeout), else 503. Who may
call and over which transport is the caller's to say: ``middlewares`` (e.g. bearer-token checks)
wrap every route, and ``start`` takes an SSL context.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry.trace import SpanKind

from engine import telemetry

log = logging.getLogger(__name__)

SERVED_MODEL_HEADER = "x-served-model"
MODEL_FIELDS = ("id", "object", "created", "owned_by")  # what /v1/models shows of an engine's entry
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}


class AliasRouter:
    """Where the alias points, and how many requests each upstream model has in flight."""

    def __init__(self, alias: str, base_model_name: str = "") -> None:
        self.alias = alias
        self.base_model_name = base_model_name
        self._target = ""  # lora_name; empty means the base model
        self._inflight: Counter[str] = Counter()
        self._changed = asyncio.Condition()

    @property
    def target(self) -> str:
        return self._target or self.base_model_name

    def set_target(self, lora_name: str) -> None:
        """Point the alias at ``lora_name``; empty points it at the base model. Takes effect at once."""
        self._target = lora_name

    def acquire(self, model: str) -> str:
        """Resolve ``model`` and count it in flight; pair with ``release``. No await in between."""
        upstream = self.target if model == self.alias else model
        self._inflight[upstream] += 1
        return upstream

    async def release(self, upstream: str) -> None:
        async with self._changed:
            self._inflight[upstream] -= 1
            if self._inflight[upstream] <= 0:
                del self._inflight[upstream]
            self._changed.notify_all()

    def inflight(self, upstream: str) -> int:
        return self._inflight.get(upstream, 0)

    async def drain(self, upstream: str, timeout: float) -> bool:
        """Wait until ``upstream`` has no request in flight; False if ``timeout`` passed first."""
        async def quiet() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.inflight(upstream) == 0)

        try:
            await asyncio.wait_for(quiet(), timeout)
            return True
        except TimeoutError:
            return False


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response(
        {"error": {"code": str(status), "message": message, "param": "", "type": kind}}, status=status
    )


class Gateway:
    """The HTTP server in front of the serving engine. ``start()`` binds, ``stop()`` releases."""

    def __init__(self, router: AliasRouter, upstream_url: str, *, timeout_seconds: float = 300.0,
                 middlewares: Sequence[Any] = ()) -> None:
        self.router = router
        self._upstream = upstream_url.rstrip("/")
        self._timeout = timeout_seconds
        self._middlewares = tuple(middlewares)
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application(middlewares=self._middlewares)
        app.add_routes([
            web.post("/v1/chat/completions", self._forward), web.post("/v1/completions", self._forward),
            web.get("/v1/models", self._models), web.get("/v1/models/{model:.+}", self._model),
            web.get("/health", self._health),
        ])
        return app

    async def start(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None) -> int:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        try:
            await site.start()
        except BaseException:
            await self.stop()
            raise
        self.port = self._runner.addresses[0][1]  # the bound (host, port, ...) of the one site
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def upstream_healthy(self) -> bool:
        """Whether the serving engine answers its health check now."""
        if self._session is None:
            return False
        try:
            async with self._session.get(self._upstream + "/health",
                                         timeout=aiohttp.ClientTimeout(total=2)) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _health(self, request: web.Request) -> web.Response:
        if await self.upstream_healthy():
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "serving engine unreachable"}, status=503)

    async def _listed(self) -> list[dict[str, Any]] | None:
        """The alias, then what the serving engine lists (names only, never paths); None if it is unreachable."""
        assert self._session is not None
        try:
            async with self._session.get(self._upstream + "/v1/models",
                                         timeout=aiohttp.ClientTimeout(total=10)) as response:
                doc = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("upstream /v1/models failed", extra={"error": str(exc)})
            return None
        entries = doc.get("data", []) if isinstance(doc, dict) else []
        data = [{k: entry[k] for k in MODEL_FIELDS if k in entry} for entry in entries if isinstance(entry, dict)]
        data.insert(0, {"id": self.router.alias, "object": "model", "owned_by": "learning-engine"})
        return data

    async def _models(self, request: web.Request) -> web.Response:
        data = await self._listed()
        if data is None:
            return _error(502, "serving engine unreachable", "bad_gateway")
        return web.json_response({"object": "list", "data": data})

    async def _model(self, request: web.Request) -> web.Response:
        data = await self._listed()
        if data is None:
            return _error(502, "serving engine unreachable", "bad_gateway")
        wanted = request.match_info["model"]
        found = next((entry for entry in data if entry.get("id") == wanted), None)
        if found is None:
            return _error(404, f"model {wanted!r} does not exist", "invalid_request_error")
        return web.json_response(found)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "request body is not JSON", "invalid_request_error")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _error(400, "field 'model' is required", "invalid_request_error")
        asked = body["model"]
        upstream = self.router.acquire(asked)
        began, status = time.perf_counter(), 502
        with telemetry.tracer.start_as_current_span(
                f"gateway {request.path}", kind=SpanKind.SERVER,
                attributes={"model": asked, "upstream": upstream, "stream": bool(body.get("stream"))}) as span:
            try:
                if upstream != asked:
                    body["model"] = upstream
                    raw = json.dumps(body).encode()
                response = await self._proxy(request, raw, upstream)
                status = response.status
                return response
            finally:
                span.set_attribute("http.status_code", status)
                await self.router.release(upstream)
                telemetry.gateway_request(upstream, status, time.perf_counter() - began)

    async def _proxy(self, request: web.Request, raw: bytes, upstream: str) -> web.StreamResponse:
        assert self._session is not None
        url = self._upstream + request.path
        try:
            async with self._session.post(url, data=raw, headers={"content-type": "application/json"},
                                          timeout=aiohttp.ClientTimeout(total=self._timeout)) as response:
                out = web.StreamResponse(status=response.status)
                for key, value in response.headers.items():
                    if key.lower() not in _HOP_HEADERS:
                        out.headers[key] = value
                out.headers[SERVED_MODEL_HEADER] = upstream
                await out.prepare(request)
                async for chunk in response.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                return out
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            log.warning("upstream request failed", extra={"upstream": upstream, "error": str(exc)})
            return _error(502, "serving engine unreachable", "bad_gateway")
