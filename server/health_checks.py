"""Health that tells the truth: each service is SERVING only while what it needs answers.

A background task probes every dependency each ``health_check_interval_seconds`` (each probe
bounded by ``health_check_timeout_seconds``) and sets the grpc.health.v1 status of each service
from the probes of the dependencies it needs (``NEEDS``). The empty service name, the server as
a whole, is SERVING only when every service is, and nothing is before the first round of probes has answered
(``unchecked_health``). A change is logged once, when it happens.

Dependencies: ``postgresql`` (``SELECT 1`` on the pool), ``artifact_store`` (the store's own
probe: a file written and removed, or the bucket looked up) and ``serving_engine`` (its
``/health``). Graceful shutdown (``HealthServicer.enter_graceful_shutdown``) wins over all of this:
from then on every service stays NOT_SERVING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from grpc_health.v1 import _async as health_aio  # health.aio at run time; the stubs declare it here
from grpc_health.v1 import health_pb2

from server.settings import Settings

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[object]]  # raises, or returns False, when the dependency is unreachable

NEEDS: dict[str, tuple[str, ...]] = {
    "learning.v1.TrainingService": ("postgresql", "artifact_store"),
    "learning.v1.FisherService": ("postgresql", "artifact_store"),
    "learning.v1.AdapterService": ("postgresql", "artifact_store"),
    "learning.v1.LoraControlService": ("postgresql", "artifact_store", "serving_engine"),
    "learning.v1.EvaluationService": ("postgresql", "artifact_store", "serving_engine"),
    "learning.v1.DataPreparationService": ("postgresql", "artifact_store", "serving_engine"),
    "learning.v1.FeedbackService": ("postgresql",),
    "learning.v1.DatasetService": ("postgresql", "artifact_store"),
    "learning.v1.DriftService": ("postgresql", "artifact_store"),
    "learning.v1.PipelineService": ("postgresql", "artifact_store", "serving_engine"),
    "learning.v1.OnlineLearningService": ("postgresql", "artifact_store", "serving_engine"),
}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def unchecked_health() -> health_aio.HealthServicer:
    """A grpc.health.v1 servicer saying NOT_SERVING for the server as a whole ("") and every service of ``NEEDS``
    until the first round of probes sets each from what answered. grpc_health's own starts with "" SERVING, and the
    server listens before that round has answered (up to ``health_check_timeout_seconds`` when a dependency hangs):
    a readiness probe asking meanwhile would send traffic to a server whose database may not answer."""
    servicer = health_aio.HealthServicer()
    for service in ("", *NEEDS):
        await servicer.set(service, NOT_SERVING)
    return servicer


class HealthChecker:
    def __init__(self, servicer: health_aio.HealthServicer, probes: Mapping[str, Probe], *,
                 interval_seconds: float, timeout_seconds: float) -> None:
        self._servicer = servicer
        self._probes = dict(probes)
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self._up: dict[str, bool] = {}
        self._pending: dict[str, asyncio.Task[object]] = {}  # probes that outlived their timeout, still running
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> dict[str, bool]:
        """Probe every dependency once (concurrently) and set every service's status; returns what answered."""
        results = await asyncio.gather(*(self._probe(name, probe) for name, probe in self._probes.items()))
        up = dict(zip(self._probes, results, strict=True))
        for name, ok in up.items():
            if self._up.get(name, True) != ok:
                if ok:
                    log.info("%s is reachable again", name, extra={"dependency": name})
                else:
                    log.warning("%s is unreachable: the services that need it are NOT_SERVING", name,
                                extra={"dependency": name})
        self._up = up
        everything = True
        for service, needs in NEEDS.items():
            serving = all(up.get(d, True) for d in needs)  # a dependency without a probe is in memory
            everything &= serving
            await self._servicer.set(service, SERVING if serving else NOT_SERVING)
        await self._servicer.set("", SERVING if everything else NOT_SERVING)
        return up

    async def _probe(self, name: str, probe: Probe) -> bool:
        """Whether ``probe`` answered within the timeout. A probe that did not is left to finish (a blocking
        client call in a thread cannot be stopped) and no other is started for that dependency meanwhile, so a
        hanging dependency holds at most one thread, whatever the interval."""
        task = self._pending.get(name)
        if task is None:
            task = asyncio.ensure_future(probe())
        done, _ = await asyncio.wait({task}, timeout=self._timeout)
        if not done:
            self._pending[name] = task
            return False
        self._pending.pop(name, None)
        if task.cancelled():
            return False
        if (exc := task.exception()) is not None:
            log.debug("probe failed", extra={"dependency": name, "error": f"{type(exc).__name__}: {exc}"})
            return False
        return task.result() is not False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - the checker must outlive any one round
                log.exception("health check round failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in self._pending.values():
            task.cancel()
        self._pending.clear()


async def start_health_checks(servicer: health_aio.HealthServicer, settings: Settings, probes: Mapping[str, Probe]
                              ) -> HealthChecker:
    """A checker of ``probes`` (by dependency name), checked once and then running in the background."""
    checker = HealthChecker(servicer, probes, interval_seconds=settings.health_check_interval_seconds,
                            timeout_seconds=settings.health_check_timeout_seconds)
    await checker.check()
    checker.start()
    return checker
