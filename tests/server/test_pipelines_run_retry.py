"""A run started but whose decision was not recorded (the database failing between the two writes, or the process
stopping there) is still its occasion's run: RunPipeline retried with its request_id returns it (it answered
FAILED_PRECONDITION PIPELINE_RUN_ACTIVE about the very run its first call started), and the next trigger check
records the occasion as fired with it (it recorded a cron tick as skipped because of its own run)."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta

import pytest

from engine.errors import Unavailable
from engine.pipelines.runner import PipelineRunner
from engine.stores.pipeline_store import PostgresPipelineStore
from learning.v1 import pipeline_pb2 as pp
from tests.server.test_pipelines import from_file, pipelines, refused
from tests.server.test_pipelines_triggers import _cancel

PUBLISH_ONLY = pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_NONE)


@pytest.fixture
def held_runs(monkeypatch):
    """Runs wait at their first stage until the event is set: they stay active while the test goes on."""
    hold = asyncio.Event()
    real_dataset = PipelineRunner._dataset

    async def held(self, ctx, output):
        await hold.wait()
        return await real_dataset(self, ctx, output)

    monkeypatch.setattr(PipelineRunner, "_dataset", held)
    yield hold
    hold.set()


def fail_recording_a_fired_decision_once(monkeypatch) -> None:
    real_record = PostgresPipelineStore.record
    failures = [Unavailable("DATABASE_UNAVAILABLE", "connection lost")]

    async def record(self, decision):
        if decision.fired and failures:
            raise failures.pop()
        return await real_record(self, decision)

    monkeypatch.setattr(PostgresPipelineStore, "record", record)


async def _cancel_all(client, pipeline: str) -> None:
    listed = await pipelines(client).ListPipelineRuns(pp.ListPipelineRunsRequest(pipeline=pipeline))
    for r in listed.runs:
        await _cancel(client, r.name.split("/", 1)[1])


async def test_run_pipeline_retried_with_its_request_id_returns_the_run_it_started(make_pg_server, monkeypatch,
                                                                                  held_runs):
    client = await make_pg_server()
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="retried", pipeline=from_file(rollout=PUBLISH_ONLY)))
    fail_recording_a_fired_decision_once(monkeypatch)
    request = pp.RunPipelineRequest(name="pipelines/retried", request_id="req-1", reason="nightly by hand")
    try:
        first = await refused(pipelines(client).RunPipeline(request))
        assert first[1] == "DATABASE_UNAVAILABLE", first  # the answer is lost: the client retries, as it should
        again = (await pipelines(client).RunPipeline(request)).run
        assert again.reason == "nightly by hand" and again.request_id == "req-1", again
        listed = await pipelines(client).ListPipelineRuns(pp.ListPipelineRunsRequest(pipeline="pipelines/retried"))
        assert [r.name for r in listed.runs] == [again.name]
        decisions = (await pipelines(client).ListTriggerDecisions(
            pp.ListTriggerDecisionsRequest(pipeline="pipelines/retried"))).decisions
        assert [(d.key, d.fired, d.run) for d in decisions] == [("manual:req-1", True, again.name)], decisions
        third = (await pipelines(client).RunPipeline(request)).run  # and from its decision from now on
        assert third.name == again.name
        other = await refused(pipelines(client).RunPipeline(pp.RunPipelineRequest(name="pipelines/retried",
                                                                                  request_id="req-2")))
        assert other[1] == "PIPELINE_RUN_ACTIVE", other  # another request still waits for the run to end
    finally:
        held_runs.set()
        await _cancel_all(client, "pipelines/retried")


async def test_a_tick_whose_run_started_but_whose_decision_failed_is_recorded_fired_at_the_next_check(
        make_pg_server, monkeypatch, held_runs):
    client = await make_pg_server()
    engine = client.app.engine.pipelines
    cron = pp.PipelineTrigger(cron=pp.CronTrigger(expression="*/5 * * * *", time_zone="UTC"))
    made = (await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="nightly", pipeline=from_file(triggers=[cron], rollout=PUBLISH_ONLY)))).pipeline
    created = made.create_time.ToDatetime(UTC)
    tick = created.replace(second=0, microsecond=0) + timedelta(minutes=5 - created.minute % 5)
    key = f"cron:{tick.isoformat().replace('+00:00', 'Z')}"
    fail_recording_a_fired_decision_once(monkeypatch)
    try:
        failed = await engine.tick(tick + timedelta(seconds=10))
        assert [(d.key, d.fired) for d in failed] == [(f"{key}:failed:DATABASE_UNAVAILABLE", False)], failed
        runs = (await pipelines(client).ListPipelineRuns(pp.ListPipelineRunsRequest(
            pipeline="pipelines/nightly"))).runs
        assert len(runs) == 1 and runs[0].request_id == f"nightly/{key}", runs
        later = await engine.tick(tick + timedelta(seconds=40))  # the same tick, its run still on
        assert [(d.key, d.fired, d.run_id) for d in later] == [(key, True, runs[0].name.split("/", 1)[1])], later
        assert "has not ended" not in later[0].reason
        assert runs[0].name in failed[0].reason  # the failed decision said which run had started
        assert await engine.tick(tick + timedelta(seconds=50)) == []  # decided
        skipped = await engine.tick(tick + timedelta(minutes=5, seconds=10))  # the next tick: its run is on
        assert [d.fired for d in skipped] == [False] and runs[0].name in skipped[0].reason, skipped
    finally:
        held_runs.set()
        await _cancel_all(client, "pipelines/nightly")
