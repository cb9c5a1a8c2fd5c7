"""Ports: the interfaces the engine needs from the outside world.

Implementations live in ``engine/stores`` (PostgreSQL, artifact directories, S3)
or are in-memory. The server wires them together in its composition root.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

from engine.jobs.core import JobEvent, JobState
from engine.training.spec import EventPayload, TrainingJob


class ProgressSink(Protocol):
    """Where a running job reports. Called from the training thread; must not block long."""

    def emit(self, payload: EventPayload) -> None: ...


class CancelToken:
    """A flag the training loop checks every step. Set from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class JobStore(Protocol):
    """Durable storage of training jobs and their event logs."""

    async def insert_job(self, job: TrainingJob) -> TrainingJob:
        """Insert a new job. If its request_id is taken, return the stored job instead."""
        ...

    async def update_job(self, job: TrainingJob) -> None: ...

    async def get_job(self, job_id: str) -> TrainingJob | None: ...

    async def list_jobs(
        self, *, states: Sequence[JobState], limit: int, before: tuple[str, str] | None
    ) -> list[TrainingJob]:
        """Jobs newest first; ``before`` is the (create_time iso, id) cursor of the previous page."""
        ...

    async def append_events(self, job_id: str, events: Sequence[JobEvent]) -> None: ...

    async def list_events(self, job_id: str, *, after_sequence: int) -> list[JobEvent]: ...
