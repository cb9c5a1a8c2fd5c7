"""Ports of the job core: where jobs are stored, where a running job reports, and how it is cancelled.

:class:`JobStore` is implemented by ``engine.stores.job_store`` (PostgreSQL) and ``engine.stores.memory``
(in memory, for tests); the composition root picks one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from engine.jobs.core import Job, JobEvent, JobState

S = TypeVar("S")
O = TypeVar("O")  # noqa: E741 - as in engine.jobs.core


class ProgressSink(Protocol):
    """Where a running job reports. Called from any thread; must not block long."""

    def emit(self, payload: object) -> None: ...


class CancelToken:
    """A flag the training loop checks every step. Set from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class JobStore(Protocol[S, O]):
    """Durable storage of the jobs of one kind and their event logs."""

    async def insert_job(self, job: Job[S, O]) -> Job[S, O]:
        """Insert a new job. If its request_id is taken (for this kind), return the stored job instead."""
        ...

    async def update_job(self, job: Job[S, O]) -> None: ...

    async def get_job(self, job_id: str) -> Job[S, O] | None: ...

    async def list_jobs(
        self, *, states: Sequence[JobState], limit: int, before: tuple[datetime, str] | None
    ) -> list[Job[S, O]]:
        """Jobs newest first; ``before`` is the (create_time, id) cursor of the previous page."""
        ...

    async def jobs_in_states(self, states: Sequence[JobState]) -> list[Job[S, O]]:
        """Every job in one of ``states``, oldest first."""
        ...

    async def append_events(self, job_id: str, events: Sequence[JobEvent]) -> None:
        """Append events; one already stored (same sequence) is left as it is, so a retried write is harmless."""
        ...

    async def list_events(self, job_id: str, *, after_sequence: int) -> list[JobEvent]: ...
