"""The HTTP doors, the OpenAI-compatible gateway and Prometheus ``/metrics``, under the gRPC door's rules.

- The same bearer tokens and roles (``server/access.py``): with ``auth_tokens`` set, a request needs
  ``Authorization: Bearer <token>`` (401 otherwise) whose role grants what its path needs (403
  otherwise): the gateway's routes need ``inference``, ``/metrics`` needs ``reader`` (operator may do
  everything, as on gRPC). ``/health`` stays open, as gRPC health does.
- The same TLS: ``tls_cert_file``/``tls_key_file`` serve HTTPS with the gRPC port's certificate, and
  ``tls_client_ca_file`` requires client certificates (mTLS).
- The same bind rule: both listen on ``host``, which the settings refuse to be a non-loopback
  address unless ``auth_tokens`` are configured. (The embedded reference backend behind the gateway listens on
  loopback whatever ``host`` is: the gateway is its only caller; server/lora_wiring.py.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Middleware

from server.access import Tokens
from server.roles import Role

# What each route needs, by the route's pattern (aiohttp's ``canonical``: ``/v1/models/{model}`` for every model's
# path). A route served but not named here is refused to everyone but the operator (bearer_auth).
GATEWAY_ROLES: dict[str, Role] = {
    "/v1/chat/completions": Role.INFERENCE,
    "/v1/completions": Role.INFERENCE,
    "/v1/models": Role.INFERENCE,
    "/v1/models/{model}": Role.INFERENCE,
}
METRICS_ROLES: dict[str, Role] = {"/metrics": Role.READER}
OPEN_PATHS = frozenset({"/health"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _refusal(status: int, message: str, kind: str) -> web.Response:
    response = web.json_response(
        {"error": {"code": str(status), "message": message, "param": "", "type": kind}}, status=status
    )
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="learning-engine"'
    return response


def bearer_auth(tokens: Tokens, roles: Mapping[str, Role]) -> Middleware:
    """aiohttp middleware applying ``tokens`` to every path but ``OPEN_PATHS``; ``roles`` says what each route needs,
    by its pattern.

    A path no route serves still needs a valid token (then it is the router's 404 or 405), so an unauthenticated
    caller learns nothing about which paths exist. A route served but missing from ``roles`` needs the operator: a
    route added without its role is closed, not open to every token.
    """

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not tokens.enabled or request.path in OPEN_PATHS:
            return await handler(request)
        principal = tokens.authenticate(request.headers.get("Authorization", ""))
        if principal is None:
            return _refusal(401, "a valid bearer token is required (header 'Authorization: Bearer <token>')",
                            "authentication_error")
        resource = request.match_info.route.resource
        if resource is None:  # no route serves the path: the router's 404 or 405
            return await handler(request)
        needed = roles.get(resource.canonical, Role.OPERATOR)
        if not principal.may(needed):
            return _refusal(403, f"this call needs the {needed.value} role", "permission_error")
        return await handler(request)

    return check
