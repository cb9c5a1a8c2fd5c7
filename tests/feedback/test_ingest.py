"""Ingestion into a real PostgreSQL: idempotency, all-or-nothing batches, scrubbing, erasure, streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from engine.errors import InvalidArgument
from engine.feedback.events import FeedbackEvent, FeedbackKind, Interaction, Turn
from engine.feedback.ingest import FeedbackIngestor, FeedbackLimits, to_records
from engine.feedback.scrub import Scrubber
from engine.stores.feedback_store import encode_rows
from tests.feedback.conftest import BASES, NOW, event


async def ids(pool) -> list[str]:
    return [r["client_event_id"] for r in await pool.fetch("SELECT client_event_id FROM feedback_events ORDER BY 1")]


async def test_resending_is_a_no_op(ingestor, pool) -> None:
    batch = [event("e1"), event("e2", FeedbackKind.THUMBS_DOWN), event("e2", FeedbackKind.THUMBS_DOWN)]
    first = await ingestor.submit(batch)
    assert (first.stored, first.duplicates) == (2, 1)  # the repeat inside the batch is a duplicate too
    again = await ingestor.submit([*batch, event("e3")])
    assert (again.stored, again.duplicates) == (1, 3)
    assert await ids(pool) == ["e1", "e2", "e3"]


async def test_same_id_in_another_tenant_is_another_event(ingestor, pool) -> None:
    result = await ingestor.submit([event("e1", tenant="a"), event("e1", tenant="b")])
    assert result.stored == 2


async def test_a_bad_event_rejects_the_whole_batch_naming_every_offender(ingestor, pool) -> None:
    batch = [
        event("ok-1"),
        event("bad-rating", FeedbackKind.RATING, rating=7),
        event("ok-2"),
        event("bad-kind", None),
        event("too-long", prompt="x" * 40_000),
        event("", FeedbackKind.CORRECTION),
    ]
    with pytest.raises(InvalidArgument) as err:
        await ingestor.submit(batch)
    fields = [v.field for v in err.value.violations]
    assert fields == [
        "events[1].rating", "events[3].kind", "events[4].interaction.prompt",
        "events[5].client_event_id", "events[5].correction",
    ]
    assert err.value.reason == "INVALID_FEEDBACK"
    assert err.value.metadata["first_invalid_index"] == "1"
    assert err.value.metadata["invalid_events"] == "1,3,4,5"
    assert "40000 characters" in err.value.violations[2].description
    assert await ids(pool) == []  # all or nothing


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (event("x", FeedbackKind.DWELL_TIME, dwell_seconds=float("nan")), "events[0].dwell_seconds"),
        (event("x", FeedbackKind.THUMBS_UP, rating=3), "events[0].rating"),
        (event("x", FeedbackKind.THUMBS_UP, correction="no"), "events[0].correction"),
        (event("x", user="", tenant=""), "events[0].user_id"),
        (event("x", age=-timedelta(days=1)), "events[0].time"),
        (event("x", response=""), "events[0].interaction.response"),
        (event("x", messages=(Turn("robot", "hi"),)), "events[0].interaction.messages[0].role"),
        (FeedbackEvent("x", FeedbackKind.COPY, user_id="u"), "events[0].interaction"),
        (event("x", labels=(("", "v"),)), "events[0].labels['']"),
        (event("x", labels=tuple((f"k{i}", "v") for i in range(33))), "events[0].labels"),
        (event("x", labels=(("k", "v" * 300),)), "events[0].labels['k']"),
        (event("x" * 129), "events[0].client_event_id"),
        (event("x", user="u\n1"), "events[0].user_id"),
        (event("x", adapter_version="v" * 129), "events[0].adapter_version"),
        (event("x", interaction_id="i\x00"), "events[0].interaction.interaction_id"),
        (FeedbackEvent("x", FeedbackKind.COPY, interaction=Interaction(prompt="p", response="r"), interaction_ref="r",
                       user_id="u"), "events[0].interaction_ref"),
        (FeedbackEvent("x", FeedbackKind.COPY, interaction=Interaction(messages=(Turn("user", "hi"),), prompt="p",
                                                                       response="r"), user_id="u"),
         "events[0].interaction.prompt"),
        (event("x", response="r" * 40_000), "events[0].interaction.response"),
        (event("x", messages=tuple(Turn("user", "hi") for _ in range(65))), "events[0].interaction.messages"),
        (event("x", messages=(Turn("user", "hi" * 20_000),)), "events[0].interaction.messages[0].content"),
        (event("x", FeedbackKind.CORRECTION, correction="   "), "events[0].correction"),
        (event("x", FeedbackKind.CORRECTION, correction="c" * 40_000), "events[0].correction"),
        (event("x", FeedbackKind.RATING, rating=0), "events[0].rating"),
        (event("x", FeedbackKind.DWELL_TIME, dwell_seconds=-1.0), "events[0].dwell_seconds"),
        (event("x", FeedbackKind.COPY, dwell_seconds=3.0), "events[0].dwell_seconds"),
    ],
)
async def test_each_rule_of_validation(ingestor, bad: FeedbackEvent, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        await ingestor.submit([bad])
    assert [v.field for v in err.value.violations] == [field]


async def test_batch_size_limit(store) -> None:
    small = FeedbackIngestor(store, Scrubber(), FeedbackLimits(max_events_per_batch=2), bases=BASES)
    with pytest.raises(InvalidArgument) as err:
        await small.submit([event("a"), event("b"), event("c")])
    assert err.value.violations[0].field == "events"


async def test_text_is_scrubbed_before_storage_and_rules_recorded(ingestor, pool) -> None:
    result = await ingestor.submit([
        event("e1", prompt="I am bob@example.com, call +1 555 123 4567", response="Noted, 10.1.2.3"),
        event("e2", FeedbackKind.CORRECTION, correction="card 4111 1111 1111 1111",
              messages=(Turn("user", "mail me: eve@example.org"),)),
        event("e3"),
    ])
    assert dict(result.scrubbed) == {"email": 2, "phone": 1, "ipv4": 1, "card": 1}
    rows = {r["client_event_id"]: r for r in await pool.fetch("SELECT * FROM feedback_events")}
    assert rows["e1"]["prompt"] == "I am [EMAIL], call [PHONE]"
    assert rows["e1"]["response"] == "Noted, [IP]"
    assert sorted(rows["e1"]["scrubbed_rules"]) == ["email", "ipv4", "phone"]
    assert rows["e2"]["correction"] == "card [CARD]"
    assert "[EMAIL]" in rows["e2"]["messages"] and "eve@" not in rows["e2"]["messages"]
    assert rows["e3"]["scrubbed_rules"] == []
    dump = " ".join(str(dict(r)) for r in rows.values())
    for secret in ("bob@", "555 123", "10.1.2.3", "4111", "eve@"):
        assert secret not in dump


async def test_forgetting_a_user_deletes_and_refuses_resends(ingestor, store, pool) -> None:
    await ingestor.submit([event("a1", user="alice"), event("a2", user="alice"), event("b1", user="bob")])
    assert (await store.delete_user("alice")).events == 2
    assert await ids(pool) == ["b1"]
    resend = await ingestor.submit([
        event("a1", user="alice"), event("a3", user="alice", age=timedelta(0)), event("b2", user="bob"),
    ])
    assert (resend.stored, resend.forgotten, resend.duplicates) == (1, 2, 0)
    assert await ids(pool) == ["b1", "b2"]
    # An event stamped after the erasure (NOW is the session's start, so measure from the clock).
    after_erasure = NOW - datetime.now(UTC) - timedelta(minutes=1)
    later = await ingestor.submit([event("a4", user="alice", age=after_erasure)])
    assert later.stored == 1
    stored_hashes = [r["user_hash"] for r in await pool.fetch("SELECT user_hash FROM feedback_erasures")]
    assert len(stored_hashes) == 1 and "alice" not in stored_hashes[0]
    assert (await store.delete_user("alice")).events == 1  # a4


async def _batches(*batches: Sequence[FeedbackEvent]) -> AsyncIterator[Sequence[FeedbackEvent]]:
    for batch in batches:
        yield batch


async def test_stream_commits_message_by_message_and_reports_progress_on_error(ingestor, pool) -> None:
    good = [[event(f"m{m}-{i}") for i in range(50)] for m in range(3)]
    bad = [event("m3-0"), event("m3-1", FeedbackKind.RATING, rating=0)]
    with pytest.raises(InvalidArgument) as err:
        await ingestor.stream(_batches(*good, bad, [event("m4-0")]))
    assert err.value.metadata["committed_messages"] == "3"
    assert err.value.metadata["stored"] == "150"
    assert err.value.violations[0].field == "events[1].rating"
    assert len(await ids(pool)) == 150

    total = await ingestor.stream(_batches(*good, [event("m3-0")]))
    assert (total.stored, total.duplicates, total.messages) == (1, 150, 4)


async def test_stats_count_by_kind_and_window_with_ratios_per_adapter(ingestor, store) -> None:
    await ingestor.submit([
        event("1", FeedbackKind.THUMBS_UP, adapter_version="1.0.0"),
        event("2", FeedbackKind.THUMBS_DOWN, adapter_version="1.0.0"),
        event("3", FeedbackKind.RATING, rating=5, adapter_version="1.0.0"),
        event("4", FeedbackKind.RATING, rating=3, adapter_version="1.0.0"),
        event("5", FeedbackKind.THUMBS_DOWN, adapter_version="2.0.0"),
        event("6", FeedbackKind.COPY, adapter_version="2.0.0"),
        event("old", FeedbackKind.THUMBS_UP, adapter_version="2.0.0", age=timedelta(days=30)),
    ])
    stats = await store.stats(start=NOW - timedelta(days=7), end=NOW, adapter_version="", tenant_id="",
                              rating_positive_min=4, rating_negative_max=2)
    assert dict(stats.by_kind) == {
        FeedbackKind.THUMBS_UP: 1, FeedbackKind.THUMBS_DOWN: 2, FeedbackKind.RATING: 2, FeedbackKind.COPY: 1,
    }
    assert stats.total == 6
    by_adapter = {a.adapter_version: a for a in stats.by_adapter}
    assert (by_adapter["1.0.0"].positive, by_adapter["1.0.0"].negative) == (2, 1)
    assert by_adapter["1.0.0"].positive_ratio == pytest.approx(2 / 3)
    assert (by_adapter["2.0.0"].positive, by_adapter["2.0.0"].negative, by_adapter["2.0.0"].positive_ratio) == (0, 1, 0)
    only = await store.stats(start=NOW - timedelta(days=60), end=NOW, adapter_version="2.0.0", tenant_id="",
                             rating_positive_min=4, rating_negative_max=2)
    assert only.total == 3 and [a.adapter_version for a in only.by_adapter] == ["2.0.0"]


async def test_texts_with_copy_special_characters_are_stored_exactly(ingestor, pool) -> None:
    tricky = "a\\N b\\ c\td\ne\r\nf \\\\N \"q\" é 日本"
    result = await ingestor.submit([
        event("plain"),
        event("tricky", FeedbackKind.CORRECTION, prompt=tricky, response="\\N", correction=tricky,
              labels=(("k\\t", "v\n"),), interaction_id="i\\d"),
        event("msgs", messages=(Turn("user", tricky),), response=tricky),
        event("back\\slash", user="u\\1", adapter_version="v\\N"),
    ])
    assert result.stored == 4
    rows = {r["client_event_id"]: r for r in await pool.fetch("SELECT * FROM feedback_events")}
    tricky_row = rows["tricky"]
    assert (tricky_row["prompt"], tricky_row["response"], tricky_row["correction"]) == (tricky, "\\N", tricky)
    assert rows["tricky"]["interaction_id"] == "i\\d"
    assert json.loads(rows["tricky"]["labels"]) == {"k\\t": "v\n"}
    assert json.loads(rows["msgs"]["messages"]) == [{"role": "user", "content": tricky}]
    assert rows["msgs"]["prompt"] is None and rows["msgs"]["correction"] is None
    assert (rows["back\\slash"]["user_id"], rows["back\\slash"]["adapter_version"]) == ("u\\1", "v\\N")
    assert rows["plain"]["rating"] is None and rows["plain"]["dwell_seconds"] is None
    assert rows["plain"]["event_time"] == NOW - timedelta(hours=1)


async def test_ratings_dwell_times_and_event_times_are_stored_exactly(store, pool) -> None:
    when = datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)
    ingestor = FeedbackIngestor(store, Scrubber(), bases=BASES, clock=lambda: when + timedelta(seconds=1))
    await ingestor.submit([
        event("r", FeedbackKind.RATING, rating=4, age=NOW - when),
        event("d", FeedbackKind.DWELL_TIME, dwell_seconds=0.1 + 0.2, age=NOW - when),
        FeedbackEvent("n", FeedbackKind.COPY, interaction_ref="r", user_id="u"),  # no time: the time received
    ])
    rows = {r["client_event_id"]: r for r in await pool.fetch("SELECT * FROM feedback_events")}
    assert rows["r"]["rating"] == 4 and rows["r"]["event_time"] == when
    assert rows["d"]["dwell_seconds"] == 0.1 + 0.2  # the float, bit for bit
    assert rows["n"]["event_time"] == rows["n"]["received_time"] == when + timedelta(seconds=1)
    assert rows["n"]["has_content"] is False and rows["n"]["interaction_id"] == "r"


def test_copy_layout_escapes_exactly_the_texts_that_need_it() -> None:
    def escape(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")

    def text(v) -> str:  # the plain reference: every field converted and escaped
        if isinstance(v, bool):
            return "t" if v else "f"
        if isinstance(v, datetime):
            return v.isoformat()
        if isinstance(v, list):
            return "{" + ",".join(v) + "}"
        return v if isinstance(v, str) else repr(v) if isinstance(v, float) else str(v)

    events = [
        event("plain"), event("multi", response="line 1\nline 2\ttab\r"), event("slash\\id", prompt="C:\\New"),
        event("null-like", response="\\N", labels=(("k\\", "v\n"),)), event("mail", prompt="a@b.io\nnext"),
        event("r", FeedbackKind.RATING, rating=5), event("d", FeedbackKind.DWELL_TIME, dwell_seconds=0.1 + 0.2),
        FeedbackEvent("ref", FeedbackKind.COPY, interaction_ref="i\t1", user_id="u"),
    ]
    records, _ = to_records(events, Scrubber(), NOW, BASES)
    expected = "".join("\t".join("\\N" if v is None else escape(text(v)) for v in r) + "\n" for r in records)
    assert encode_rows(records).data.decode() == expected
