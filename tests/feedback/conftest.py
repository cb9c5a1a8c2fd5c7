"""Engine-level feedback fixtures: a migrated PostgreSQL database and event builders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.feedback.events import FeedbackEvent, FeedbackKind, Interaction, Turn
from engine.feedback.ingest import FeedbackBases, FeedbackIngestor
from engine.feedback.scrub import Scrubber
from engine.stores import postgres
from engine.stores.feedback_store import PostgresFeedbackStore
from tests.conftest import create_database

NOW = datetime.now(UTC)
# A server of two base models, base-a its default.
BASES = FeedbackBases("base-a", frozenset({"base-b"}))


@pytest.fixture(scope="session")
async def feedback_database_url(pg_admin_url: str):
    """One migrated database for all engine-level feedback tests (emptied before each test, see ``pool``)."""
    url = await create_database(pg_admin_url, "feedback")
    pool = await postgres.connect(url, max_size=1)
    await postgres.migrate(pool)
    await pool.close()
    return url


@pytest.fixture
async def pool(feedback_database_url: str):
    pool = await postgres.connect(feedback_database_url, max_size=4)
    await pool.execute("TRUNCATE feedback_events, feedback_erasures, feedback_erased_events")
    yield pool
    await pool.close()


@pytest.fixture
def store(pool) -> PostgresFeedbackStore:
    return PostgresFeedbackStore(pool)


@pytest.fixture
def ingestor(store: PostgresFeedbackStore) -> FeedbackIngestor:
    return FeedbackIngestor(store, Scrubber(), bases=BASES)


def event(
    event_id: str,
    kind: FeedbackKind | None = FeedbackKind.THUMBS_UP,
    *,
    prompt: str = "What is the capital of France?",
    response: str = "Paris.",
    messages: tuple[Turn, ...] = (),
    interaction_id: str = "",
    ref: str = "",
    user: str = "u1",
    tenant: str = "t1",
    age: timedelta = timedelta(hours=1),
    **fields,
) -> FeedbackEvent:
    """An event ``age`` ago; with ``ref`` it refers to an earlier interaction instead of carrying one."""
    interaction = None
    if not ref:
        interaction = Interaction(
            interaction_id=interaction_id, messages=messages, prompt="" if messages else prompt, response=response
        )
    return FeedbackEvent(
        client_event_id=event_id, kind=kind, interaction=interaction, interaction_ref=ref, user_id=user,
        tenant_id=tenant, time=NOW - age, **fields,
    )
