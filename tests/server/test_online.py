"""Online learning through gRPC on the tiny model: 200 examples streamed into a session move its stats, its
updates are served live under <base>@<session> (answers change), a version is published, gated and followed by
the live alias, and one the forgetting-aware gate refuses is not followed (the alias then ends with the session); a
session whose server stops goes on from its checkpoint when a server starts again; bad input gets clear statuses and
never kills a session. What outlives a session (its live alias, its examples until the retention sweep) is tested
in tests/server/test_online_alias.py, what a session learns from the feedback on its live model in
tests/server/test_online_feedback.py."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

import grpc
import pytest

from engine import telemetry
from engine.stores.online_store import PostgresOnlineStore
from learning.v1 import adapter_pb2 as ad
from learning.v1 import adapter_pb2_grpc as ad_grpc
from learning.v1 import common_pb2 as common
from learning.v1 import lora_control_pb2 as lc
from learning.v1 import online_pb2 as ol
from learning.v1 import online_pb2_grpc as ol_grpc
from learning.v1 import training_pb2 as tr
from tests.server.conftest import TINY, error_details, spec, watch_all
from tests.server.lora_helpers import ACTOR, ask, stub, train

FAST = {"online_poll_seconds": 0.05, "online_follow_seconds": 0.1, "online_max_update_share": 1.0}
NAMES = ["Veloria", "Quorvia", "Brinmark", "Dunmoor", "Ostrava", "Kelmir", "Tarsk", "Ulvend", "Mirrowen", "Zethra"]


def online(client) -> ol_grpc.OnlineLearningServiceStub:
    return ol_grpc.OnlineLearningServiceStub(client.channel)


def facts(n: int, start: int = 0) -> list[ol.OnlineExample]:
    return [ol.OnlineExample(prompt=f"Who founded {NAMES[i % 10]} guild {i}?", target=f"Founder number {i}.")
            for i in range(start, start + n)]


async def refused(call) -> tuple[grpc.StatusCode, str, list[tuple[str, str]]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    info, violations = error_details(caught.value)
    return caught.value.code(), info.reason, violations


async def until(check, timeout: float = 120.0, every: float = 0.2):
    """``check()`` once it returns something true (an awaitable), failing after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(every)


async def session(client, name: str) -> ol.OnlineSession:
    return (await online(client).GetOnlineSession(ol.GetOnlineSessionRequest(name=name))).session


@pytest.mark.slow
async def test_streamed_examples_update_the_live_model_publish_a_version_and_move_the_alias(make_pg_server):
    client = await make_pg_server(**FAST)
    sessions = online(client)
    # Nothing active and no start version named: nothing to start from.
    assert (await refused(sessions.CreateOnlineSession(ol.CreateOnlineSessionRequest(spec=ol.OnlineSessionSpec()))))[
        :2] == (grpc.StatusCode.FAILED_PRECONDITION, "ONLINE_NO_START_VERSION")
    start = await train(client)
    await stub(client).ActivateAdapter(lc.ActivateAdapterRequest(version=start), metadata=ACTOR)
    _, before = await ask(client, "active")

    code, reason, violations = await refused(sessions.CreateOnlineSession(ol.CreateOnlineSessionRequest(
        spec=ol.OnlineSessionSpec(learning_rate=2.0))))
    assert (code, reason, violations[0][0]) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ONLINE_SETTING",
                                                "spec.learning_rate")
    made = (await sessions.CreateOnlineSession(ol.CreateOnlineSessionRequest(
        session_id="guilds", spec=ol.OnlineSessionSpec(update_every=10, publish_every=10, checkpoint_every=5,
                                                       learning_rate=5e-3, max_seq_length=64,
                                                       live_alias="guilds-live")))).session
    assert made.name == "onlineSessions/guilds" and made.spec.start_version == start  # the active one
    assert made.live_model == f"{TINY}@guilds" and made.spec.ewc_lambda > 0 and made.spec.replay_fraction == 0.5

    sent = facts(200)
    sent.insert(37, ol.OnlineExample(prompt="   ", target="nothing"))  # refused, counted, the stream goes on

    async def requests():
        yield ol.StreamExamplesRequest(name=made.name)
        for i in range(0, len(sent), 20):
            yield ol.StreamExamplesRequest(examples=sent[i:i + 20])
            await asyncio.sleep(0.05)

    trained_before = telemetry.REGISTRY.get_sample_value("learning_engine_online_updates_total",
                                                         {"outcome": "TRAINED"}) or 0
    answers = [a async for a in sessions.StreamExamples(requests())]
    last = answers[-1]
    assert (last.accepted, last.refused) == (200, 1) and "examples[37]: empty prompt" in last.refusals
    assert last.stats.total_examples == 200 and last.stats.skipped_examples == 1
    updates = [a.stats.total_updates for a in answers]
    assert updates == sorted(updates) and updates[-1] >= 18 and len(set(updates)) > 3, updates
    assert math.isfinite(last.stats.average_loss) and last.stats.enabled

    done = await until(lambda: _published_and_gated(client, made.name))
    assert done.stats.total_updates == 20 and done.stats.total_examples == 200
    # The refused example is also a warning on the session's own events, stored before the last update.
    events = [m.event async for m in _watch_until(client, made.name, lambda e: e.updated.update == 20)]
    assert [e.warning.message.split(";")[0] for e in events if e.warning.code == "EXAMPLES_REFUSED"] == [
        "1 example refused on arrival (1 in all)"], [e.warning for e in events if e.HasField("warning")]
    trained = telemetry.REGISTRY.get_sample_value("learning_engine_online_updates_total", {"outcome": "TRAINED"})
    assert trained - trained_before == 20
    assert telemetry.REGISTRY.get_sample_value("learning_engine_online_loss", {"session": "guilds"}) > 0
    versions = [p.version for p in done.publications]
    assert versions == [f"{start}.1", f"{start}.2"]  # patches of the start version
    assert all(p.first_sequence <= p.last_sequence for p in done.publications)
    record = (await ad_grpc.AdapterServiceStub(client.channel).GetAdapter(ad.GetAdapterRequest(
        version=versions[1]))).adapter
    assert record.source == ad.ADAPTER_SOURCE_ONLINE and record.parent_version == versions[0]
    assert record.training_job == made.name
    window = record.dataset.online_examples  # what it trained on, read again by later jobs' EWC and replay
    assert window.session == made.name and window.first_sequence == done.publications[1].first_sequence
    assert record.dataset.example_count == window.last_sequence - window.first_sequence + 1
    assert done.alias_version == versions[1]  # no gate on this server: each publication is followed

    # The live name serves the session's newest adapter, which answers differently from where it started.
    served, now = await until(lambda: _answer(client, f"{TINY}@guilds", done.live_adapter))
    assert served == done.live_adapter == f"{TINY}@guilds-r20"  # refreshed after each of the 20 updates
    assert max(abs(a - b) for a, b in zip(now, before, strict=True)) > 1e-3, (now, before)
    served, _ = await until(lambda: _answer(client, "guilds-live", f"{TINY}@{versions[1]}"))

    stats = (await sessions.GetOnlineStats(ol.GetOnlineStatsRequest(name=made.name))).stats
    assert stats.published_versions == 2 and stats.buffer_size == 200
    changed = (await sessions.SetLearningRate(ol.SetLearningRateRequest(name=made.name, learning_rate=1e-3))).session
    assert changed.stats.learning_rate == 1e-3
    assert (await refused(sessions.SetLearningRate(ol.SetLearningRateRequest(name=made.name, learning_rate=0))))[:2] \
        == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ONLINE_SETTING")

    stopped = (await sessions.StopOnlineSession(ol.StopOnlineSessionRequest(name=made.name))).session
    assert stopped.state in (common.JOB_STATE_CANCELLING, common.JOB_STATE_CANCELLED)
    ended = await until(lambda: _ended(client, made.name))

    # A training job continuing the newest publication protects and replays what the session learnt: the
    # publication's Fisher is measured on its window, and replay draws on every window of the lineage.
    continuation = spec(epochs=1)
    continuation.parent_adapter_version = versions[1]
    continuation.ewc.replay_fraction = 0.5
    job = (await client.training.CreateTrainingJob(tr.CreateTrainingJobRequest(spec=continuation))).training_job
    events = [m.event for m in await watch_all(client.training, job.name) if m.HasField("event")]
    warnings = [e.warning.code for e in events if e.HasField("warning")]
    notices = {e.notice.code: e.notice.message for e in events if e.HasField("notice")}
    assert "REPLAY_DATASET_UNAVAILABLE" not in warnings and "REPLAY_MIXED" in notices, (warnings, notices)
    continued = (await client.training.GetTrainingJob(tr.GetTrainingJobRequest(name=job.name))).training_job
    assert continued.state == common.JOB_STATE_SUCCEEDED, continued.error
    assert ended.state == common.JOB_STATE_CANCELLED and "stopped after 20 updates" in ended.error.message
    assert telemetry.REGISTRY.get_sample_value("learning_engine_online_loss", {"session": "guilds"}) is None
    assert (await refused(sessions.StopOnlineSession(ol.StopOnlineSessionRequest(name=made.name))))[:2] == (
        grpc.StatusCode.FAILED_PRECONDITION, "ONLINE_SESSION_ENDED")
    assert (await refused(sessions.AddExamples(ol.AddExamplesRequest(name=made.name, examples=facts(1)))))[:2] == (
        grpc.StatusCode.FAILED_PRECONDITION, "ONLINE_SESSION_ENDED")
    router = client.app.owned.lora.gateway.router
    await until(lambda: _unrouted(router, f"{TINY}@guilds"))


async def _published_and_gated(client, name: str) -> ol.OnlineSession | None:
    found = await session(client, name)
    ready = len(found.publications) == 2 and found.alias_version == found.publications[-1].version
    return found if ready and found.live_adapter.endswith("-r20") else None


async def _answer(client, model: str, upstream: str):
    try:
        served, logprobs = await ask(client, model)
    except AssertionError:  # not routed yet: the engine does not know the name
        return None
    return (served, logprobs) if served == upstream else None


async def _ended(client, name: str) -> ol.OnlineSession | None:
    found = await session(client, name)
    return found if found.state == common.JOB_STATE_CANCELLED else None


async def _unrouted(router, name: str) -> bool:
    return name not in router.routes


@pytest.mark.slow
async def test_a_session_goes_on_from_its_checkpoint_after_a_restart_and_bad_input_is_refused(make_pg_server):
    one = await make_pg_server(**FAST)
    start = await train(one)
    made = (await online(one).CreateOnlineSession(ol.CreateOnlineSessionRequest(spec=ol.OnlineSessionSpec(
        start_version=start, update_every=5, checkpoint_every=2, publish_every=0, learning_rate=5e-3,
        max_seq_length=64, ewc_lambda=0, replay_fraction=0)))).session
    added = await online(one).AddExamples(ol.AddExamplesRequest(name=made.name, examples=[
        *facts(22), ol.OnlineExample(prompt="x" * 40_000), ol.OnlineExample(prompt="weighted", weight=-1)]))
    assert (added.accepted, added.refused) == (22, 2) and added.last_sequence > 0
    assert "over the limit" in added.refusals[0] and "weight -1" in added.refusals[1]
    first = await until(lambda: _checkpointed(one, made.name, 4))
    assert (first.stats.total_updates, first.stats.pending_examples) == (4, 2)  # 2 wait for more

    await one.app.stop(5)  # shutdown: the session stores a checkpoint and goes back to the queue
    two = await make_pg_server(**FAST)  # a restart (another machine would share the artifact store through S3)
    await online(two).AddExamples(ol.AddExamplesRequest(name=made.name, examples=facts(10, start=22)))
    resumed = await until(lambda: _updated(two, made.name, 6))
    assert resumed.stats.total_examples == 32 and resumed.stats.skipped_examples == 2
    assert resumed.stats.pending_examples == 2 and resumed.state == common.JOB_STATE_RUNNING
    events = [m.event async for m in _watch_until(two, made.name, lambda e: e.updated.update == 6)]
    notices = [e.notice.message for e in events if e.HasField("notice") and e.notice.code == "RESUMED"]
    assert len(notices) == 1 and "checkpoint of update 4" in notices[0] and "2 waiting" in notices[0], notices
    refusals = [e.warning.message for e in events if e.warning.code == "EXAMPLES_REFUSED"]  # stored before the stop
    assert len(refusals) == 1 and refusals[0].startswith("2 examples refused on arrival (2 in all)"), refusals
    assert [e.updated.update for e in events if e.HasField("updated")] == [1, 2, 3, 4, 5, 6]
    assert [e.updated.examples for e in events if e.HasField("updated")] == [5] * 6  # none lost, none twice

    await online(two).DisableOnlineLearning(ol.DisableOnlineLearningRequest(name=made.name, reason="maintenance"))
    await online(two).AddExamples(ol.AddExamplesRequest(name=made.name, examples=facts(5, start=32)))
    assert (await refused(online(two).ForceUpdate(ol.ForceUpdateRequest(name=made.name))))[:2] == (
        grpc.StatusCode.FAILED_PRECONDITION, "ONLINE_LEARNING_DISABLED")  # enable first: nothing is queued
    held = await until(lambda: _read(two, made.name, 37))
    assert held.stats.total_updates == 6 and held.stats.pending_examples == 7 and not held.stats.enabled
    assert held.disabled_reason == "maintenance"
    await online(two).EnableOnlineLearning(ol.EnableOnlineLearningRequest(name=made.name))
    published = await online(two).PublishOnlineSession(ol.PublishOnlineSessionRequest(name=made.name))
    assert published.session.stats.enabled
    after = await until(lambda: _published(two, made.name))
    assert after.stats.total_updates == 7 and after.publications[0].update == 7

    assert (await refused(online(two).GetOnlineSession(ol.GetOnlineSessionRequest(name="onlineSessions/nope"))))[:2] \
        == (grpc.StatusCode.NOT_FOUND, "ONLINE_SESSION_NOT_FOUND")
    assert (await refused(online(two).GetOnlineSession(ol.GetOnlineSessionRequest(name="sessions/x"))))[:2] == (
        grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_NAME")

    async def unnamed():
        yield ol.StreamExamplesRequest(examples=facts(1))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in online(two).StreamExamples(unnamed()):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)[0].reason == "ONLINE_STREAM_UNNAMED"
    listed = (await online(two).ListOnlineSessions(ol.ListOnlineSessionsRequest())).sessions
    assert [s.name for s in listed] == [made.name]
    await online(two).StopOnlineSession(ol.StopOnlineSessionRequest(name=made.name))
    await until(lambda: _ended(two, made.name))


async def _watch_until(client, name: str, last):
    """The session's events from the first, until one for which ``last`` is true."""
    async for message in online(client).WatchOnlineSession(ol.WatchOnlineSessionRequest(name=name)):
        if message.HasField("event"):
            yield message
            if last(message.event):
                return


async def _said(client, name: str, last) -> list:
    """The session's events up to one for which ``last`` is true, once it is on them: what a serving process says
    of an ended session (the live alias kept or ended) is added after the session shows the alias's new state."""

    async def events() -> list | None:
        found = [m.event async for m in _watch_until(client, name, last)]
        return found if found and last(found[-1]) else None

    return await until(events)


async def _checkpointed(client, name: str, updates: int) -> ol.OnlineSession | None:
    found = await session(client, name)
    return found if found.stats.total_updates >= updates and found.stats.total_examples == 22 else None


async def _updated(client, name: str, updates: int) -> ol.OnlineSession | None:
    found = await session(client, name)
    return found if found.stats.total_updates >= updates else None


async def _read(client, name: str, examples: int) -> ol.OnlineSession | None:
    found = await session(client, name)
    return found if found.stats.total_examples >= examples else None


async def _published(client, name: str) -> ol.OnlineSession | None:
    found = await session(client, name)
    return found if found.publications else None


@pytest.mark.slow
async def test_a_publication_the_gate_refuses_leaves_the_live_alias_where_it_was(make_pg_server, data_dir):
    from tests.server.test_gate import FIRST, SECOND, facts, trained

    client = await make_pg_server(eval_gate=True, eval_max_tokens=8, **FAST)
    start = await trained(client, facts(data_dir, "first.jsonl", FIRST))  # learnt: the gate's retention suite
    made = (await online(client).CreateOnlineSession(ol.CreateOnlineSessionRequest(spec=ol.OnlineSessionSpec(
        start_version=start, update_every=4, publish_every=0, learning_rate=5e-2, ewc_lambda=0,
        replay_fraction=0, max_seq_length=64, live_alias="careless")))).session
    careless = [ol.OnlineExample(prompt=q, target=a) for q, a in SECOND] * 10  # new facts, nothing kept
    await online(client).AddExamples(ol.AddExamplesRequest(name=made.name, examples=careless))
    await until(lambda: _updated(client, made.name, 10))
    await online(client).PublishOnlineSession(ol.PublishOnlineSessionRequest(name=made.name))
    judged = await until(lambda: _judged(client, made.name))
    publication = judged.publications[0]
    assert not publication.gate_passed, publication
    assert any(check.startswith("retention: forgot") for check in publication.failed_checks), publication
    assert judged.alias_version == ""  # still the start version
    # the session's worker tells the verdict on its events (the gate runs in a serving process)
    told = (await _said(client, made.name, lambda e: e.HasField("gate_verdict")))[-1].gate_verdict
    assert (told.version, told.HasField("passed"), told.passed, list(told.failed_checks)) == (
        publication.version, True, False, list(publication.failed_checks)), told
    served, _ = await until(lambda: _answer(client, "careless", f"{TINY}@{start}"))
    await online(client).StopOnlineSession(ol.StopOnlineSessionRequest(name=made.name))
    await until(lambda: _ended(client, made.name))
    # No publication passed: the alias, which only served the start version, ends with the session and says so.
    ended = await until(lambda: _alias_ended(client, made.name))
    assert ended.alias_version == "" and ended.publications[0].version != start
    said = [e.warning.message for e in await _said(client, made.name, lambda e: e.warning.code == "LIVE_ALIAS_ENDED")
            if e.HasField("warning")]
    assert said[-1] == (f"the live alias 'careless' ended with the session: no publication of it passed the gate "
                        f"(1 published), so it served only the start version {start}; it is no longer routed")
    await until(lambda: _unrouted(client.app.owned.lora.gateway.router, "careless"))


async def _alias_ended(client, name: str) -> ol.OnlineSession | None:
    found = await session(client, name)
    return found if found.alias_state == ol.LIVE_ALIAS_STATE_ENDED else None


async def _judged(client, name: str) -> ol.OnlineSession | None:
    found = await session(client, name)
    return found if found.publications and found.publications[0].HasField("gate_passed") else None


def labelled(n: int, *, desirable: bool, start: int = 0) -> list[ol.OnlineExample]:
    answer = "Founder number {}." if desirable else "Nobody founded guild {}."
    return [ol.OnlineExample(prompt=f"Who founded {NAMES[i % 10]} guild {i}?", target=answer.format(i),
                             desirable=desirable) for i in range(start, start + n)]


@pytest.mark.slow
async def test_a_kto_session_learns_from_labelled_examples_and_refuses_what_its_loss_cannot_use(make_pg_server):
    from learning.v1 import feedback_pb2 as fb
    from tests.server.test_pipelines import event, send

    client = await make_pg_server(online_feedback_seconds=0.2, **FAST)
    start = await train(client)
    sessions = online(client)
    kto = ol.OnlineSessionSpec(start_version=start, loss=ol.ONLINE_LOSS_KTO, update_every=4, publish_every=0,
                               learning_rate=5e-3, max_seq_length=64, ewc_lambda=0, replay_fraction=0,
                               learn_from_feedback=True)
    for field, value in (("loss", 7), ("optimizer", 9)):  # enum values this server does not know
        bad = ol.OnlineSessionSpec(start_version=start)
        setattr(bad, field, value)
        code, reason, violations = await refused(sessions.CreateOnlineSession(ol.CreateOnlineSessionRequest(
            spec=bad)))
        assert (code, reason, violations[0][0]) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ONLINE_SETTING",
                                                    f"spec.{field}")
    made = (await sessions.CreateOnlineSession(ol.CreateOnlineSessionRequest(session_id="judged", spec=kto))).session
    assert made.spec.loss == ol.ONLINE_LOSS_KTO

    sent = [e for pair in zip(labelled(6, desirable=True), labelled(6, desirable=False, start=6), strict=True)
            for e in pair]
    sent.insert(5, ol.OnlineExample(prompt="Who founded Tarsk guild?", target="Founder Tarsk."))  # no label
    sent.insert(9, ol.OnlineExample(prompt="Guild founders of the coast", desirable=True))  # no target

    async def requests():
        yield ol.StreamExamplesRequest(name=made.name)
        for i in range(0, len(sent), 4):
            yield ol.StreamExamplesRequest(examples=sent[i:i + 4])

    answers = [a async for a in sessions.StreamExamples(requests())]
    last = answers[-1]
    assert (last.accepted, last.refused) == (12, 2), last
    assert list(last.refusals) == [
        "examples[5]: no desirable label: a KTO session needs one (true: an answer to give, false: one to avoid)",
        "examples[9]: no target: a KTO session learns from a prompt's answer labelled desirable or not"]
    updates = [a.stats.total_updates for a in answers]
    assert updates[-1] == 3 and updates == sorted(updates), updates
    events = [m.event async for m in _watch_until(client, made.name, lambda e: e.updated.update == 3)]
    losses = [e.updated.loss for e in events if e.HasField("updated")]
    # KTO's loss is a mean of lambda * (1 - sigmoid(.)), below the weight 1; the tiny model's SFT losses are nats.
    assert len(losses) == 3 and all(0 < loss < 1 for loss in losses), losses
    rows = await PostgresOnlineStore(client.app.owned.pool).after("judged", 0, 100)
    assert [r.desirable for r in rows] == [True, False] * 6

    # A voted-down answer of the live model becomes an undesirable example (an SFT session drops it).
    down = event("down", fb.FEEDBACK_KIND_THUMBS_DOWN, "Who founded Brinmark guild?", "No idea.")
    down.adapter_version = made.live_model
    down.time.FromDatetime(datetime.now(UTC))
    await send(client, down)
    taken = await until(lambda: _read(client, made.name, 13), timeout=60)
    assert taken.stats.pending_examples == 1
    rows = await PostgresOnlineStore(client.app.owned.pool).after("judged", rows[-1].seq, 10)
    assert [(r.prompt, r.target, r.weight, r.desirable) for r in rows] == [
        ("Who founded Brinmark guild?", "No idea.", 0.5, False)]  # the thumbs-down weight as KTO's lambda_U

    await sessions.PublishOnlineSession(ol.PublishOnlineSessionRequest(name=made.name))
    published = await until(lambda: _published(client, made.name))
    record = (await ad_grpc.AdapterServiceStub(client.channel).GetAdapter(ad.GetAdapterRequest(
        version=published.publications[0].version))).adapter
    assert dict(record.dataset.composition) == {"online_desirable": 6, "online_undesirable": 6}
    await sessions.StopOnlineSession(ol.StopOnlineSessionRequest(name=made.name))
    await until(lambda: _ended(client, made.name))

    # A job continuing the publication measures its Fisher on, and replays, only the answers to give.
    continuation = spec(epochs=1)
    continuation.parent_adapter_version = record.version
    continuation.ewc.replay_fraction = 0.5
    job = (await client.training.CreateTrainingJob(tr.CreateTrainingJobRequest(spec=continuation))).training_job
    events = [m.event for m in await watch_all(client.training, job.name) if m.HasField("event")]
    warnings = {e.warning.code: e.warning.message for e in events if e.HasField("warning")}
    notices = {e.notice.code: e.notice.message for e in events if e.HasField("notice")}
    assert not {"PARENT_DATASET_REBUILT", "REPLAY_DATASET_REBUILT", "REPLAY_DATASET_UNAVAILABLE"} & set(warnings), \
        warnings  # the labelled window's digest is the one recorded
    assert "training data (6 samples)" in notices["FISHER_COMPUTED_AUTOMATICALLY"], notices
    assert "REPLAY_MIXED" in notices, notices
    continued = (await client.training.GetTrainingJob(tr.GetTrainingJobRequest(name=job.name))).training_job
    assert continued.state == common.JOB_STATE_SUCCEEDED, continued.error

    # An SFT session refuses an answer labelled undesirable (it would imitate it) and takes one labelled desirable.
    plain = (await sessions.CreateOnlineSession(ol.CreateOnlineSessionRequest(spec=ol.OnlineSessionSpec(
        start_version=start, update_every=4, publish_every=0, max_seq_length=64)))).session
    assert plain.spec.loss == ol.ONLINE_LOSS_SFT
    added = await sessions.AddExamples(ol.AddExamplesRequest(name=plain.name, examples=[
        *labelled(1, desirable=False), *labelled(1, desirable=True, start=1)]))
    assert (added.accepted, added.refused) == (1, 1)
    assert added.refusals[0].startswith("examples[0]: desirable false: an SFT session would imitate the answer")
    await sessions.StopOnlineSession(ol.StopOnlineSessionRequest(name=plain.name))
    await until(lambda: _ended(client, plain.name))
