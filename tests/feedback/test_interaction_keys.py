"""Events are grouped into interactions by tenant and interaction id (or, without one, tenant and event id), and
ids that hold ':' do not make two tenants' interactions one (in datasets, nor in drift's incoming prompts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.domain import FeedbackSource, Objective
from engine.feedback.dataset import FeedbackDatasetBuilder
from engine.feedback.events import FeedbackKind
from engine.stores.drift_store import PostgresDriftSource
from tests.feedback.conftest import BASES, event


async def sft(store) -> list[tuple[str, str]]:
    built = await FeedbackDatasetBuilder(store).build(FeedbackSource(min_samples=1, force=True), Objective.SFT)
    return sorted((e.prompt, e.completion) for e in built.examples)


async def test_interactions_of_two_tenants_are_not_merged_in_datasets(ingestor, store) -> None:
    """Tenant "acme:eu" with interaction "42" and tenant "acme" with interaction "eu:42" are two interactions."""
    await ingestor.submit([
        event("e1", FeedbackKind.THUMBS_UP, tenant="acme:eu", interaction_id="42", prompt="p-eu", response="good"),
        event("e2", FeedbackKind.THUMBS_UP, tenant="acme", interaction_id="eu:42", prompt="p-other",
              response="fine"),
    ])
    assert await sft(store) == [("p-eu", "good"), ("p-other", "fine")]


async def test_events_without_interaction_id_of_two_tenants_are_not_merged_in_datasets(ingestor, store) -> None:
    """Without an interaction id, tenant "a:b" with event "c" and tenant "a" with event "b:c" are two interactions."""
    await ingestor.submit([
        event("c", FeedbackKind.THUMBS_UP, tenant="a:b", prompt="p-ab", response="one"),
        event("b:c", FeedbackKind.THUMBS_UP, tenant="a", prompt="p-a", response="two"),
    ])
    assert await sft(store) == [("p-a", "two"), ("p-ab", "one")]


async def test_interactions_of_two_tenants_are_not_merged_in_drifts_incoming_prompts(ingestor, pool) -> None:
    """Drift samples one prompt per interaction: the two tenants' interactions count as two."""
    await ingestor.submit([
        event("e1", tenant="acme:eu", interaction_id="42", prompt="p-eu"),
        event("e2", tenant="acme", interaction_id="eu:42", prompt="p-other"),
        event("e3", tenant="a:b", prompt="p-ab"),
        event("b:e3", tenant="a", prompt="p-a"),
    ])
    now = datetime.now(UTC)
    got = await PostgresDriftSource(pool).incoming(BASES.default, start=now - timedelta(days=1), end=now, limit=10)
    assert (sorted(got.prompts), got.total) == (["p-a", "p-ab", "p-eu", "p-other"], 4)
