"""What drift reports read from PostgreSQL: the interactions feedback carried, feedback counts over time, and the
evaluations recorded (implements engine.drift.ports.DriftSource; no tables of its own).

Feedback is read per base model: its events, and those that recorded none (base_model '', stored before
migration 0020), which count for every base model."""

from __future__ import annotations

import json
from datetime import datetime

import asyncpg
from pydantic import TypeAdapter

from engine.drift.ports import IncomingPrompts
from engine.drift.report import EvalPoint, FeedbackBucket
from engine.lora.state import EvalSummary
from engine.stores.feedback_store import INTERACTION_KEY
from engine.stores.postgres import Statements

_EVAL = TypeAdapter(EvalSummary)

# One row per interaction (the first event carrying its content; keyed as datasets key them, see INTERACTION_KEY),
# erased users' left out, a stable sample of them by the md5 of the interaction's key, and how many there were in
# all. Resent erased events are never stored (ingestion refuses them), so nothing more is needed to leave them out.
_INCOMING = f"""
WITH seen AS (
    SELECT DISTINCT ON (key) key, prompt, messages
    FROM (
        SELECT {INTERACTION_KEY} AS key,
               e.prompt, e.messages, e.event_time
        FROM feedback_events e
        WHERE e.has_content AND e.event_time >= $1 AND e.event_time < $2 AND e.base_model IN ($4, '')
          AND NOT EXISTS (
              SELECT 1 FROM feedback_erasures f
              WHERE f.user_hash = encode(sha256(convert_to(e.user_id, 'UTF8')), 'hex')
                AND e.event_time <= f.erased_at)
    ) s
    ORDER BY key, event_time
)
SELECT key, prompt, messages, count(*) OVER () AS total FROM seen ORDER BY md5(key), key LIMIT $3
"""

_BUCKETS = """
SELECT width_bucket(extract(epoch FROM event_time)::float8, $3::float8, $4::float8, $5) AS bucket,
       count(*) FILTER (WHERE kind = 'THUMBS_UP' OR (kind = 'RATING' AND rating >= $6)) AS positive,
       count(*) FILTER (WHERE kind = 'THUMBS_DOWN' OR (kind = 'RATING' AND rating <= $7)) AS negative
FROM feedback_events
WHERE event_time >= $1 AND event_time < $2 AND kind IN ('THUMBS_UP', 'THUMBS_DOWN', 'RATING')
  AND base_model IN ($8, '')
GROUP BY bucket
"""

_EVALS = """
SELECT doc FROM (
    SELECT id, doc FROM lora_evals WHERE base_model = $1 AND create_time >= $2 AND create_time < $3
    ORDER BY id DESC LIMIT $4
) newest ORDER BY id
"""


def _prompt(prompt: str | None, messages: str | None) -> str:
    """The prompt of an interaction: its prompt, or the last user turn of its conversation."""
    if prompt:
        return prompt.strip()
    turns = [m for m in json.loads(messages or "[]") if m.get("role") == "user"]
    return str(turns[-1].get("content", "")).strip() if turns else ""


class PostgresDriftSource:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._statements = Statements.on(pool)  # PostgreSQL out of reach: Unavailable DATABASE_UNAVAILABLE

    async def incoming(self, base_model: str, *, start: datetime, end: datetime, limit: int) -> IncomingPrompts:
        rows = await self._statements.fetch(_INCOMING, start, end, limit, base_model)
        prompts = tuple(p for p in (_prompt(r["prompt"], r["messages"]) for r in rows) if p)
        return IncomingPrompts(prompts, int(rows[0]["total"]) if rows else 0)

    async def feedback_buckets(self, base_model: str, *, start: datetime, end: datetime, buckets: int,
                               rating_positive_min: int, rating_negative_max: int) -> list[FeedbackBucket]:
        rows = await self._statements.fetch(_BUCKETS, start, end, start.timestamp(), end.timestamp(), buckets,
                                            rating_positive_min, rating_negative_max, base_model)
        counts = {int(r["bucket"]): (int(r["positive"]), int(r["negative"])) for r in rows}
        width = (end - start) / buckets
        return [FeedbackBucket(start + i * width, end if i == buckets - 1 else start + (i + 1) * width,
                               *counts.get(i + 1, (0, 0)))
                for i in range(buckets)]

    async def evaluations(self, base_model: str, *, start: datetime, end: datetime, limit: int) -> list[EvalPoint]:
        rows = await self._statements.fetch(_EVALS, base_model, start, end, limit)
        points = []
        for row in rows:
            summary = _EVAL.validate_json(row["doc"])
            points.append(EvalPoint(time=summary.time, version=summary.version,
                                    baseline_version=summary.baseline_version, passed=summary.passed,
                                    metrics=summary.metrics, evaluation_id=summary.id))
        return points
