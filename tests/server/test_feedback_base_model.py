"""Feedback attributed to a base model, on a real server and PostgreSQL: an event's base model is the one it names,
else the base of a serving name in adapter_version, else the server's default; an unknown one is INVALID_ARGUMENT
naming the field (streamed or not); and what reads feedback for a base model (GetFeedbackStats' filter, a training
job's window, a pipeline's feedback trigger, the drift report's prompts and buckets) reads only its own events and
those that recorded none (stored before events had a base model)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest

from engine.stores import postgres
from engine.stores.drift_store import PostgresDriftSource
from learning.v1 import common_pb2 as common
from learning.v1 import feedback_pb2 as fb
from learning.v1 import feedback_pb2_grpc as fb_grpc
from learning.v1 import pipeline_pb2 as pp
from learning.v1 import pipeline_pb2_grpc as pp_grpc
from learning.v1 import training_pb2 as pb
from tests.server.conftest import TINY, error_details

OTHER = "other-llm"  # a second base model the server knows (sharing the database with TINY, the default)


@pytest.fixture
async def server(make_server, tiny_model_dir: Path):
    return await make_server(base_models={TINY: tiny_model_dir, OTHER: tiny_model_dir})


def ev(event_id: str, kind: int = fb.FEEDBACK_KIND_THUMBS_UP, *, prompt: str = "", **fields) -> fb.FeedbackEvent:
    msg = fb.FeedbackEvent(client_event_id=event_id, kind=kind, user_id="u1", **fields)
    msg.interaction.CopyFrom(fb.Interaction(prompt=prompt or f"Question {event_id}?", response=f"Answer {event_id}."))
    msg.time.FromDatetime(datetime.now(UTC) - timedelta(minutes=5))
    return msg


def stub(client) -> fb_grpc.FeedbackServiceStub:
    return fb_grpc.FeedbackServiceStub(client.channel)


async def bases_stored(database_url: str) -> dict[str, str]:
    conn = await asyncpg.connect(database_url)
    try:
        return {r["client_event_id"]: r["base_model"]
                for r in await conn.fetch("SELECT client_event_id, base_model FROM feedback_events")}
    finally:
        await conn.close()


async def unrecord(database_url: str, *event_ids: str) -> None:
    """Make events look stored before migration 0020: no base model recorded."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE feedback_events SET base_model = '' WHERE client_event_id = ANY($1::text[])",
                           list(event_ids))
    finally:
        await conn.close()


async def test_named_derived_and_default_base_models_are_stored_and_filter_the_stats(server, database_url):
    events = [
        ev("named", base_model=OTHER),
        ev("served", adapter_version=f"{OTHER}@v1.0"),  # a serving name: its base
        ev("session", adapter_version=f"{OTHER}@my-session"),  # an online session's live name
        ev("plain", adapter_version="v1.0"),  # not a serving name: the default
        ev("none"),
        ev("both", base_model=TINY, adapter_version=f"{TINY}@v1.1"),
        ev("opaque", base_model=OTHER, adapter_version="team@build-7"),  # '@' but no known base: as sent
    ]
    assert (await stub(server).SubmitFeedback(fb.SubmitFeedbackRequest(events=events))).stored == 7
    assert await bases_stored(database_url) == {
        "named": OTHER, "served": OTHER, "session": OTHER, "plain": TINY, "none": TINY, "both": TINY,
        "opaque": OTHER}

    async def total(base_model: str) -> int:
        return (await stub(server).GetFeedbackStats(fb.GetFeedbackStatsRequest(base_model=base_model))).total

    assert (await total(TINY), await total(OTHER), await total("")) == (3, 4, 7)
    await unrecord(database_url, "named")  # stored before base models were: counted for each
    assert (await total(TINY), await total(OTHER), await total("")) == (4, 4, 7)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(server).GetFeedbackStats(fb.GetFeedbackStatsRequest(base_model="nope"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = error_details(err.value)
    assert info.reason == "UNKNOWN_BASE_MODEL" and [f for f, _ in violations] == ["base_model"]


async def test_an_unknown_base_model_rejects_the_batch_naming_the_field(server, database_url):
    batch = [
        ev("ok"),
        ev("unknown", base_model="nope"),
        ev("derived", adapter_version="mystery@v1.0"),
        ev("clash", base_model=TINY, adapter_version=f"{OTHER}@v1.0"),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(server).SubmitFeedback(fb.SubmitFeedbackRequest(events=batch))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = error_details(err.value)
    assert info.reason == "INVALID_FEEDBACK" and info.metadata["first_invalid_index"] == "1"
    assert [f for f, _ in violations] == ["events[1].base_model", "events[2].base_model", "events[3].base_model"]
    described = dict(violations)
    assert "'nope' is not a base model of this server" in described["events[1].base_model"]
    assert OTHER in described["events[1].base_model"] and TINY in described["events[1].base_model"]
    assert "names base model 'mystery'" in described["events[2].base_model"]
    assert f"serving name of base model {OTHER!r}" in described["events[3].base_model"]
    assert await bases_stored(database_url) == {}  # all or nothing

    async def messages():
        yield fb.StreamFeedbackRequest(events=[ev("s0", base_model=OTHER)])
        yield fb.StreamFeedbackRequest(events=[ev("s1"), ev("s2", base_model="nope")])

    with pytest.raises(grpc.aio.AioRpcError) as streamed:
        await stub(server).StreamFeedback(messages())
    assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = error_details(streamed.value)
    assert [f for f, _ in violations] == ["events[1].base_model"] and info.metadata["committed_messages"] == "1"
    assert await bases_stored(database_url) == {"s0": OTHER}


async def test_a_training_window_reads_its_base_models_feedback(server, database_url):
    mine = [ev(f"tiny-{n}") for n in range(3)]
    theirs = [ev(f"other-{n}", base_model=OTHER) for n in range(5)]
    await stub(server).SubmitFeedback(fb.SubmitFeedbackRequest(events=mine + theirs))

    async def found(base_model: str) -> str:
        spec = pb.TrainingJobSpec(base_model=base_model, feedback=common.FeedbackDataset(days=1, min_samples=100))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await server.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec, validate_only=True))
        info, _ = error_details(err.value)
        assert info.reason == "FEEDBACK_DATASET_TOO_SMALL", err.value.details()
        assert f"base_model={base_model or TINY}" in err.value.details()
        return info.metadata["found"]

    assert (await found(""), await found(TINY), await found(OTHER)) == ("3", "3", "5")
    await unrecord(database_url, "other-0", "other-1")  # stored before base models were: counted for each
    assert (await found(TINY), await found(OTHER)) == ("5", "5")


async def test_a_pipelines_feedback_trigger_counts_its_base_models_feedback(server):
    pipelines = pp_grpc.PipelineServiceStub(server.channel)
    trigger = pp.PipelineTrigger(feedback=pp.FeedbackCountTrigger(count=2, negative_only=True))
    training = pb.TrainingJobSpec(feedback=common.FeedbackDataset(days=1, min_samples=5),
                                  hyperparameters=pb.Hyperparameters(epochs=1, batch_size=4, max_seq_length=64))
    made = (await pipelines.CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="mine", pipeline=pp.Pipeline(training=training, enabled=True, triggers=[trigger])))).pipeline
    assert made.base_model == TINY
    engine = server.app.engine.pipelines

    # Another base model's complaints do not fire this one's trigger.
    await stub(server).SubmitFeedback(fb.SubmitFeedbackRequest(events=[
        *(ev(f"other-down-{n}", fb.FEEDBACK_KIND_THUMBS_DOWN, base_model=OTHER) for n in range(3)),
        *(ev(f"other-up-{n}", base_model=OTHER) for n in range(3)),
        ev("tiny-up-0"), ev("tiny-up-1"), ev("tiny-down-0", fb.FEEDBACK_KIND_THUMBS_DOWN)]))
    assert await engine.tick() == []

    # Its own second complaint does; the window then holds its own 2 usable examples (the answers voted up; one
    # voted down is no SFT target), not the other's 3 too, which would make the 5 of min_samples.
    await stub(server).SubmitFeedback(fb.SubmitFeedbackRequest(events=[
        ev("tiny-down-1", fb.FEEDBACK_KIND_THUMBS_DOWN, adapter_version=f"{TINY}@v1.0")]))
    decided = await engine.tick()
    assert [(d.fired, d.kind.value, d.count) for d in decided] == [(False, "NEGATIVE_FEEDBACK", 2)], decided
    assert "fewer than min_samples=5" in decided[0].reason


async def test_the_drift_sources_feedback_is_per_base_model(server, database_url):
    await stub(server).SubmitFeedback(fb.SubmitFeedbackRequest(events=[
        ev("t-up", prompt="How do I bake bread?"), ev("t-down", fb.FEEDBACK_KIND_THUMBS_DOWN, prompt="Knead how?"),
        ev("o-up", base_model=OTHER, prompt="How do I sort a list in Python?"),
        ev("o-rate", fb.FEEDBACK_KIND_RATING, rating=1, base_model=OTHER, prompt="What is a monad?")]))
    pool = await postgres.connect(database_url, max_size=1)
    try:
        source = PostgresDriftSource(pool)
        end = datetime.now(UTC)
        start = end - timedelta(hours=1)

        async def seen(base_model: str) -> tuple[set[str], tuple[int, int]]:
            incoming = await source.incoming(base_model, start=start, end=end, limit=10)
            [bucket] = await source.feedback_buckets(base_model, start=start, end=end, buckets=1,
                                                     rating_positive_min=4, rating_negative_max=2)
            return set(incoming.prompts), (bucket.positive, bucket.negative)

        assert await seen(TINY) == ({"How do I bake bread?", "Knead how?"}, (1, 1))
        assert await seen(OTHER) == ({"How do I sort a list in Python?", "What is a monad?"}, (1, 1))
        await unrecord(database_url, "o-rate")  # stored before base models were: counted for each
        assert await seen(TINY) == ({"How do I bake bread?", "Knead how?", "What is a monad?"}, (1, 2))
        assert await seen(OTHER) == ({"How do I sort a list in Python?", "What is a monad?"}, (1, 1))
    finally:
        await pool.close()


async def test_a_versions_serving_name_and_its_plain_version_are_one_version(server, database_url):
    """Feedback named `<base>@v1.0` and `v1.0` was counted as two versions by the stats and by a feedback dataset's
    filter (the canary's rates merged the two): it is stored as the plain version now, and a filter in either
    spelling reads both; events stored before are rewritten by migration 0034."""
    events = [ev("plain", adapter_version="v1.0"), ev("served", adapter_version=f"{TINY}@v1.0"),
              ev("other", adapter_version=f"{OTHER}@v1.0"), ev("session", adapter_version=f"{TINY}@my-session")]
    await stub(server).SubmitFeedback(fb.SubmitFeedbackRequest(events=events))
    conn = await asyncpg.connect(database_url)
    try:
        stored = {r["client_event_id"]: (r["adapter_version"], r["base_model"]) for r in await conn.fetch(
            "SELECT client_event_id, adapter_version, base_model FROM feedback_events")}
        assert stored == {"plain": ("v1.0", TINY), "served": ("v1.0", TINY), "other": ("v1.0", OTHER),
                          "session": (f"{TINY}@my-session", TINY)}, stored

        async def stats(adapter_version: str, base_model: str = "") -> list[tuple[str, int]]:
            got = await stub(server).GetFeedbackStats(fb.GetFeedbackStatsRequest(
                adapter_version=adapter_version, base_model=base_model))
            return [(a.adapter_version, a.positive) for a in got.by_adapter]

        assert await stats("", TINY) == [(f"{TINY}@my-session", 1), ("v1.0", 2)]
        assert await stats("v1.0", TINY) == await stats(f"{TINY}@v1.0") == [("v1.0", 2)]
        assert await stats(f"{TINY}@v1.0", OTHER) == []  # a version of another base model
        # unfiltered, each base model's v1.0 is a row of its own (stored as one spelling, they would merge)
        every = await stub(server).GetFeedbackStats(fb.GetFeedbackStatsRequest())
        assert [(a.base_model, a.adapter_version, a.positive) for a in every.by_adapter] == [
            (TINY, f"{TINY}@my-session", 1), (OTHER, "v1.0", 1), (TINY, "v1.0", 2)], every.by_adapter

        async def found(adapter_version: str) -> str:
            spec = pb.TrainingJobSpec(base_model=TINY, feedback=common.FeedbackDataset(
                days=1, min_samples=100, adapter_version=adapter_version))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await server.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec, validate_only=True))
            return error_details(err.value)[0].metadata["found"]

        assert (await found("v1.0"), await found(f"{TINY}@v1.0")) == ("2", "2")

        # events stored before: the serving name as sent, and some with no base model recorded
        await conn.execute(
            "UPDATE feedback_events SET adapter_version = $1 || '@v1.0', base_model = CASE client_event_id"
            " WHEN 'served' THEN $1 ELSE '' END WHERE client_event_id IN ('served', 'other')", TINY)
        await conn.execute("UPDATE feedback_events SET base_model = '' WHERE client_event_id = 'session'")
        migration = Path(postgres.__file__).parent / "migrations" / "0034_feedback_plain_versions.sql"
        await conn.execute(migration.read_text())
        stored = {r["client_event_id"]: (r["adapter_version"], r["base_model"]) for r in await conn.fetch(
            "SELECT client_event_id, adapter_version, base_model FROM feedback_events")}
        assert stored == {"plain": ("v1.0", TINY), "served": ("v1.0", TINY), "other": ("v1.0", TINY),
                          "session": (f"{TINY}@my-session", "")}, stored
    finally:
        await conn.close()
