"""OpenAI-compatible routing gateway: the alias clients call, switched atomically between adapters.

MAX Serve has no alias: a request picks an adapter with ``"model": "<lora_name>"``. Clients
send ``"model": "<alias>"`` here instead; the gateway rewrites it to the active lora_name
(or the base model while LoRA is disabled), forwards to the serving engine, and counts
in-flight requests per upstream model so a replaced adapter can be drained before unload.
Other names can be routed too (``set_route``: an online session's ``<base>@<session>`` and the live alias an
operator opts it into); any other ``model`` passes through unchanged (and is counted too).

During a traffic split (a canary, or a manual A/B test) the alias sends a share of its requests to a
candidate version (engine/serving/traffic.py: sticky per user with the ``x-user-id`` header or the
body's ``user``, dealt in turn otherwise), and each side's requests, errors and latency are counted.
A candidate request the serving engine fails (no answer, HTTP 5xx, or a 404 because it no longer
knows the candidate) is retried once on the active version; no answer or a 404 means the engine lost
the candidate, and the split sends nothing more to it (``AliasRouter.on_candidate_lost`` hears of it).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry.trace import SpanKind

from engine import telemetry
from engine.serving.traffic import USER_HEADER, Role, Route, TrafficSplit

log = logging.getLogger(__name__)

SERVED_MODEL_HEADER = "x-served-model"
MODEL_FIELDS = ("id", "object", "created", "owned_by")  # what /v1/models shows of an engine's entry
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}


@dataclass(frozen=True)
class Pick:
    """Where one request goes: the upstream name, its adapter version, and its side of the alias (None: the
    request named that model itself), with the split that chose it (None: no split was on)."""

    upstream: str
    version: str = ""
    role: Role | None = None
    split: TrafficSplit | None = None


class AliasRouter:
    """Where the alias points (and, during a traffic split, its share to a candidate), and how many requests
    each upstream model has in flight."""

    def __init__(self, alias: str, base_model_name: str = "") -> None:
        self.alias = alias
        self.base_model_name = base_model_name
        self._target = Route("")  # lora_name and version; an empty name means the base model
        self._split: TrafficSplit | None = None
        self._routes: dict[str, Route] = {}  # other names the gateway resolves (never the alias)
        self._inflight: Counter[str] = Counter()
        self._changed = asyncio.Condition()
        # Called (once per split, from the request that found out) when the serving engine lost the candidate.
        self.on_candidate_lost: Callable[[TrafficSplit], None] | None = None

    @property
    def target(self) -> str:
        return self._target.upstream or self.base_model_name

    def set_target(self, lora_name: str, version: str = "") -> None:
        """Point the alias at ``lora_name`` (of ``version``); empty points it at the base model. Takes effect at
        once."""
        self._target = Route(lora_name, version)

    def set_route(self, name: str, lora_name: str, version: str = "") -> None:
        """Resolve requests for ``name`` to ``lora_name`` from now on (the alias itself is routed by
        ``set_target``)."""
        assert name != self.alias
        self._routes[name] = Route(lora_name, version)

    def drop_route(self, name: str) -> None:
        self._routes.pop(name, None)

    @property
    def routes(self) -> dict[str, str]:
        """The names routed besides the alias, and the upstream model each resolves to."""
        return {name: route.upstream for name, route in self._routes.items()}

    @property
    def split(self) -> TrafficSplit | None:
        return self._split

    def set_split(self, split: TrafficSplit | None) -> None:
        """Send ``split.share`` of the alias's requests to its candidate from now on; None ends the split."""
        self._split = split
        telemetry.traffic_share(self._target.version, split.candidate.version if split else "",
                                split.share if split else 0.0)

    def acquire(self, model: str, user: str = "") -> Pick:
        """Resolve ``model`` (of ``user``, for a sticky split) and count it in flight; pair with ``release``."""
        routed = self._routes.get(model)
        if routed is not None:
            pick = Pick(routed.upstream, routed.version)
        elif model != self.alias:
            pick = Pick(model)
        else:
            split = self._split
            role = split.side(user) if split is not None else Role.ACTIVE
            route = split.candidate if split is not None and role is Role.CANDIDATE else self._active_route()
            pick = Pick(route.upstream, route.version, role, split)
        self._inflight[pick.upstream] += 1
        return pick

    async def release(self, pick: Pick, status: int, seconds: float) -> None:
        """The request ``pick`` ended with HTTP ``status`` (502 when the serving engine did not answer)."""
        error = status >= 500
        if pick.role is not None:
            if pick.split is not None:
                pick.split.count(pick.role, error=error, seconds=seconds)
            telemetry.traffic_request(pick.version, pick.role.value, error=error, seconds=seconds)
        telemetry.gateway_request(pick.upstream, status, seconds)
        await self._done(pick.upstream)

    async def fail_over(self, pick: Pick, status: int, seconds: float, why: str) -> Pick:
        """The candidate request ``pick`` failed at the serving engine (``status`` 0: no answer): counted as the
        candidate's error and fail-over, and the retry's pick (the active version) returned. No answer or a 404
        (the engine does not know the candidate) means the engine lost it: the split sends nothing more to it,
        and ``on_candidate_lost`` hears of it once."""
        split = pick.split
        assert split is not None and pick.role is Role.CANDIDATE
        split.count(Role.CANDIDATE, error=True, failover=True, seconds=seconds)
        telemetry.traffic_request(pick.version, Role.CANDIDATE.value, error=True, seconds=seconds, failover=True)
        telemetry.gateway_request(pick.upstream, status or 502, seconds)
        await self._done(pick.upstream)
        if status in (0, 404) and split.lose(why) and self.on_candidate_lost is not None:
            self.on_candidate_lost(split)
        route = self._active_route()
        self._inflight[route.upstream] += 1
        return Pick(route.upstream, route.version, Role.ACTIVE, split)

    def _active_route(self) -> Route:
        return Route(self.target, self._target.version)

    async def _done(self, upstream: str) -> None:
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
            async with asyncio.timeout(timeout):
                await quiet()
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
        """The alias and the other routed names, then what the serving engine lists (names only, never paths);
        None if it is unreachable."""
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
        named = [self.router.alias, *sorted(self.router.routes)]
        return [{"id": name, "object": "model", "owned_by": "learning-engine"} for name in named] + data

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
        user = request.headers.get(USER_HEADER, "") or (body["user"] if isinstance(body.get("user"), str) else "")
        pick = self.router.acquire(asked, user)
        began, status, answer = time.perf_counter(), 502, None
        with telemetry.tracer.start_as_current_span(
                f"gateway {request.path}", kind=SpanKind.SERVER,
                attributes={"model": asked, "upstream": pick.upstream, "stream": bool(body.get("stream"))}) as span:
            try:
                answer, why = await self._send(request.path, raw if pick.upstream == asked else body, pick.upstream)
                if pick.role is Role.CANDIDATE and (answer is None or answer.status >= 500 or answer.status == 404):
                    failed = 0 if answer is None else answer.status
                    if answer is not None:
                        answer.release()
                        why = f"the serving engine answered {pick.upstream} with HTTP {failed}"
                    pick = await self.router.fail_over(pick, failed, time.perf_counter() - began, why)
                    span.set_attribute("failover", pick.upstream)
                    answer, _ = await self._send(request.path, body, pick.upstream)
                if answer is None:
                    return _error(502, "serving engine unreachable", "bad_gateway")
                response, status = await self._relay(request, answer, pick.upstream)
                return response
            finally:
                if answer is not None:  # also when the client went away before it was relayed
                    answer.release()
                span.set_attribute("http.status_code", status)
                await self.router.release(pick, status, time.perf_counter() - began)

    async def _send(self, path: str, body: bytes | dict[str, Any],
                    upstream: str) -> tuple[aiohttp.ClientResponse | None, str]:
        """The serving engine's answer (status and headers read; the caller releases it) to ``body`` sent to
        ``upstream``, or None and why when it did not answer. A dict body goes with ``model`` set to ``upstream``."""
        assert self._session is not None
        data = body if isinstance(body, bytes) else json.dumps({**body, "model": upstream}).encode()
        try:
            answer = await self._session.post(self._upstream + path, data=data,
                                              headers={"content-type": "application/json"},
                                              timeout=aiohttp.ClientTimeout(total=self._timeout))
            return answer, ""
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            log.warning("upstream request failed", extra={"upstream": upstream, "error": str(exc)})
            return None, f"the serving engine did not answer {upstream}: {type(exc).__name__} {exc}".strip()

    async def _relay(self, request: web.Request, answer: aiohttp.ClientResponse,
                     upstream: str) -> tuple[web.StreamResponse, int]:
        """Stream the engine's answer to the client, naming ``upstream``; (the response, the status to count: 502
        when the engine's stream broke off)."""
        out = web.StreamResponse(status=answer.status)
        for key, value in answer.headers.items():
            if key.lower() not in _HOP_HEADERS:
                out.headers[key] = value
        out.headers[SERVED_MODEL_HEADER] = upstream
        await out.prepare(request)
        try:
            async for chunk in answer.content.iter_any():
                await out.write(chunk)
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:  # the status is sent: cut the stream short
            log.warning("upstream stream broke off", extra={"upstream": upstream, "error": str(exc)})
            return out, 502
        await out.write_eof()
        return out, answer.status
