"""The alias's router: where the alias (and each other routed name) points, a traffic split's share to a candidate,
the candidate's fail-over, and how many requests each upstream model has in flight, so a replaced adapter can be drained
before unload. The HTTP server that asks it for each request is ``Gateway`` (engine/serving/gateway.py).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from engine import telemetry
from engine.serving.traffic import Role, Route, TrafficSplit

OTHER_MODEL = "other"  # the metric label of every model name the gateway does not know
NO_ANSWER = 0  # the failed status of a request the serving engine did not answer at all (no connection, or dropped)
SILENT = 504  # ... of one it took but stayed silent on past the read timeout (as a proxy's Gateway Timeout)


@dataclass(frozen=True)
class Pick:
    """Where one request goes: the upstream name, its adapter version, and its side of the alias (None: the
    request named that model itself), with the split that chose it (None: no split was on). ``passed`` is True
    when the gateway did not resolve the name (the client's own string, passed through)."""

    upstream: str
    version: str = ""
    role: Role | None = None
    split: TrafficSplit | None = None
    passed: bool = False


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
        self._listed: frozenset[str] = frozenset()  # the model names the serving engine listed when last asked
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
            pick = Pick(model, passed=True)
        else:
            split = self._split
            role = split.side(user) if split is not None else Role.ACTIVE
            route = split.candidate if split is not None and role is Role.CANDIDATE else self._active_route()
            pick = Pick(route.upstream, route.version, role, split)
        self._inflight[pick.upstream] += 1
        return pick

    def engine_listed(self, names: Sequence[str]) -> None:
        """The model names the serving engine lists now (replacing what it listed before)."""
        self._listed = frozenset(names)

    def knows(self, model: str) -> bool:
        """Whether ``model`` is a name the gateway knows: the base model, a version the alias or a routed name
        resolves to, or a model the serving engine listed when last asked."""
        split = self._split
        return (model in self._listed or model in (self.base_model_name, self.target)
                or (split is not None and model == split.candidate.upstream)
                or any(model == route.upstream for route in self._routes.values()))

    def label(self, pick: Pick) -> str:
        """The metric label of ``pick``: its upstream if the gateway resolved it or knows the name, else
        ``OTHER_MODEL`` (a client's made-up names must not each make a series)."""
        return pick.upstream if not pick.passed or self.knows(pick.upstream) else OTHER_MODEL

    async def release(self, pick: Pick, status: int, seconds: float, *, sent: bool = True) -> None:
        """The request ``pick`` ended with HTTP ``status`` (502 when the serving engine did not answer or broke
        off; 499 when the client went away, which is no error). ``sent`` False: the gateway answered it without
        sending it to the serving engine (all its connections were busy), so it is no version's request."""
        error = status >= 500
        if pick.role is not None and sent:
            if pick.split is not None:
                pick.split.count(pick.role, error=error, seconds=seconds)
            telemetry.traffic_request(pick.version, pick.role.value, error=error, seconds=seconds)
        telemetry.gateway_request(self.label(pick), status, seconds)
        await self._done(pick.upstream)

    async def fail_over(self, pick: Pick, status: int, seconds: float, why: str) -> Pick:
        """The candidate request ``pick`` failed at the serving engine (``status``: its HTTP status, ``NO_ANSWER``
        when it did not answer at all, ``SILENT`` when it stayed silent past the read timeout): counted as the
        candidate's error and fail-over, and the retry's pick (the active version) returned. The gateway's request
        metric counts the client's request once, as the retry ends (``release``), not this attempt. No answer or a 404
        (the engine does not know the candidate: the gateway fails over a 404 only when the engine does not list the
        candidate, or does not list at all) means the engine lost it: the split sends nothing more to it,
        and ``on_candidate_lost`` hears of it once. Silence, like a 5xx, is only the candidate's error: an engine
        slow to answer still has the candidate, and the canary policy judges its error rate."""
        split = pick.split
        assert split is not None and pick.role is Role.CANDIDATE
        split.count(Role.CANDIDATE, error=True, failover=True, seconds=seconds)
        telemetry.traffic_request(pick.version, Role.CANDIDATE.value, error=True, seconds=seconds, failover=True)
        await self._done(pick.upstream)
        if status in (NO_ANSWER, 404) and split.lose(why) and self.on_candidate_lost is not None:
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

    async def drain(self, upstream: str, timeout: float | None) -> bool:
        """Wait until ``upstream`` has no request in flight; False if ``timeout`` passed first (None: no deadline,
        as a retirement waits: a request still running keeps its adapter loaded until it ends)."""
        async def quiet() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.inflight(upstream) == 0)

        try:
            async with asyncio.timeout(timeout):
                await quiet()
            return True
        except TimeoutError:
            return False
