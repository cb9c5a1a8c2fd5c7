"""When triggers fire: one pipeline's failure leaves the others' decisions be, a drift fires once per active
version, and a cron tick is a wall time of its time zone."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from learning.v1 import common_pb2 as common
from learning.v1 import feedback_pb2 as fb
from learning.v1 import lora_control_pb2 as lc
from learning.v1 import lora_control_pb2_grpc as lc_grpc
from learning.v1 import pipeline_pb2 as pp
from tests.fixtures.drift_prompts import recipes_and_code
from tests.server.lora_helpers import train
from tests.server.test_drift_service import events as drift_events
from tests.server.test_drift_service import same_kind_of_prompts
from tests.server.test_pipelines import event, finished, from_file, pipelines, send

PUBLISH_ONLY = pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_NONE)


async def _cancel(client, run_id: str) -> None:
    name = f"pipelineRuns/{run_id}"
    await pipelines(client).CancelPipelineRun(pp.CancelPipelineRunRequest(name=name))
    async for _ in pipelines(client).WatchPipelineRun(pp.WatchPipelineRunRequest(name=name)):
        pass


class BrokenDrift:
    """A drift source whose measurement fails as a bug would (not an EngineError), counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def report(self, base_model, *, window=None, end=None):
        self.calls += 1
        raise RuntimeError("embedder: could not load the base model")


async def test_a_pipeline_whose_trigger_check_fails_leaves_the_other_pipelines_decided(make_pg_server):
    client = await make_pg_server()
    engine = client.app.engine.pipelines
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="feedback", pipeline=from_file(
            triggers=[pp.PipelineTrigger(feedback=pp.FeedbackCountTrigger(count=1))], rollout=PUBLISH_ONLY)))
    await asyncio.sleep(0.05)  # created later: listed first
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="drifty", pipeline=from_file(triggers=[pp.PipelineTrigger(drift=pp.DriftTrigger())],
                                                 rollout=PUBLISH_ONLY)))
    broken = engine._drift = BrokenDrift()
    await send(client, event("e1", fb.FEEDBACK_KIND_THUMBS_DOWN, "p", "r"))
    await asyncio.sleep(1.1)
    now = datetime.now(UTC)
    fired = await engine.tick(now)
    assert [(d.pipeline_id, d.fired) for d in fired] == [("feedback", True)], fired
    assert broken.calls == 1
    await engine.tick(now + timedelta(minutes=1))  # a failed measurement is kept until the next check too
    assert broken.calls == 1
    await engine.tick(now + timedelta(seconds=engine._drift_check))
    assert broken.calls == 2
    await _cancel(client, fired[0].run_id)


@pytest.mark.slow
async def test_a_drift_fires_once_until_another_version_is_active(make_server):
    client = await make_server(drift_min_samples=10, drift_permutations=300, pipeline_drift_check_seconds=0.001)
    version = await train(client)
    lora = lc_grpc.LoraControlServiceStub(client.channel)
    await lora.ActivateAdapter(lc.ActivateAdapterRequest(version=version))
    engine = client.app.engine.pipelines
    now = datetime.now(UTC)
    await send(client, *drift_events(same_kind_of_prompts(24), fb.FEEDBACK_KIND_THUMBS_UP, now - timedelta(days=5),
                                     "alike"))
    await send(client, *drift_events(recipes_and_code(30, seed=2), fb.FEEDBACK_KIND_THUMBS_DOWN,
                                     now - timedelta(hours=1), "elsewhere"))
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="drifty", pipeline=from_file(triggers=[pp.PipelineTrigger(drift=pp.DriftTrigger())],
                                                 rollout=PUBLISH_ONLY)))
    await asyncio.sleep(1.1)  # the run starts in a later second than the pipeline's creation
    fired = await engine.tick()
    assert [d.fired for d in fired] == [True], fired
    done = await finished(client, f"pipelineRuns/{fired[0].run_id}")
    assert done.state == common.JOB_STATE_SUCCEEDED and done.version, done
    # the run only published: the same drift, measured again against the same active version, is no new occasion
    assert await engine.tick() == []
    await lora.ActivateAdapter(lc.ActivateAdapterRequest(version=done.version))
    fired = await engine.tick()
    assert [(d.fired, d.key) for d in fired] == [(True, f"drift:{done.version}")], fired
    assert f"against {done.version} over the detector's threshold" in fired[0].reason
    await _cancel(client, fired[0].run_id)


@pytest.mark.slow
async def test_a_daily_tick_in_the_hour_clocks_fall_back_is_one_occasion(make_pg_server):
    client = await make_pg_server()
    engine = client.app.engine.pipelines
    cron = pp.PipelineTrigger(cron=pp.CronTrigger(expression="30 1 * * *", time_zone="America/New_York"))
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="nightly", pipeline=from_file(triggers=[cron], rollout=PUBLISH_ONLY)))
    keys = []
    # 2027-11-07: 01:30 EDT is 05:30Z; clocks go back at 06:00Z and 01:30 EST is 06:30Z
    for now in (datetime(2027, 11, 7, 5, 31, tzinfo=UTC), datetime(2027, 11, 7, 6, 31, tzinfo=UTC),
                datetime(2027, 11, 8, 6, 31, tzinfo=UTC)):
        for d in await engine.tick(now):
            assert d.fired, d
            assert (await finished(client, f"pipelineRuns/{d.run_id}")).state == common.JOB_STATE_SUCCEEDED
            keys.append(d.key)
    assert keys == ["cron:2027-11-07T05:30:00Z", "cron:2027-11-08T06:30:00Z"]


async def _made_days_ago(engine, pipeline_id: str, days: int) -> None:
    """As if the pipeline had been created, and last changed, ``days`` ago."""
    then = datetime.now(UTC) - timedelta(days=days)
    async with engine._store._pool.acquire() as conn:
        await conn.execute("UPDATE pipelines SET create_time = $2, update_time = $2,"
                           " doc = doc || jsonb_build_object('create_time', $3::text, 'update_time', $3::text)"
                           " WHERE id = $1", pipeline_id, then, then.isoformat())


async def test_a_changed_or_reenabled_schedule_fires_from_its_next_tick_not_a_past_one(make_pg_server):
    client = await make_pg_server()
    engine = client.app.engine.pipelines
    weekly = pp.PipelineTrigger(cron=pp.CronTrigger(expression="0 2 * * 1", time_zone="UTC"))
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="weekly", pipeline=from_file(triggers=[weekly], rollout=PUBLISH_ONLY)))
    for enabled in (False, True):
        if enabled:
            await _made_days_ago(engine, "weekly", 10)
        await pipelines(client).UpdatePipeline(pp.UpdatePipelineRequest(
            pipeline=pp.Pipeline(name="pipelines/weekly", enabled=enabled), update_mask={"paths": ["enabled"]}))
    assert await engine.tick() == []  # last Monday's 02:00 came while it was disabled
    await _made_days_ago(engine, "weekly", 10)
    later = pp.Pipeline(name="pipelines/weekly", triggers=[pp.PipelineTrigger(cron=pp.CronTrigger(
        expression="0 3 * * 1", time_zone="UTC"))])
    await pipelines(client).UpdatePipeline(pp.UpdatePipelineRequest(pipeline=later,
                                                                     update_mask={"paths": ["triggers"]}))
    assert await engine.tick() == []  # last Monday's 03:00 came before the schedule said 03:00
    now = datetime.now(UTC)
    monday = (now + timedelta(days=7 - now.weekday())).replace(hour=3, minute=0, second=0, microsecond=0)
    fired = await engine.tick(monday + timedelta(seconds=10))
    assert [(d.fired, d.key) for d in fired] == [(True, f"cron:{monday.isoformat().replace('+00:00', 'Z')}")]
    await _cancel(client, fired[0].run_id)
