"""The FeedbackRates port over the Feedback service's per-adapter stats.

Feedback events carry the ``adapter_version`` the client was served; the plain version (``v1.2``)
and the versioned serving name (``<base>@v1.2``) are stored as one (engine.feedback.ingest), and a
version's counts are of the feedback on its base model only (and feedback stored before events
recorded a base model), so that a ``v1.2`` of another base model sharing the database is not counted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from engine.lora.state import FeedbackCounts


class StatsSource(Protocol):
    """What ``PostgresFeedbackStore.stats`` offers: per-adapter positive/negative counts in a window."""

    async def stats(self, *, start: datetime, end: datetime, adapter_version: str, tenant_id: str,
                    rating_positive_min: int, rating_negative_max: int, base_model: str = "") -> Any: ...


class FeedbackStatsRates:
    def __init__(self, source: StatsSource, *, rating_positive_min: int, rating_negative_max: int) -> None:
        """``rating_positive_min`` and ``rating_negative_max`` are the server's (feedback_rating_*): no default, so
        that canaries, auto-rollback and online spikes count ratings as every other report of the server does."""
        self._source = source
        self._pos, self._neg = rating_positive_min, rating_negative_max

    async def counts(self, base_model: str, version: str, since: datetime) -> FeedbackCounts:
        return await self.named(since, version, base_model=base_model)

    async def named(self, since: datetime, *names: str, base_model: str = "") -> FeedbackCounts:
        positive = negative = 0
        for name in names:
            stats = await self._source.stats(start=since, end=datetime.now(UTC), adapter_version=name, tenant_id="",
                                             rating_positive_min=self._pos, rating_negative_max=self._neg,
                                             base_model=base_model)
            for item in stats.by_adapter:
                if item.adapter_version == name:
                    positive += item.positive
                    negative += item.negative
        return FeedbackCounts(positive=positive, negative=negative)
