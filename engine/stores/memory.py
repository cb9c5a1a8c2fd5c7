"""In-memory implementations of the storage ports, for tests and for a server without a database.

They keep the same contracts as the PostgreSQL stores (request-id idempotency, newest-first pages, an event
appended twice stored once), so the engine runs on them unchanged. Nothing survives the process.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import datetime
from typing import Generic, TypeVar

from engine.jobs.core import Job, JobEvent, JobState

S = TypeVar("S")
O = TypeVar("O")  # noqa: E741 - as in engine.jobs.core


class InMemoryJobStore(Generic[S, O]):
    """engine.jobs.ports.JobStore in a dict."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job[S, O]] = {}
        self.events: dict[str, dict[int, JobEvent]] = {}

    async def insert_job(self, job: Job[S, O]) -> Job[S, O]:
        if job.request_id:
            for stored in self.jobs.values():
                if stored.request_id == job.request_id:
                    return stored
        self.jobs[job.id] = job
        self.events[job.id] = {}
        return job

    async def update_job(self, job: Job[S, O]) -> None:
        self.jobs[job.id] = job

    async def get_job(self, job_id: str) -> Job[S, O] | None:
        return self.jobs.get(job_id)

    async def list_jobs(
        self, *, states: Sequence[JobState], limit: int, before: tuple[datetime, str] | None
    ) -> list[Job[S, O]]:
        rows = sorted(self.jobs.values(), key=lambda j: (j.create_time, j.id), reverse=True)
        rows = [j for j in rows if (not states or j.state in states)
                and (before is None or (j.create_time, j.id) < before)]
        return rows[:limit]

    async def jobs_in_states(self, states: Sequence[JobState]) -> list[Job[S, O]]:
        return sorted((j for j in self.jobs.values() if j.state in states), key=lambda j: j.create_time)

    async def append_events(self, job_id: str, events: Sequence[JobEvent]) -> None:
        log = self.events[job_id]
        for event in events:
            log.setdefault(event.sequence, copy.copy(event))

    async def list_events(self, job_id: str, *, after_sequence: int) -> list[JobEvent]:
        log = self.events.get(job_id, {})
        return [log[n] for n in sorted(log) if n > after_sequence]
