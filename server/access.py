"""Access control before any handler runs: bearer tokens, roles per RPC, per-principal rate limits.

Which role each RPC needs is the one table ``METHOD_ROLES`` (server/roles.py),
checked against the proto descriptors when the interceptor is made, so an RPC
added to a proto without a role stops the server from starting. Health and
reflection stay open.

Tokens are configured as sha256 hashes (tokens are long random secrets, so a
fast hash is enough and keeps the per-call check cheap); plaintext never
appears in settings. A missing or unknown token is UNAUTHENTICATED, a weak role
PERMISSION_DENIED; both are decided from the method name alone, before the
handler runs, so neither reveals whether a named resource exists.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import logging
import math
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_status import rpc_status

from engine.errors import ResourceExhausted
from server.errors import status_proto
from server.handlers import rebuild_handler
from server.roles import GRANTS, OPEN_SERVICES, Role, check_method_roles, role_for

log = logging.getLogger(__name__)


def _events(request: Any) -> int:
    return max(1, len(getattr(request, "events", ())))


def _examples(request: Any) -> int:
    return max(1, len(getattr(request, "examples", ())))


# Calls that spend a principal's rate-limit budget: the bucket, and what one request (or one message of a
# client stream, charged as it arrives) costs. A job creation costs one; feedback costs its events, so a
# batch of 10,000 events spends what 10,000 single-event calls do. An online session's examples are what an
# application feeds from its users as its feedback is (the same feedback role may send both): they spend the
# same budget, one per example, so one token cannot push examples without bound beside its feedback.
RATE_LIMITED: dict[str, tuple[str, Callable[[Any], int]]] = {
    "/learning.v1.TrainingService/CreateTrainingJob": ("jobs", lambda _: 1),
    "/learning.v1.FisherService/CreateFisherJob": ("jobs", lambda _: 1),
    "/learning.v1.FeedbackService/SubmitFeedback": ("feedback", _events),
    "/learning.v1.FeedbackService/StreamFeedback": ("feedback", _events),
    "/learning.v1.OnlineLearningService/AddExamples": ("feedback", _examples),
    "/learning.v1.OnlineLearningService/StreamExamples": ("feedback", _examples),
}


def hash_token(token: str) -> str:
    """The value to put in settings for a token: its sha256 hex digest."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role | None  # None: auth is off, everything is allowed (server bound to loopback)

    def may(self, needed: Role) -> bool:
        return self.role is None or needed in GRANTS[self.role]


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def current_principal() -> Principal | None:
    """The caller of the RPC being handled (for audit fields such as LoraOperation.actor)."""
    return _current.get()


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; ``take`` returns 0 or the seconds to wait."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._stamp = burst, clock()

    def take(self, cost: float = 1.0) -> float:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= cost:
            self._tokens -= cost
            return 0.0
        return (cost - self._tokens) / self.rate if self.rate > 0 else math.inf


@dataclass(frozen=True)
class RateLimit:
    per_second: float
    burst: float


class RateLimiter:
    """One bucket per (principal, bucket name)."""

    def __init__(self, limits: dict[str, RateLimit], clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def check(self, principal: str, bucket: str, cost: float = 1.0) -> float:
        limit = self._limits.get(bucket)
        if limit is None:
            return 0.0
        key = (principal, bucket)
        if key not in self._buckets:
            if len(self._buckets) > 100_000:  # bound memory against many distinct principals
                self._buckets.clear()
            self._buckets[key] = TokenBucket(limit.per_second, limit.burst, self._clock)
        return self._buckets[key].take(min(cost, limit.burst))  # a request larger than the burst waits for all of it


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: Role
    sha256: str


class Tokens:
    """The configured bearer tokens: who an ``Authorization`` value belongs to. Shared by every door."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self._entries = tuple(entries)

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def authenticate(self, header: str) -> Principal | None:
        """The principal of ``Bearer <token>``, or None for anything else."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = hash_token(token.strip())
        found = None
        for entry in self._entries:  # compare every entry in constant time
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return Principal(found.name, found.role) if found else None


def tokens_from_settings(settings: Any) -> Tokens:
    return Tokens(TokenEntry(t.name, Role(t.role), t.sha256) for t in settings.auth_tokens)


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates, authorizes and rate-limits each call before its handler runs."""

    def __init__(self, tokens: Iterable[TokenEntry] | Tokens, limiter: RateLimiter) -> None:
        self._tokens = tokens if isinstance(tokens, Tokens) else Tokens(tokens)
        self._limiter = limiter
        check_method_roles()

    @property
    def enabled(self) -> bool:
        return self._tokens.enabled

    def _authenticate(self, metadata: Iterable[tuple[str, Any]]) -> Principal | None:
        return self._tokens.authenticate(next((str(v) for k, v in metadata if k == "authorization"), ""))

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = details.method
        handler = await continuation(details)
        if handler is None or method.lstrip("/").partition("/")[0] in OPEN_SERVICES:
            return handler
        metadata = tuple(details.invocation_metadata or ())
        if self.enabled:
            principal = self._authenticate(metadata)
            if principal is None:
                return _rejecting(
                    handler,
                    grpc.StatusCode.UNAUTHENTICATED,
                    "UNAUTHENTICATED",
                    "a valid bearer token is required (metadata 'authorization: Bearer <token>')",
                )
            needed = role_for(method)
            if needed is None or not principal.may(needed):
                required = needed.value if needed else "none"
                return _rejecting(
                    handler,
                    grpc.StatusCode.PERMISSION_DENIED,
                    "ROLE_REQUIRED",
                    f"this call needs the {required} role",
                    {"required_role": required},
                )
        else:
            principal = Principal("anonymous", None)
        return _with_principal(handler, principal, self._limiter, RATE_LIMITED.get(method))


def _with_principal(
    handler: grpc.RpcMethodHandler[Any, Any], principal: Principal, limiter: RateLimiter,
    limited: tuple[str, Callable[[Any], int]] | None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """The handler run as ``principal``, charging its rate-limit bucket per request or stream message.

    Without auth there is one principal, "anonymous": nothing tells callers apart (a connection's port is
    new each time) and only this machine may call, so all of them share one budget; configure auth_tokens
    to give each caller its own. The principal is set in the RPC's own task (and never reset: a task's
    context ends with it), so closing a cancelled server stream elsewhere has nothing to undo.
    """

    def charge(request: Any) -> None:
        if limited is None:
            return
        bucket, cost = limited
        wait = limiter.check(principal.name, bucket, cost(request))
        if wait > 0:
            raise ResourceExhausted(
                "RATE_LIMITED", f"too many {bucket} requests; retry in {wait:.1f}s",
                metadata={"retry_after_seconds": f"{wait:.3f}", "bucket": bucket},
            )

    async def charged(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            charge(request)
            yield request

    def admit(request: Any) -> Any:
        if hasattr(request, "__aiter__"):  # a client stream: each message pays as it arrives
            return charged(request)
        charge(request)
        return request

    def wrap(behavior: Callable[..., Any], streaming: bool) -> Callable[..., Any]:
        if streaming:

            async def stream_handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                _current.set(principal)
                try:
                    result = behavior(admit(request), context)
                except ResourceExhausted as exc:
                    await _abort_engine(context, exc)
                    return
                if hasattr(result, "__aiter__"):
                    async with contextlib.aclosing(result):
                        async for item in result:
                            yield item
                else:
                    await result

            return stream_handler

        async def unary_handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            _current.set(principal)
            try:
                admitted = admit(request)
            except ResourceExhausted as exc:
                await _abort_engine(context, exc)
                return None
            return await behavior(admitted, context)

        return unary_handler

    return rebuild_handler(handler, wrap)


async def _abort_engine(context: grpc.aio.ServicerContext[Any, Any], exc: ResourceExhausted) -> None:
    await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", exc.message, exc.metadata)


def _rejecting(
    handler: grpc.RpcMethodHandler[Any, Any],
    code: grpc.StatusCode,
    reason: str,
    message: str,
    metadata: dict[str, str] | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    def wrap(_behavior: Callable[..., Any], streaming: bool) -> Callable[..., Any]:
        async def reject(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await _abort(context, code, reason, message, metadata)

        return reject

    return rebuild_handler(handler, wrap)


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    reason: str,
    message: str,
    metadata: dict[str, str] | None = None,
) -> None:
    await context.abort_with_status(
        rpc_status.to_status(status_proto(code, message, reason=reason, metadata=metadata))
    )


def from_settings(settings: Any) -> AccessInterceptor:
    """The interceptor configured by ``auth_tokens`` and the ``rate_limit_*`` settings."""
    limits = {}
    if settings.rate_limit_jobs_per_minute > 0:
        limits["jobs"] = RateLimit(settings.rate_limit_jobs_per_minute / 60.0, settings.rate_limit_jobs_burst)
    if settings.rate_limit_feedback_per_second > 0:
        limits["feedback"] = RateLimit(
            settings.rate_limit_feedback_per_second, settings.rate_limit_feedback_burst
        )
    return AccessInterceptor(tokens_from_settings(settings), RateLimiter(limits))


def server_ssl_context(settings: Any) -> ssl.SSLContext | None:
    """The TLS settings (tls_cert_file, tls_key_file, tls_client_ca_file for mTLS) for an HTTP door; None
    without TLS. The same files, and so the same certificate and client CA, as the gRPC port's."""
    if settings.tls_cert_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_client_ca_file is not None:
        context.load_verify_locations(cafile=settings.tls_client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def netloc(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets (``[::1]:50051``), as gRPC targets and URLs write them."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(server: grpc.aio.Server, settings: Any) -> int:
    """Listen on host:port with TLS (and mTLS) when configured, plaintext otherwise; return the port."""
    address = netloc(settings.host, settings.port)
    if settings.tls_cert_file is None:
        return server.add_insecure_port(address)
    ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    credentials = grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )
    return server.add_secure_port(address, credentials)


def describe(settings: Any) -> str:
    """One line for the start log: how callers are authenticated."""
    transport = "mTLS" if settings.tls_client_ca_file else "TLS" if settings.tls_cert_file else "plaintext"
    if settings.auth_tokens:
        return f"bearer-token auth ({len(settings.auth_tokens)} tokens), {transport}"
    return (
        f"auth disabled: no auth_tokens configured, so only loopback ({settings.host}) is served, {transport}"
    )
