"""Typed asyncio client over the generated learning.v1 stubs.

One method per RPC of every service in protos/learning/v1 (named after it:
``PauseTrainingJob`` is ``pause_training_job``; tests/clients/test_sdk_coverage.py
keeps it so). Every method takes and returns generated messages (typed by their
``.pyi`` stubs); every failure raises a :mod:`learning_engine.errors` exception.
Job watches reconnect after a dropped connection and resume after the last
sequence they delivered, so a caller sees each event exactly once.
``start_training_job``, ``start_fisher_job`` and ``start_evaluation_job`` return job handles
(:mod:`learning_engine.handles`). The blocking :class:`learning_engine.Client`
is generated from this class (scripts/gen_sync_client.py).

The calls are kept by area: jobs, pipelines and online sessions in :mod:`learning_engine.client_jobs`, adapter
versions, serving and drift in :mod:`learning_engine.client_serving`, datasets and feedback in
:mod:`learning_engine.client_data`; the connection and the call plumbing they share in :mod:`learning_engine.calls`.
"""

from __future__ import annotations

from grpc_health.v1 import health_pb2

from learning_engine.client_data import DataCalls
from learning_engine.client_jobs import JobCalls
from learning_engine.client_serving import ServingCalls, archive_name


class AsyncClient(JobCalls, ServingCalls, DataCalls):
    """``async with AsyncClient("host:port", token=...) as client: ...``"""

    async def health(self, service: str = "") -> str:
        """SERVING, NOT_SERVING, SERVICE_UNKNOWN or UNKNOWN for ``service`` ("" = the server)."""
        response = await self._unary(self._health.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


__all__ = ["AsyncClient", "archive_name"]
