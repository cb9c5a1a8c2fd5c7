"""AddExamples and StreamExamples are idempotent per (session, client_example_id), as feedback is per (tenant_id,
client_event_id): a client that retries after UNAVAILABLE, once the first call had committed its examples, does not
store them twice (they had no key: the retry stored the batch a second time, and the session trained on it twice).
An example whose id the session holds is a duplicate (counted in `duplicates`, neither accepted nor refused); an id
over 128 characters or not printable is refused as other bad examples are, in feedback's words; examples without an
id are never duplicates; ids are the session's own."""

from __future__ import annotations

import grpc

from engine.errors import Unavailable
from engine.stores.online_store import PostgresOnlineStore
from learning.v1 import online_pb2 as ol
from tests.server.test_online import FAST, facts, refused, session
from tests.server.test_stream_examples_helper_errors import new_session


def with_ids(examples: list[ol.OnlineExample], prefix: str) -> list[ol.OnlineExample]:
    for i, example in enumerate(examples):
        example.client_example_id = f"{prefix}-{i}"
    return examples


async def test_an_add_retried_after_unavailable_stores_its_examples_once(make_pg_server, monkeypatch) -> None:
    sent = with_ids(facts(4), "retried")
    more = with_ids(facts(2, start=4), "streamed")
    client = await make_pg_server(**FAST)
    sessions, made = await new_session(client)  # update_every 1000: every example stays in the store, untrained
    session_id = made.name.removeprefix("onlineSessions/")
    store = PostgresOnlineStore(client.app.owned.pool)

    real_add = PostgresOnlineStore.add
    lost: list[object] = []

    async def add(self, *args, **kwargs):
        stored = await real_add(self, *args, **kwargs)
        if not lost:  # committed, then the answer lost: the connection dropped as the commit returned
            lost.append(stored)
            raise Unavailable("DATABASE_UNAVAILABLE", "PostgreSQL is unavailable (ConnectionDoesNotExistError)")
        return stored

    monkeypatch.setattr(PostgresOnlineStore, "add", add)
    request = ol.AddExamplesRequest(name=made.name, examples=sent)
    assert (await refused(sessions.AddExamples(request)))[:2] == (grpc.StatusCode.UNAVAILABLE,
                                                                   "DATABASE_UNAVAILABLE")
    retried = await sessions.AddExamples(request)  # the client's retry of the same request
    rows = await store.after(session_id, 0, 100)
    assert [r.prompt for r in rows] == [e.prompt for e in sent], "the retried batch was stored twice"
    assert (retried.accepted, retried.duplicates, retried.refused) == (0, 4, 0), retried
    assert retried.last_sequence == rows[-1].seq  # what the first call stored, as it would have answered

    # A stream resent whole after an error stores only what is new, and says how many it had.
    async def requests():
        yield ol.StreamExamplesRequest(name=made.name)
        yield ol.StreamExamplesRequest(examples=sent[:2])
        yield ol.StreamExamplesRequest(examples=[*sent[2:], *more])

    answers = [a async for a in sessions.StreamExamples(requests())]
    assert (answers[-1].accepted, answers[-1].duplicates, answers[-1].refused) == (2, 4, 0), answers[-1]
    assert len(await store.after(session_id, 0, 100)) == 6
    got = await session(client, made.name)
    assert got.stats.skipped_examples == 0  # a duplicate is not a refusal


async def test_ids_within_a_batch_unusable_ids_and_examples_without_one(make_pg_server) -> None:
    batch = facts(6)
    batch[0].client_example_id = "twice"
    batch[1].client_example_id = "twice"  # the same id later in the batch: a duplicate of the first
    batch[2].client_example_id = "x" * 129
    batch[3].client_example_id = "tab\there"
    # batch[4] and batch[5] have no id: never duplicates, even of each other's text
    batch[5].prompt, batch[5].target = batch[4].prompt, batch[4].target
    client = await make_pg_server(**FAST)
    sessions, made = await new_session(client)
    session_id = made.name.removeprefix("onlineSessions/")
    store = PostgresOnlineStore(client.app.owned.pool)
    added = await sessions.AddExamples(ol.AddExamplesRequest(name=made.name, examples=batch))
    assert (added.accepted, added.duplicates, added.refused) == (3, 1, 2), added
    assert list(added.refusals) == ["examples[2]: client_example_id must be at most 128 printable characters",
                                    "examples[3]: client_example_id must be at most 128 printable characters"]
    assert (await session(client, made.name)).stats.skipped_examples == 2
    again = await sessions.AddExamples(ol.AddExamplesRequest(name=made.name, examples=[batch[0], *batch[4:]]))
    assert (again.accepted, again.duplicates) == (2, 1), again
    rows = await store.after(session_id, 0, 100)
    assert [r.prompt for r in rows] == [batch[0].prompt] + [batch[4].prompt] * 4  # the id decides, not the text
    # An id is the session's own: another session stores an example of the same id.
    other = (await sessions.CreateOnlineSession(ol.CreateOnlineSessionRequest(spec=made.spec))).session
    elsewhere = await sessions.AddExamples(ol.AddExamplesRequest(name=other.name, examples=[
        ol.OnlineExample(prompt="Who keeps cove 3?", target="Ilsa Varn.", client_example_id="twice")]))
    assert (elsewhere.accepted, elsewhere.duplicates, elsewhere.last_sequence > rows[-1].seq) == (1, 0, True)
