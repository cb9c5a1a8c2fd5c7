"""A pipeline deleted and created again under the same id is another pipeline: the runs (jobs) of its predecessor
outlive it, but are not its runs. Its occasions start runs of their own (the request id names the pipeline's
creation time, so the new pipeline's first drift occasion does not meet the old run's request id), ListPipelineRuns
lists only its runs, and its feedback counts start at its creation, not at the old pipeline's last run."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from learning.v1 import feedback_pb2 as fb
from learning.v1 import pipeline_pb2 as pp
from tests.server.test_pipelines import event, from_file, pipelines, send
from tests.server.test_pipelines_triggers import _cancel

PUBLISH_ONLY = pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_NONE)


class Drifted:
    """A drift source that always measures drift against the active version v1.0."""

    async def report(self, base_model, *, window=None, end=None):
        return SimpleNamespace(statistic=0.9, threshold=0.1, drifted=True, incoming=50, reference_version="v1.0")


def _drifty() -> pp.Pipeline:
    return from_file(triggers=[pp.PipelineTrigger(drift=pp.DriftTrigger()),
                               pp.PipelineTrigger(feedback=pp.FeedbackCountTrigger(count=1))], rollout=PUBLISH_ONLY)


async def _runs(client, pipeline_id: str) -> list[str]:
    listed = (await pipelines(client).ListPipelineRuns(pp.ListPipelineRunsRequest(pipeline=f"pipelines/{pipeline_id}")))
    return [r.name for r in listed.runs]


@pytest.mark.slow
async def test_a_pipeline_created_again_under_a_deleted_ones_id_fires_and_lists_its_own_runs(make_pg_server):
    client = await make_pg_server()
    engine = client.app.engine.pipelines
    engine._drift = Drifted()
    engine._drift_check = 0.0
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="drifty", pipeline=_drifty()))
    await asyncio.sleep(1.1)
    first = await engine.tick()
    assert [(d.key, d.fired) for d in first] == [("drift:v1.0", True)], first
    old_run = f"pipelineRuns/{first[0].run_id}"
    await _cancel(client, first[0].run_id)
    await pipelines(client).DeletePipeline(pp.DeletePipelineRequest(name="pipelines/drifty"))

    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="drifty", pipeline=_drifty()))
    assert await _runs(client, "drifty") == [], "the new pipeline lists its deleted predecessor's run as its own"
    await send(client, event("e1", fb.FEEDBACK_KIND_THUMBS_UP, "p", "r"))
    await asyncio.sleep(1.1)
    second = await engine.tick()  # the new pipeline's first drift occasion (and a feedback count reached)
    assert [(d.key, d.fired) for d in second] == [("drift:v1.0", True)], \
        f"the new pipeline's first drift occasion must start a run of its own, not meet the old run: {second}"
    assert second[0].run_id != first[0].run_id
    new_run = f"pipelineRuns/{second[0].run_id}"
    assert await _runs(client, "drifty") == [new_run], "ListPipelineRuns must list the new pipeline's run only"
    old = (await pipelines(client).GetPipelineRun(pp.GetPipelineRunRequest(name=old_run))).run
    assert old.state, "the old pipeline's run outlives it (a job), just not as the new pipeline's"
    await _cancel(client, second[0].run_id)


@pytest.mark.slow
async def test_a_pipeline_created_again_counts_feedback_from_its_creation(make_pg_server):
    client = await make_pg_server()
    engine = client.app.engine.pipelines
    counted = from_file(triggers=[pp.PipelineTrigger(feedback=pp.FeedbackCountTrigger(count=1))],
                        rollout=PUBLISH_ONLY)
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="counted", pipeline=counted))
    await send(client, event("e1", fb.FEEDBACK_KIND_THUMBS_DOWN, "p", "r"))
    await asyncio.sleep(1.1)
    first = await engine.tick()
    assert [d.fired for d in first] == [True], first
    await _cancel(client, first[0].run_id)
    await pipelines(client).DeletePipeline(pp.DeletePipelineRequest(name="pipelines/counted"))

    await asyncio.sleep(1.1)  # created in a later second than the old run started
    made = (await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="counted",
                                                                            pipeline=counted))).pipeline
    created = made.create_time.ToDatetime().replace(microsecond=0).isoformat() + "Z"
    await send(client, event("e2", fb.FEEDBACK_KIND_THUMBS_DOWN, "p2", "r2"))
    await asyncio.sleep(1.1)
    second = await engine.tick()
    assert [(d.key, d.fired) for d in second] == [(f"feedback:{created}", True)], \
        f"the new pipeline's feedback count must start at its creation ({created}), not at the old run's start: " \
        f"{second}"
    await _cancel(client, second[0].run_id)
