"""FeedbackService against a real in-process server and real PostgreSQL: RPCs, bad input, the
PostgreSQL-restart fault, and training jobs (SFT and KTO) built from feedback, end to end."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest

from engine.stores import postgres
from engine.stores.feedback_store import PostgresFeedbackStore
from learning.v1 import common_pb2 as common
from learning.v1 import feedback_pb2 as fb
from learning.v1 import feedback_pb2_grpc as fb_grpc
from learning.v1 import fisher_pb2 as fisher_pb
from learning.v1 import fisher_pb2_grpc as fisher_grpc
from learning.v1 import training_pb2 as pb
from server.errors import ErrorInterceptor
from server.services.feedback import build_feedback_service, feedback_ingestor
from server.settings import Settings
from tests.fixtures.own_postgres import start_postgres as _start_postgres
from tests.fixtures.own_postgres import stop_postgres as _stop_postgres
from tests.server.conftest import error_details, watch_all

CAPITALS = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"),
            ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Peru", "Lima"), ("Kenya", "Nairobi")]


def ev(event_id: str, kind: int = fb.FEEDBACK_KIND_THUMBS_UP, *, prompt: str = "Q? ", response: str = "A",
       user: str = "u1", minutes_ago: int = 5, **fields) -> fb.FeedbackEvent:
    time = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    msg = fb.FeedbackEvent(client_event_id=event_id, kind=kind, user_id=user, tenant_id="t", **fields)
    msg.time.FromDatetime(time)
    if "interaction_ref" not in fields:
        msg.interaction.CopyFrom(fb.Interaction(prompt=prompt, response=response))
    return msg


def feedback(client) -> fb_grpc.FeedbackServiceStub:
    return fb_grpc.FeedbackServiceStub(client.channel)


async def test_submit_stats_and_forget_through_grpc(client) -> None:
    stub = feedback(client)
    events = [
        ev("1", adapter_version="1.0.0", prompt="mail me at ann@example.com", user="ann"),
        ev("2", fb.FEEDBACK_KIND_THUMBS_DOWN, adapter_version="1.0.0", user="ann"),
        ev("3", fb.FEEDBACK_KIND_RATING, rating=5, adapter_version="1.0.0", user="bob"),
        ev("4", fb.FEEDBACK_KIND_DWELL_TIME, dwell_seconds=12.5, user="bob"),
    ]
    first = await stub.SubmitFeedback(fb.SubmitFeedbackRequest(events=events))
    assert (first.stored, first.duplicates, dict(first.scrubbed)) == (4, 0, {"email": 1})
    again = await stub.SubmitFeedback(fb.SubmitFeedbackRequest(events=events))
    assert (again.stored, again.duplicates) == (0, 4)

    stats = await stub.GetFeedbackStats(fb.GetFeedbackStatsRequest())
    assert stats.total == 4
    assert {c.kind: c.count for c in stats.by_kind} == {
        fb.FEEDBACK_KIND_THUMBS_UP: 1, fb.FEEDBACK_KIND_THUMBS_DOWN: 1, fb.FEEDBACK_KIND_RATING: 1,
        fb.FEEDBACK_KIND_DWELL_TIME: 1,
    }
    v1 = next(a for a in stats.by_adapter if a.adapter_version == "1.0.0")
    assert (v1.positive, v1.negative) == (2, 1) and v1.positive_ratio == pytest.approx(2 / 3)
    assert stats.end_time.ToDatetime() - stats.start_time.ToDatetime() == timedelta(days=7)

    recent = fb.GetFeedbackStatsRequest()
    recent.start_time.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    assert (await stub.GetFeedbackStats(recent)).total == 0  # the events are 5 minutes old

    deleted = await stub.DeleteUserFeedback(fb.DeleteUserFeedbackRequest(user_id="ann"))
    assert deleted.deleted == 2
    resent = await stub.SubmitFeedback(fb.SubmitFeedbackRequest(events=events[:2]))
    assert (resent.stored, resent.forgotten) == (0, 2)
    assert (await stub.GetFeedbackStats(fb.GetFeedbackStatsRequest())).total == 2


async def test_bad_events_are_invalid_argument_naming_each_index(client) -> None:
    stub = feedback(client)
    batch = [ev("ok"), ev("rating", fb.FEEDBACK_KIND_RATING, rating=9), ev("kind", 42),
             ev("big", prompt="x" * 40_000)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SubmitFeedback(fb.SubmitFeedbackRequest(events=batch))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = error_details(err.value)
    assert info.reason == "INVALID_FEEDBACK" and info.metadata["first_invalid_index"] == "1"
    assert [f for f, _ in violations] == ["events[1].rating", "events[2].kind", "events[3].interaction.prompt"]
    assert (await stub.GetFeedbackStats(fb.GetFeedbackStatsRequest())).total == 0  # "ok" was not stored either

    with pytest.raises(grpc.aio.AioRpcError) as bad_user:
        await stub.DeleteUserFeedback(fb.DeleteUserFeedbackRequest(user_id=""))
    assert error_details(bad_user.value)[0].reason == "INVALID_USER_ID"


async def test_stream_acknowledges_messages_and_reports_progress_on_bad_input(client) -> None:
    stub = feedback(client)

    async def messages(count: int, bad_at: int | None = None):
        for m in range(count):
            events = [ev(f"s{m}-{i}") for i in range(100)]
            if m == bad_at:
                events[7] = ev("bad", fb.FEEDBACK_KIND_UNSPECIFIED)
            yield fb.StreamFeedbackRequest(events=events)

    done = await stub.StreamFeedback(messages(5))
    assert (done.stored, done.duplicates, done.messages) == (500, 0, 5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.StreamFeedback(messages(8, bad_at=6))
    info, violations = error_details(err.value)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations[0][0] == "events[7].kind"
    assert (info.metadata["committed_messages"], info.metadata["stored"], info.metadata["duplicates"]) == (
        "6", "100", "500")


async def test_stream_prepared_in_worker_processes_keeps_order_scrubbing_and_progress(
    database_url: str, tmp_path: Path
) -> None:
    pool = await postgres.connect(database_url, max_size=4)
    await postgres.migrate(pool)
    settings = Settings(data_dir=tmp_path, feedback_ingest_processes=2,
                        feedback_scrub_patterns={"ticket": r"\bTCK-\d{6}\b"})
    store = PostgresFeedbackStore(pool)
    service = build_feedback_service(settings, feedback_ingestor(settings, store), store)
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    fb_grpc.add_FeedbackServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = fb_grpc.FeedbackServiceStub(channel)

    async def messages(count: int, bad_at: int | None = None):
        for m in range(count):
            events = [ev(f"w{m}-{i:02d}") for i in range(100)]
            events[0] = ev(f"w{m}-00", prompt=f"I am w{m}@example.com, see TCK-{m:06d}")
            if m == bad_at:
                events[7] = ev("bad", fb.FEEDBACK_KIND_RATING, rating=6)
            yield fb.StreamFeedbackRequest(events=events)

    try:
        done = await stub.StreamFeedback(messages(5))
        assert (done.stored, done.duplicates, done.messages) == (500, 0, 5)
        assert dict(done.scrubbed) == {"email": 5, "ticket": 5}
        prompt = await pool.fetchval("SELECT prompt FROM feedback_events WHERE client_event_id = 'w3-00'")
        assert prompt == "I am [EMAIL], see [TICKET]"

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.StreamFeedback(messages(9, bad_at=6))
        info, violations = error_details(err.value)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations[0][0] == "events[7].rating"
        assert (info.metadata["committed_messages"], info.metadata["stored"], info.metadata["duplicates"]) == (
            "6", "100", "500")
        assert await pool.fetchval("SELECT count(*) FROM feedback_events") == 600  # nothing after the bad message

        for pid in service.workers.pids():  # a worker dies: streams fail UNAVAILABLE until a new pool serves
            os.kill(pid, signal.SIGKILL)
        for _ in range(20):
            try:
                done = await stub.StreamFeedback(messages(9))
                break
            except grpc.aio.AioRpcError as failed:
                assert failed.code() == grpc.StatusCode.UNAVAILABLE
                assert error_details(failed)[0].reason == "FEEDBACK_WORKER_FAILED"
                await asyncio.sleep(0.1)
        assert (done.stored, done.duplicates) == (300, 600)  # the rest, exactly once

        big = [ev(f"k-{i:04d}") for i in range(5000)]

        async def dying():  # a worker dies while it prepares a message
            yield fb.StreamFeedbackRequest(events=big)
            await asyncio.sleep(0.02)
            for pid in service.workers.pids():
                os.kill(pid, signal.SIGKILL)
            yield fb.StreamFeedbackRequest(events=[ev("k-last")])

        try:
            await stub.StreamFeedback(dying())
        except grpc.aio.AioRpcError as failed:  # unless the message was done before the kill
            info, _ = error_details(failed)
            assert (failed.code(), info.reason) == (grpc.StatusCode.UNAVAILABLE, "FEEDBACK_WORKER_FAILED")
            stored = await pool.fetchval("SELECT count(*) FROM feedback_events WHERE client_event_id LIKE 'k-%'")
            assert int(info.metadata["stored"]) == stored
        async def resend():
            yield fb.StreamFeedbackRequest(events=big)
            yield fb.StreamFeedbackRequest(events=[ev("k-last")])

        await stub.StreamFeedback(resend())
        assert await pool.fetchval("SELECT count(*) FROM feedback_events WHERE client_event_id LIKE 'k-%'") == 5001
    finally:
        await channel.close()
        await server.stop(0)
        service.close()
        await pool.close()


# ---- PostgreSQL restarting under a stream -----------------------------------------------------------------


async def _count(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch("SELECT client_event_id FROM feedback_events ORDER BY 1")]
    finally:
        await conn.close()


async def test_postgres_restart_mid_stream_is_unavailable_and_acknowledged_events_are_exactly_stored(
    own_postgres, tmp_path: Path
) -> None:
    pgdata, url = own_postgres
    pool = await postgres.connect(url, max_size=4)
    await postgres.migrate(pool)
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    fb_grpc.add_FeedbackServiceServicer_to_server(
        _feedback_service(Settings(data_dir=tmp_path), PostgresFeedbackStore(pool)), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = fb_grpc.FeedbackServiceStub(channel)
    per = 200
    batches = [[ev(f"b{m}-{i:03d}") for i in range(per)] for m in range(5)]
    try:
        async def messages():
            for m, events in enumerate(batches):
                if m == 3:  # three messages are in; wait until they are stored, then take the database down
                    for _ in range(200):
                        if len(await _count(url)) == 3 * per:
                            break
                        await asyncio.sleep(0.05)
                    await _stop_postgres(pgdata)
                yield fb.StreamFeedbackRequest(events=events)

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.StreamFeedback(messages())
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        info, _ = error_details(err.value)
        assert info.reason == "DATABASE_UNAVAILABLE"
        assert info.metadata["committed_messages"] == "3" and info.metadata["stored"] == str(3 * per)

        assert await _start_postgres(pgdata) == url
        acknowledged = sorted(e.client_event_id for batch in batches[:3] for e in batch)
        assert await _count(url) == acknowledged  # no loss, nothing unacknowledged

        async def resend():
            for events in batches:
                yield fb.StreamFeedbackRequest(events=events)

        for _ in range(50):  # the pool reconnects on its own once the server is back
            try:
                again = await stub.StreamFeedback(resend())
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                await asyncio.sleep(0.1)
        assert (again.stored, again.duplicates) == (2 * per, 3 * per)
        stored = await _count(url)
        assert len(stored) == len(set(stored)) == 5 * per
    finally:
        await channel.close()
        await server.stop(0)
        await pool.close()


# ---- training from feedback, end to end ------------------------------------------------------------------


async def _seed_capitals(client) -> None:
    events = []
    for n, (country, capital) in enumerate(CAPITALS):
        prompt = f"What is the capital of {country}? "
        events.append(ev(f"up{n}", prompt=prompt, response=f"The capital of {country} is {capital}.",
                         minutes_ago=60 - n))
        events.append(ev(f"down{n}", fb.FEEDBACK_KIND_THUMBS_DOWN, prompt=f"Name the capital of {country}. ",
                         response="I do not know.", minutes_ago=50 - n))
    events.append(ev("fix", fb.FEEDBACK_KIND_CORRECTION, prompt="Capital of Chile? ", response="Lima.",
                     correction="The capital of Chile is Santiago."))
    events.append(ev("dup", prompt="what is the capital of FRANCE?", response="Paris."))  # near-duplicate prompt
    result = await feedback(client).SubmitFeedback(fb.SubmitFeedbackRequest(events=events))
    assert result.stored == len(events)


def _feedback_spec(objective: int, **dataset) -> pb.TrainingJobSpec:
    return pb.TrainingJobSpec(
        feedback=common.FeedbackDataset(**dataset),
        objective=objective,
        hyperparameters=pb.Hyperparameters(epochs=2, batch_size=4, learning_rate=5e-3, max_seq_length=96, seed=3),
    )


@pytest.mark.parametrize("objective", [pb.OBJECTIVE_SFT, pb.OBJECTIVE_KTO], ids=["sft", "kto"])
async def test_training_job_from_feedback_runs_end_to_end(client, objective: int) -> None:
    await _seed_capitals(client)
    created = await client.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=_feedback_spec(objective, days=1, min_samples=9))
    )
    messages = await watch_all(client.training, created.training_job.name)
    states = [m.event.state_change.state for m in messages[1:] if m.event.HasField("state_change")]
    assert states[-1] == common.JOB_STATE_SUCCEEDED, [m.event for m in messages if m.event.HasField("error")]
    steps = [m.event.step_metrics for m in messages[1:] if m.event.HasField("step_metrics")]
    warnings = {m.event.warning.code for m in messages[1:] if m.event.HasField("warning")}
    job = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=created.training_job.name))).training_job
    summary = job.dataset
    if objective == pb.OBJECTIVE_SFT:  # the thumbs-down answers are never imitated
        assert dict(summary.composition) == {"thumbs_up": 8, "correction": 1}
        assert "KTO_WEIGHTS_UNBALANCED" not in warnings
    else:
        # thumbs up at 2.0 and a correction at 1.0 against thumbs down and a corrected answer at 0.5: far outside
        # the KTO paper's [1, 4/3], which TRL warns about too
        assert "KTO_WEIGHTS_UNBALANCED" in warnings
        assert dict(summary.composition) == {"thumbs_up": 8, "thumbs_down": 8, "correction": 1, "corrected": 1}
        # Step 1 starts with policy == reference (LoRA B = 0), so r = z0 = 0 and each example's loss is exactly
        # lambda * (1 - sigmoid(0)) with lambda in {2, 1, 0.5}: the batch mean is a multiple of 1/16.
        first = steps[0].task_loss * 16
        assert 4 <= first <= 16 and first == pytest.approx(round(first), abs=1e-4)
    assert summary.example_count == sum(summary.composition.values())
    assert len(summary.digest) == 64
    window = summary.window_end.ToDatetime() - summary.window_start.ToDatetime()
    assert window == timedelta(days=1)
    assert len(steps) == 2 * ((summary.example_count + 3) // 4)
    assert job.output_adapter_version


async def _run(client, spec: pb.TrainingJobSpec) -> tuple[pb.TrainingJob, dict[str, str]]:
    """Create and follow a training job: the finished job, and its notices and warnings by code."""
    created = await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec))
    messages = await watch_all(client.training, created.training_job.name)
    warnings = {m.event.warning.code: m.event.warning.message for m in messages[1:] if m.event.HasField("warning")}
    warnings |= {m.event.notice.code: m.event.notice.message for m in messages[1:] if m.event.HasField("notice")}
    job = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=created.training_job.name))).training_job
    assert job.state == common.JOB_STATE_SUCCEEDED, job.error
    return job, warnings


@pytest.mark.slow
async def test_continual_update_from_feedback_anchors_to_the_parents_feedback_without_forgotten_users(client):
    """The weekly loop: v1.0 from feedback, a user forgotten, then v1.1 from feedback with EWC (its Fisher on
    v1.0's feedback, rebuilt) and replay, under the KTO objective."""
    await _seed_capitals(client)
    carol = ev("carol-1", prompt="Who wrote Hamlet? ", response="Shakespeare wrote Hamlet.", user="carol",
               minutes_ago=30)
    assert (await feedback(client).SubmitFeedback(fb.SubmitFeedbackRequest(events=[carol]))).stored == 1
    v10, _ = await _run(client, _feedback_spec(pb.OBJECTIVE_SFT, days=1, min_samples=10))
    assert v10.output_adapter_version == "v1.0" and v10.dataset.example_count == 10
    forgotten = await feedback(client).DeleteUserFeedback(fb.DeleteUserFeedbackRequest(user_id="carol"))
    assert forgotten.deleted == 1

    spec = _feedback_spec(pb.OBJECTIVE_KTO, days=1, min_samples=10)
    spec.parent_adapter_version = "v1.0"
    spec.ewc.replay_fraction = 0.5
    v11, warnings = await _run(client, spec)
    assert v11.output_adapter_version == "v1.1" and v11.ewc_lineage.parent_adapter_version == "v1.0"
    # v1.0's data is rebuilt from the feedback stored now: carol's example is gone from its Fisher and replay,
    # which take its 9 wanted answers (8 thumbs up, 1 correction).
    assert "9 examples now against the 10 v1.0 was trained on" in warnings["PARENT_DATASET_REBUILT"]
    assert "9 examples now" in warnings["REPLAY_DATASET_REBUILT"]
    assert "(9 samples)" in warnings["FISHER_COMPUTED_AUTOMATICALLY"]
    assert "mixed 9 examples of earlier versions' datasets into the 18 new ones" in warnings["REPLAY_MIXED"]
    fisher = fisher_grpc.FisherServiceStub(client.channel)
    snapshot = (await fisher.GetFisherSnapshot(
        fisher_pb.GetFisherSnapshotRequest(name=v11.ewc_lineage.fisher_snapshot))).fisher_snapshot
    assert (snapshot.adapter_version, snapshot.sample_count) == ("v1.0", 9)
    # KTO over the new examples plus the replayed ones, each replayed example a desirable target.
    assert v11.dataset.example_count == 18

    # A Fisher job on feedback measures the wanted answers found now.
    spec = fisher_pb.FisherJobSpec(adapter_version="v1.1", feedback=common.FeedbackDataset(days=1, min_samples=5))
    job = (await fisher.CreateFisherJob(fisher_pb.CreateFisherJobRequest(spec=spec))).fisher_job
    assert (job.spec.feedback.days, job.spec.feedback.min_samples, job.spec.feedback.thumbs_up_weight) == (1, 5, 2.0)
    [m async for m in fisher.WatchFisherJob(fisher_pb.WatchFisherJobRequest(name=job.name))]
    done = (await fisher.GetFisherJob(fisher_pb.GetFisherJobRequest(name=job.name))).fisher_job
    assert done.state == common.JOB_STATE_SUCCEEDED, done.error
    measured = (await fisher.GetFisherSnapshot(
        fisher_pb.GetFisherSnapshotRequest(name=done.output_snapshot))).fisher_snapshot
    assert (measured.adapter_version, measured.sample_count) == ("v1.1", 9)
    too_few = fisher_pb.FisherJobSpec(adapter_version="v1.1", feedback=common.FeedbackDataset(days=1))
    with pytest.raises(grpc.aio.AioRpcError) as err:  # min_samples 100 by default, as for training
        await fisher.CreateFisherJob(fisher_pb.CreateFisherJobRequest(spec=too_few))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(err.value)[0].reason == "FEEDBACK_DATASET_TOO_SMALL"


async def test_a_parent_whose_feedback_is_all_forgotten_fails_its_child_and_rejected_answers_are_not_measured(
    client,
):
    events = [ev(f"dave-{n}", prompt=f"Who wrote book {n}? ", response=f"Author {n} did.", user="dave")
              for n in range(3)]
    events += [ev(f"frank-{n}", fb.FEEDBACK_KIND_THUMBS_DOWN, prompt=f"Who painted picture {n}? ",
                  response="Nobody.", user="frank") for n in range(3)]
    assert (await feedback(client).SubmitFeedback(fb.SubmitFeedbackRequest(events=events))).stored == 6
    # KTO, which trains on the rejected answers too (SFT never imitates them)
    v10, _ = await _run(client, _feedback_spec(pb.OBJECTIVE_KTO, days=1, min_samples=3))
    child = pb.TrainingJobSpec(jsonl=common.JsonlDataset(path="capitals.jsonl"), parent_adapter_version="v1.0",
                               hyperparameters=pb.Hyperparameters(epochs=1, batch_size=4, max_seq_length=96))

    async def child_fails_with(message: str) -> None:
        created = await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=child))
        await watch_all(client.training, created.training_job.name)
        job = (await client.training.GetTrainingJob(
            pb.GetTrainingJobRequest(name=created.training_job.name))).training_job
        assert job.state == common.JOB_STATE_FAILED
        assert job.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] and message in job.error.message

    # Continuing from v1.0 with EWC needs what v1.0 should keep doing. Its wanted answers were dave's: once he
    # is forgotten only rejected answers are left, then, with frank forgotten too, nothing. The job fails, saying so.
    assert (await feedback(client).DeleteUserFeedback(fb.DeleteUserFeedbackRequest(user_id="dave"))).deleted == 3
    await child_fails_with("no wanted answer (thumbs up, high rating, correction) is left of the feedback v1.0")
    assert (await feedback(client).DeleteUserFeedback(fb.DeleteUserFeedbackRequest(user_id="frank"))).deleted == 3
    await child_fails_with("none of the feedback v1.0 was trained on is left")

    # Feedback that holds only rejected answers gives a Fisher job nothing to measure.
    rejected = [ev(f"erin-{n}", fb.FEEDBACK_KIND_THUMBS_DOWN, prompt=f"Q{n}? ", response="No.", user="erin")
                for n in range(3)]
    await feedback(client).SubmitFeedback(fb.SubmitFeedbackRequest(events=rejected))
    spec = fisher_pb.FisherJobSpec(adapter_version=v10.output_adapter_version,
                                   feedback=common.FeedbackDataset(days=1, min_samples=1))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fisher_grpc.FisherServiceStub(client.channel).CreateFisherJob(
            fisher_pb.CreateFisherJobRequest(spec=spec))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # a rejected answer is no example of SFT's
    assert error_details(err.value)[0].reason == "FEEDBACK_DATASET_EMPTY"


async def test_too_little_feedback_fails_the_create_call_stating_the_count(client) -> None:
    await _seed_capitals(client)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=_feedback_spec(pb.OBJECTIVE_SFT)))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = error_details(err.value)
    assert info.reason == "FEEDBACK_DATASET_TOO_SMALL" and info.metadata["found"] == "9"
    assert "found 9 usable feedback examples" in err.value.details() and "min_samples=100" in err.value.details()
    forced = await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(
        spec=_feedback_spec(pb.OBJECTIVE_SFT, force=True), validate_only=True))
    assert forced.training_job.spec.feedback.force

    with pytest.raises(grpc.aio.AioRpcError) as kto_jsonl:
        await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=pb.TrainingJobSpec(
            jsonl=common.JsonlDataset(path="capitals.jsonl"), objective=pb.OBJECTIVE_KTO)))
    assert error_details(kto_jsonl.value)[0].reason == "KTO_NEEDS_FEEDBACK"


def _feedback_service(settings: Settings, store: PostgresFeedbackStore):
    return build_feedback_service(settings, feedback_ingestor(settings, store), store)
