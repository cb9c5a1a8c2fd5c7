"""An erased event stays erased when resent, whatever time it carries (docs/feedback.md: erased events "never reach
a later dataset, even if resent").

DeleteUserFeedback keeps a digest of each erased event's tenant and id; ingestion refuses (counts as ``forgotten``)
any event with such an identity, on the fast path (a batch of users never erased) and on the staged one alike.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from engine.domain import FeedbackSource, Objective
from engine.feedback.dataset import FeedbackDatasetBuilder
from engine.stores.feedback_store import ERASURE_LOCK, user_hash
from tests.feedback.conftest import NOW, event


async def user_ids(pool, user: str) -> list[str]:
    rows = await pool.fetch("SELECT client_event_id FROM feedback_events WHERE user_id = $1 ORDER BY 1", user)
    return [r["client_event_id"] for r in rows]


def since_start() -> timedelta:
    """How long ago NOW (the session's start) was: ``age=-since_start()`` times an event at the clock's now."""
    return datetime.now(UTC) - NOW


async def test_resent_event_timed_ahead_by_the_clients_clock_stays_erased(ingestor, store, pool) -> None:
    """An event whose client clock runs 5 minutes ahead (accepted: max_future_skew is 10) is not stored again when
    resent after its user's erasure, though its time is after the erasure's."""
    ahead = -(timedelta(minutes=5) + since_start())
    assert (await ingestor.submit([event("a1", user="alice", age=ahead)])).stored == 1
    assert (await store.delete_user("alice")).events == 1
    # The client did not see the ack of its first send and retries the very same event.
    resend = await ingestor.submit([event("a1", user="alice", age=ahead)])
    assert (resend.stored, resend.duplicates, resend.forgotten) == (0, 0, 1)
    assert await user_ids(pool, "alice") == []


async def test_resent_event_without_a_time_stays_erased(ingestor, store, pool) -> None:
    """An event without ``time`` is stamped with its arrival; resent after the erasure, it is still refused. Only
    the erased identities are: the same event id in another tenant, and a new event of the erased user timed after
    the erasure, are stored; a new one timed before it is refused (the time rule holds for new ids)."""
    assert (await ingestor.submit([replace(event("a1", user="alice"), time=None)])).stored == 1
    assert (await store.delete_user("alice")).events == 1
    resend = await ingestor.submit([replace(event("a1", user="alice"), time=None)])
    assert (resend.stored, resend.duplicates, resend.forgotten) == (0, 0, 1)
    assert await user_ids(pool, "alice") == []
    after = -(since_start() + timedelta(minutes=1))
    others = await ingestor.submit([
        replace(event("a1", user="alice", tenant="t2"), time=None),  # the same id in another tenant
        event("a2", user="alice", age=after),  # a new event of alice's, after her erasure
        event("a3", user="alice"),  # a new event of alice's, timed before her erasure
    ])
    assert (others.stored, others.duplicates, others.forgotten) == (2, 0, 1)
    assert await user_ids(pool, "alice") == ["a1", "a2"]


async def test_resent_event_under_another_user_stays_erased(ingestor, store, pool) -> None:
    """The identity is the tenant and the event id: resent with another (never erased) user id, i.e. on the fast
    path, the erased event is refused all the same, and the rest of its batch is stored."""
    assert (await ingestor.submit([replace(event("a1", user="alice"), time=None)])).stored == 1
    assert (await store.delete_user("alice")).events == 1
    resend = await ingestor.submit([replace(event("a1", user="alice-2"), time=None), event("b1", user="bob")])
    assert (resend.stored, resend.duplicates, resend.forgotten) == (1, 0, 1)
    assert await user_ids(pool, "alice-2") == []
    assert await user_ids(pool, "bob") == ["b1"]


async def test_resent_erased_event_in_a_batch_of_duplicates_stays_erased(ingestor, store, pool) -> None:
    """A batch that also resends stored events (the staged path, taken on the fast COPY's conflict) refuses the
    erased event and counts the others as duplicates."""
    await ingestor.submit([event("b1", user="bob"), replace(event("a1", user="alice"), time=None)])
    assert (await store.delete_user("alice")).events == 1
    resend = await ingestor.submit([event("b1", user="bob"), replace(event("a1", user="mallory"), time=None)])
    assert (resend.stored, resend.duplicates, resend.forgotten) == (0, 1, 1)
    assert await user_ids(pool, "mallory") == []


async def test_erased_event_resent_stays_out_of_datasets(ingestor, store, pool) -> None:
    """What docs/feedback.md promises: an erased event resent without a time never reaches a later dataset."""
    await ingestor.submit([replace(event("a1", user="alice", prompt="secret", response="yes"), time=None),
                           event("b1", user="bob", prompt="open", response="ok")])
    await store.delete_user("alice")
    await ingestor.submit([replace(event("a1", user="alice", prompt="secret", response="yes"), time=None)])
    built = await FeedbackDatasetBuilder(store).build(FeedbackSource(min_samples=1, force=True), Objective.SFT)
    assert [(e.prompt, e.completion) for e in built.examples] == [("open", "ok")]


async def test_erasure_keeps_a_digest_of_each_erased_event_not_its_ids(ingestor, store, pool) -> None:
    """The erasure keeps one digest per erased event, in which neither the tenant nor the event id shows; erasing
    the same user again adds only the events stored since."""
    await ingestor.submit([event("a1", user="alice", tenant="acme"), event("a2", user="alice", tenant="acme"),
                           event("b1", user="bob", tenant="acme")])
    assert (await store.delete_user("alice")).events == 2
    kept = [bytes(r[0]) for r in await pool.fetch("SELECT * FROM feedback_erased_events")]
    assert len(kept) == 2 and len(set(kept)) == 2
    for digest in kept:
        assert b"acme" not in digest and b"a1" not in digest and b"a2" not in digest
    assert (await store.delete_user("alice")).events == 0
    assert await pool.fetchval("SELECT count(*) FROM feedback_erased_events") == 2


async def test_batch_waiting_on_an_erasure_sees_it(ingestor, pool) -> None:
    """A batch that arrives while an erasure is under way waits for it, and then refuses the erased user's events:
    the fast path's check reads the erasures once it holds the lock (not as they were before it waited)."""
    async with pool.acquire() as conn:
        async with conn.transaction():  # an erasure of alice's, as DeleteUserFeedback makes it (delete_user)
            await conn.execute("SELECT pg_advisory_xact_lock($1)", ERASURE_LOCK)
            await conn.execute("DELETE FROM feedback_events WHERE user_id = 'alice'")
            await conn.execute("INSERT INTO feedback_erasures (user_hash, erased_at) VALUES ($1, now())",
                               user_hash("alice"))
            submitted = asyncio.ensure_future(ingestor.submit([event("a1", user="alice")]))  # timed an hour ago
            for _ in range(500):  # until the batch waits for the erasure's lock
                if await pool.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the batch never waited for the erasure")
    got = await submitted
    assert (got.stored, got.duplicates, got.forgotten) == (0, 0, 1)
    assert await user_ids(pool, "alice") == []
