"""A cron expression croniter parses but whose schedule names no date (February 30th) is refused like any bad
expression; and a trigger that cannot be decided all the same (such a schedule stored before that check) is recorded
as failed and leaves the pipeline's other triggers decided."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import pytest

from engine.pipelines.spec import CronTrigger, FeedbackTrigger, TriggerKind
from learning.v1 import feedback_pb2 as fb
from learning.v1 import pipeline_pb2 as pp
from tests.server.test_pipelines import event, from_file, pipelines, refused, send
from tests.server.test_pipelines_triggers import _cancel

PUBLISH_ONLY = pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_NONE)
FEB_30 = "0 2 30 2 *"


@pytest.mark.parametrize("expression", [FEB_30, "0 0 31 4 *"], ids=["february-30", "april-31"])
async def test_a_cron_expression_that_matches_no_date_is_refused_naming_the_field(client, expression):
    never = pp.PipelineTrigger(cron=pp.CronTrigger(expression=expression, time_zone="Europe/Paris"))
    code, reason, violations = await refused(pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="never", pipeline=from_file(triggers=[never], rollout=PUBLISH_ONLY))))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CRON"), \
        f"a schedule that never ticks must be refused as a bad cron expression, got {code} {reason}"
    assert [f for f, _ in violations] == ["pipeline.triggers[0].cron.expression"], violations
    missing = await refused(pipelines(client).GetPipeline(pp.GetPipelineRequest(name="pipelines/never")))
    assert missing[:2] == (grpc.StatusCode.NOT_FOUND, "PIPELINE_NOT_FOUND"), "the refused pipeline was stored"

    rare = pp.PipelineTrigger(cron=pp.CronTrigger(expression="0 0 29 2 *", time_zone="UTC"))  # leap days only
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="leap", pipeline=from_file(triggers=[rare], rollout=PUBLISH_ONLY)))
    code, reason, violations = await refused(pipelines(client).UpdatePipeline(pp.UpdatePipelineRequest(
        pipeline=pp.Pipeline(name="pipelines/leap", triggers=[never]), update_mask={"paths": ["triggers"]})))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CRON"), \
        f"UpdatePipeline must refuse the schedule as CreatePipeline does, got {code} {reason}"
    assert [f for f, _ in violations] == ["pipeline.triggers[0].cron.expression"], violations


@pytest.mark.slow
async def test_a_trigger_that_cannot_be_decided_leaves_the_others_decided_and_says_so(make_pg_server):
    client = await make_pg_server()
    engine = client.app.engine.pipelines
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="feb30", pipeline=from_file(triggers=[pp.PipelineTrigger(cron=pp.CronTrigger())],
                                                rollout=PUBLISH_ONLY)))
    # as a pipeline stored before the check refused such a schedule: its cron first, a feedback count after it
    stored = await engine._store.get("feb30")
    await engine._store.replace(replace(stored, triggers=(CronTrigger(FEB_30, "UTC"), FeedbackTrigger(count=1))),
                                etag="")
    await send(client, event("e1", fb.FEEDBACK_KIND_THUMBS_DOWN, "p", "r"))
    await asyncio.sleep(1.1)

    made = await engine.tick()
    got = sorted((d.kind, d.fired) for d in made)
    assert got == [(TriggerKind.CRON, False), (TriggerKind.FEEDBACK, True)], \
        f"the feedback trigger must fire although the cron before it cannot be decided; decided: {made}"
    fired = next(d for d in made if d.fired)
    failed = next(d for d in made if not d.fired)
    assert failed.key == f"cron:{FEB_30} UTC:failed:CroniterBadDateError", failed
    assert "triggers[0]" in failed.reason and "could not be decided" in failed.reason, failed.reason

    listed = (await pipelines(client).ListTriggerDecisions(
        pp.ListTriggerDecisionsRequest(pipeline="pipelines/feb30"))).decisions
    assert sorted((d.kind, d.fired, d.key) for d in listed) == sorted([
        (pp.TRIGGER_KIND_CRON, False, failed.key), (pp.TRIGGER_KIND_FEEDBACK, True, fired.key)]), \
        f"ListTriggerDecisions must show the failed trigger and the one that fired: {listed}"

    await _cancel(client, fired.run_id)
    again = await engine.tick()  # the same failure again: logged, not recorded a second time
    assert [(d.kind, d.fired) for d in again] == [], f"a failure that repeats must be recorded once: {again}"
