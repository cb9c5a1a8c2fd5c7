"""OpenAI-compatible routing gateway: the alias clients call, switched atomically between adapters.

MAX Serve has no alias: a request picks an adapter with ``"model": "<lora_name>"``. Clients
send ``"model": "<alias>"`` here instead; the gateway rewrites it to the active lora_name
(or the base model while LoRA is disabled), forwards to the serving engine, and counts
in-flight requests per upstream model so a replaced adapter can be drained before unload.
Other names can be routed too (``set_route``: an online session's ``<base>@<session>`` and the live alias an
operator opts it into); any other ``model`` passes through unchanged (and is counted too). The per-model metrics
are labelled only with names the gateway knows (the upstream it resolved, the base model, or a model the serving
engine listed when the gateway last asked), any other name under ``other`` (``OTHER_MODEL``): a client cannot grow
the metric series without limit by making names up. That routing, the in-flight counts and the drain are
``AliasRouter``'s (with ``Pick``, ``OTHER_MODEL``, ``NO_ANSWER`` and ``SILENT``), in engine/serving/alias_router.py;
this module is the HTTP server, ``Gateway``, that asks it for each request.

During a traffic split (a canary, or a manual A/B test) the alias sends a share of its requests to a
candidate version (engine/serving/traffic.py: sticky per user with the ``x-user-id`` header or the
body's ``user``, dealt in turn otherwise), and each side's requests, errors and latency are counted.
A candidate request the serving engine fails (no answer, silence past the read timeout, HTTP 5xx, or a 404 because it
no longer knows the candidate) is retried once on the active version; no answer at all (the connection refused, timed
out or dropped) or a 404 means the engine lost the candidate, and the split sends nothing more to it
(``AliasRouter.on_candidate_lost`` hears of it). On a candidate's 404 the gateway asks the engine's model list: a
404 while the engine still lists the candidate is about the request (a route the engine does not serve, such as
``/v1/completions`` on an engine serving only chat), the client's answer as a 4xx is, neither the candidate's error
nor a lost candidate; a 404 for a candidate it no longer lists, or when it does not list, is a lost candidate. An
engine that took the request but stayed silent past the read timeout (a slow answer on a busy engine) has not lost
it: that is the candidate's error, for the canary policy to judge, as a 5xx is. The gateway's request metric
counts each client request once, under the model that gave the answer the client got; the candidate's
failed attempt is in the split's counts (its error and fail-over), not a request of its own there.
A client that goes away before its answer is relayed whole is counted with status 499 (client closed request, as
nginx does): the client's doing, no error of the serving engine, so not in a split's error tally. The gateway notices
at once, also while it waits for an answer not streamed (aiohttp's ``handler_cancellation``): it closes its request
to the engine, which stops generating, and the request leaves the in-flight count a drain waits on.

The timeout on the serving engine bounds its silence, never the whole answer: connecting, then each read (before
the first byte, and between chunks of a stream), so a stream that keeps producing tokens is relayed however long
it runs. When the engine stops answering or drops the connection after the status was sent, the gateway breaks
the client's connection too (the client sees an error, not a clean end that looks complete); that counts as 502.

Completions hold one of ``max_connections`` connections to the serving engine (256 by default) for as long as their
answer runs: the cap bounds the sockets (file descriptors) the gateway opens to the engine and the requests it keeps
in flight there. A completion finding them all taken waits for one at most the connect timeout, then is answered 503
(OpenAI's error shape, with ``Retry-After``), never left hanging; that 503 is the gateway's, no version's error. The
health probe and the model listing have a small pool of their own, so a gateway busy with long streams still answers
``/health`` and ``/v1/models``.

``/v1/models`` lists models by name only (the engine's entries may carry the adapter's or the
model's filesystem path as ``root``; those never leave); an engine that answers its own with an HTTP error or no
OpenAI list fails it with 502, as an unreachable one does. Every error the gateway answers itself (the router's 404
and 405, a body over ``MAX_BODY_BYTES`` too) has OpenAI's ``{"error": {...}}`` JSON shape. ``/health`` answers 200
only while the serving engine answers its own health check (probed then, with a 2 s timeout), else 503. Who may
call and over which transport is the caller's to say: ``middlewares`` (e.g. bearer-token checks)
wrap every route, and ``start`` takes an SSL context. A completion's server span continues the caller's W3C trace
(its ``traceparent`` header), and the requests to the serving engine carry it on, as gRPC calls do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry import propagate
from opentelemetry.trace import SpanKind

from engine import json_input, telemetry
from engine.serving.alias_router import NO_ANSWER, SILENT, AliasRouter
from engine.serving.traffic import USER_HEADER, Role

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVED_MODEL_HEADER = "x-served-model"
CLIENT_CLOSED = 499  # the status counted for a client that went away before its answer was relayed (nginx's)
LISTING_REFRESH_SECONDS = 30.0  # how often an unknown name the engine served may make the gateway re-read its list
MODEL_FIELDS = ("id", "object", "created", "owned_by")  # what /v1/models shows of an engine's entry
# The largest request body the gateway takes (aiohttp's default is 1 MiB). MAX Serve and vLLM (FastAPI) set no limit
# of their own, and a long context is megabytes of JSON (more with base64 images): the gateway must not refuse what
# the engine would take. The limit only stops a runaway body from filling the gateway's memory.
MAX_BODY_BYTES = 64 * 1024**2
# How many completions the gateway sends the serving engine at once (each holds a connection until its answer ends):
# bounds the gateway's sockets to the engine and the requests queued there; a request beyond it waits for a free one
# at most the connect timeout, then is answered 503.
MAX_CONNECTIONS = 256
CONTROL_CONNECTIONS = 8  # the health probe's and the model listing's own pool, apart from the completions'
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response(
        {"error": {"code": str(status), "message": message, "param": "", "type": kind}}, status=status
    )


@web.middleware
async def _error_shape(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals (no route 404, wrong method 405, body over the limit 413) in the OpenAI error shape
    every other error of the gateway has, so a client parses them alike; same status, and headers such as Allow."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's default text only repeats the reason; a text of its own (a body limit's size) says more.
        text = exc.text or ""
        message = f"{exc.reason} ({request.method} {request.path})" if text == f"{exc.status}: {exc.reason}" else text
        response = _error(exc.status, message, "invalid_request_error" if exc.status < 500 else "server_error")
        for key, value in exc.headers.items():
            if key.lower() not in ("content-type", "content-length"):
                response.headers[key] = value
        return response


class Gateway:
    """The HTTP server in front of the serving engine. ``start()`` binds, ``stop()`` releases.

    ``timeout_seconds`` is the longest the serving engine may stay silent on a completion (before the first byte of
    its answer, and between chunks), ``connect_timeout_seconds`` the longest connecting to it may take (and, apart,
    the longest a completion waits for one of the ``max_connections`` connections when all are in use); neither
    bounds a whole answer."""

    def __init__(self, router: AliasRouter, upstream_url: str, *, timeout_seconds: float = 300.0,
                 connect_timeout_seconds: float = 10.0, max_connections: int = MAX_CONNECTIONS,
                 middlewares: Sequence[Any] = ()) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        self.router = router
        self._upstream = upstream_url.rstrip("/")
        # ``connect`` (getting a connection, the pool's wait included) only backs up the slots below, which keep a
        # completion from ever waiting on the pool itself.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=2 * connect_timeout_seconds,
                                              sock_connect=connect_timeout_seconds, sock_read=timeout_seconds)
        self._max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)  # a completion holds one until its answer is relayed
        self._slot_wait = connect_timeout_seconds
        self._middlewares = tuple(middlewares)
        self._session: aiohttp.ClientSession | None = None  # completions
        self._control: aiohttp.ClientSession | None = None  # the health probe and the model listing
        self._runner: web.AppRunner | None = None
        self._refresh: asyncio.Task[Any] | None = None  # a re-read of the engine's model list under way
        self._refreshed_at = float("-inf")
        # The listing asked when a candidate answered 404: one at a time; (when it began, the names it listed, or
        # None if the engine did not list), shared by the 404s that came before it began.
        self._relisting = asyncio.Lock()
        self._relisted: tuple[float, frozenset[str] | None] = (float("-inf"), None)
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application(middlewares=(_error_shape, *self._middlewares), client_max_size=MAX_BODY_BYTES)
        app.add_routes([
            web.post("/v1/chat/completions", self._forward), web.post("/v1/completions", self._forward),
            web.get("/v1/models", self._models), web.get("/v1/models/{model:.+}", self._model),
            web.get("/health", self._health),
        ])
        return app

    async def start(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None) -> int:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self._max_connections))
        self._control = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONTROL_CONNECTIONS))
        # handler_cancellation: a handler whose client went away is cancelled (aiohttp leaves it running by default),
        # so a request waiting on the engine (an answer not streamed is silent until it is whole) ends at once: its
        # request to the engine is closed (the engine stops generating), and it leaves the in-flight count a drain
        # waits on, counted 499.
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=5.0, handler_cancellation=True)
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
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)
            self._refresh = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for session in (self._session, self._control):
            if session is not None:
                await session.close()
        self._session = self._control = None

    async def upstream_healthy(self) -> bool:
        """Whether the serving engine answers its health check now."""
        if self._control is None:
            return False
        try:
            async with self._control.get(self._upstream + "/health",
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
        None if the engine did not list."""
        data = await self._engine_models()
        if data is None:
            return None
        named = [self.router.alias, *sorted(self.router.routes)]
        return [{"id": name, "object": "model", "owned_by": "learning-engine"} for name in named] + data

    async def _engine_models(self) -> list[dict[str, Any]] | None:
        """What the serving engine lists now (names only, never paths), told to the router too; None if the engine
        did not list (unreachable, an HTTP error, or no OpenAI list), which leaves what the router knows it serves as
        it was: one failed answer is no news that the engine serves nothing."""
        assert self._control is not None
        try:
            async with self._control.get(self._upstream + "/v1/models",
                                         timeout=aiohttp.ClientTimeout(total=10)) as response:
                status = response.status
                doc = await response.json(content_type=None) if status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("upstream /v1/models failed", extra={"error": str(exc)})
            return None
        entries = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            log.warning("upstream /v1/models gave no model list", extra={"status": status})
            return None
        data = [{k: entry[k] for k in MODEL_FIELDS if k in entry} for entry in entries if isinstance(entry, dict)]
        self.router.engine_listed([entry["id"] for entry in data if isinstance(entry.get("id"), str)])
        return data

    async def _engine_lists(self, name: str) -> bool | None:
        """Whether the serving engine lists ``name`` in a listing begun after this call (None: it did not list).
        One listing at a time: the callers that came while one ran share the next, so a burst of 404s asks the
        engine at most twice, on the control pool the health probe shares."""
        asked = time.monotonic()
        async with self._relisting:
            if self._relisted[0] < asked:
                began = time.monotonic()
                data = await self._engine_models()
                names = None if data is None else frozenset(
                    entry["id"] for entry in data if isinstance(entry.get("id"), str))
                self._relisted = (began, names)
            listed = self._relisted[1]
        return None if listed is None else name in listed

    async def _models(self, request: web.Request) -> web.Response:
        data = await self._listed()
        if data is None:
            return _error(502, "serving engine unreachable", "bad_gateway")
        return web.json_response({"object": "list", "data": data})

    def _relist_soon(self) -> None:
        """Re-read the engine's model list in the background (at most every ``LISTING_REFRESH_SECONDS``), so a
        model it serves that the gateway did not know gets its own metric label from then on."""
        now = time.monotonic()
        if self._control is None or self._refresh is not None or now - self._refreshed_at < LISTING_REFRESH_SECONDS:
            return
        self._refreshed_at = now

        def done(task: asyncio.Task[Any]) -> None:
            self._refresh = None
            if not task.cancelled() and task.exception() is not None:
                log.warning("re-reading the serving engine's models failed", exc_info=task.exception())

        self._refresh = asyncio.create_task(self._listed())
        self._refresh.add_done_callback(done)

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
            body = json_input.loads(raw)
        except ValueError:
            return _error(400, "request body is not JSON", "invalid_request_error")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _error(400, "field 'model' is required", "invalid_request_error")
        asked = body["model"]
        user = request.headers.get(USER_HEADER, "") or (body["user"] if isinstance(body.get("user"), str) else "")
        pick = self.router.acquire(asked, user)
        began, status, answer, slot = time.perf_counter(), 502, None, False
        with telemetry.tracer.start_as_current_span(
                f"gateway {request.path}", context=propagate.extract(request.headers), kind=SpanKind.SERVER,
                attributes={"model": asked, "upstream": pick.upstream, "stream": bool(body.get("stream"))}) as span:
            try:
                slot = await self._take_slot()
                if not slot:
                    status = 503
                    busy = _error(503, f"the gateway has all its {self._max_connections} connections to the serving "
                                  "engine in use; retry later", "server_error")
                    busy.headers["Retry-After"] = "1"
                    return busy
                answer, failed, why = await self._send(request.path, raw if pick.upstream == asked else body,
                                                       pick.upstream)
                # A candidate's 404 is its failure only if the engine no longer knows the candidate: one the engine
                # still lists is about the request (e.g. a route the engine does not serve), the client's answer.
                # If the engine does not list, the 404 is taken to be the candidate's, as before.
                if pick.role is Role.CANDIDATE and (answer is None or answer.status >= 500 or (
                        answer.status == 404 and await self._engine_lists(pick.upstream) is not True)):
                    if answer is not None:
                        failed = answer.status
                        answer.release()
                        why = f"the serving engine answered {pick.upstream} with HTTP {failed}"
                    pick = await self.router.fail_over(pick, failed, time.perf_counter() - began, why)
                    span.set_attribute("failover", pick.upstream)
                    answer, _, _ = await self._send(request.path, body, pick.upstream)
                if answer is None:
                    return _error(502, "serving engine unreachable", "bad_gateway")
                response, status = await self._relay(request, answer, pick.upstream)
                return response
            except asyncio.CancelledError:  # handler_cancellation: the client went away (else the gateway stopping)
                if request.transport is None or request.transport.is_closing():
                    status = CLIENT_CLOSED
                raise
            finally:
                if answer is not None:  # also when the client went away before it was relayed
                    answer.release()
                if slot:
                    self._slots.release()
                span.set_attribute("http.status_code", status)
                await self.router.release(pick, status, time.perf_counter() - began, sent=slot)
                if pick.passed and status < 400 and not self.router.knows(pick.upstream):
                    self._relist_soon()  # the engine served a name the gateway does not know: may it list it?

    async def _take_slot(self) -> bool:
        """One of the ``max_connections`` completions' slots, waiting at most the connect timeout; False if none
        came free by then."""
        try:
            async with asyncio.timeout(self._slot_wait):
                await self._slots.acquire()
        except TimeoutError:
            log.warning("all connections to the serving engine are in use", extra={"limit": self._max_connections})
            return False
        return True

    async def _send(self, path: str, body: bytes | dict[str, Any],
                    upstream: str) -> tuple[aiohttp.ClientResponse | None, int, str]:
        """The serving engine's answer (status and headers read; the caller releases it) to ``body`` sent to
        ``upstream``; or None, how it failed and why when it did not answer: ``SILENT`` when it took the request but
        stayed silent past the read timeout, else ``NO_ANSWER`` (connecting failed or timed out, the connection
        dropped, or it answered with something that is not HTTP). A dict body goes with ``model`` set to
        ``upstream``. The request carries the current trace (W3C ``traceparent``), so the engine can continue the
        trace under the gateway's span."""
        assert self._session is not None
        data = body if isinstance(body, bytes) else json.dumps({**body, "model": upstream}).encode()
        headers = {"content-type": "application/json"}
        propagate.inject(headers)
        try:
            answer = await self._session.post(self._upstream + path, data=data, headers=headers, timeout=self._timeout)
            return answer, 0, ""
        except (aiohttp.ClientError, TimeoutError) as exc:  # also an answer that is not HTTP: no answer either
            log.warning("upstream request failed", extra={"upstream": upstream, "error": str(exc)})
            # A read timeout (aiohttp's SocketTimeoutError): connected and sent, then silence. A connect timeout
            # (ConnectionTimeoutError, a TimeoutError too) is no answer at all.
            if isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ConnectionTimeoutError):
                return None, SILENT, f"the serving engine was silent on {upstream} past the read timeout"
            return None, NO_ANSWER, f"the serving engine did not answer {upstream}: {type(exc).__name__} {exc}".strip()

    async def _relay(self, request: web.Request, answer: aiohttp.ClientResponse,
                     upstream: str) -> tuple[web.StreamResponse, int]:
        """Stream the engine's answer to the client, naming ``upstream``; (the response, the status to count: 502
        when the engine's stream broke off or went silent, 499 when the client went away)."""
        out = web.StreamResponse(status=answer.status)
        for key, value in answer.headers.items():
            if key.lower() not in _HOP_HEADERS:
                out.headers[key] = value
        out.headers[SERVED_MODEL_HEADER] = upstream
        chunks = answer.content.iter_any()
        try:
            await out.prepare(request)
            while True:
                try:  # reading from the serving engine: its failures are its errors
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except (aiohttp.ClientError, TimeoutError) as exc:
                    log.warning("upstream stream broke off", extra={"upstream": upstream, "error": repr(exc)})
                    # The status is sent: break the client's connection so it sees an error, not a clean end.
                    if request.transport is not None:
                        request.transport.close()
                    return out, 502
                await out.write(chunk)
            await out.write_eof()
        except (ConnectionError, aiohttp.ClientConnectionError) as exc:  # writing to the client: it went away
            log.info("client went away", extra={"upstream": upstream, "error": repr(exc)})
            return out, CLIENT_CLOSED
        return out, answer.status
