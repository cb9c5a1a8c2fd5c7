"""Pipelines rolling out through a canary, through gRPC on the tiny model: with the gate on and two replicas, a
canary run rolls back on worse feedback by itself and the next one promotes on better; a run stopped while its
canary waits for evidence resumes that canary and never starts a second."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from google.protobuf import duration_pb2

from learning.v1 import common_pb2 as common
from learning.v1 import feedback_pb2 as fb
from learning.v1 import lora_control_pb2 as lc
from learning.v1 import pipeline_pb2 as pp
from learning.v1 import training_pb2 as pb
from tests.server.conftest import TINY
from tests.server.lora_helpers import status
from tests.server.test_canary import counted, rate
from tests.server.test_canary import send as canary_send
from tests.server.test_pipelines import FACTS, active_becomes, event, finished, from_file, pipelines, send


@pytest.mark.slow
async def test_a_run_stopped_during_its_canary_resumes_it_and_never_starts_a_second(make_pg_server):
    settings = dict(pipeline_poll_seconds=0.2, serving_follow_seconds=0.2)
    client = await make_pg_server(**settings)
    policy = lc.CanaryPolicy(share=0.5, min_requests=6, min_feedback=4, feedback_margin=0.1,
                             check_interval=duration_pb2.Duration(nanos=200_000_000))
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="steady", pipeline=from_file(
        rollout=pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_CANARY, canary=policy))))
    first = (await pipelines(client).RunPipeline(pp.RunPipelineRequest(name="pipelines/steady"))).run
    assert (await finished(client, first.name)).rollout == "ACTIVATED"
    run = (await pipelines(client).RunPipeline(pp.RunPipelineRequest(name="pipelines/steady"))).run
    assert await canary_of(client, run.name) == "v1.1"
    assert await canary_send(client, 4) == {f"{TINY}@v1.0": 2, f"{TINY}@v1.1": 2}
    await client.channel.close()
    await client.app.stop(0)  # the run's process stops while the canary waits for evidence

    restarted = await make_pg_server(**settings)
    assert (await status(restarted)).traffic_split.figures.candidate.requests == 2  # counted before the stop
    assert await canary_send(restarted, 8) == {f"{TINY}@v1.0": 4, f"{TINY}@v1.1": 4}
    await rate(restarted, "v1.1", up=4, down=0)
    await rate(restarted, "v1.0", up=4, down=0)
    done = await finished(restarted, run.name)
    assert (done.state, done.rollout) == (common.JOB_STATE_SUCCEEDED, "PROMOTED"), done
    assert (await status(restarted)).active_version == "v1.1"
    controller = restarted.app.owned.lora.controller
    history = await controller._store.history(controller.target, 50)
    starts = [op.version for op in history if op.kind.value == "CANARY_START"]
    assert starts == ["v1.1"]  # the resumed run waited for the canary it had started
    promoted = next(op for op in history if op.kind.value == "CANARY_PROMOTE")
    assert (promoted.traffic.candidate.requests, promoted.traffic.active.requests) == (6, 6)


async def canary_of(client, run_name: str) -> str:
    """The version the run's canary is trying, once it takes traffic."""
    for _ in range(600):
        split = (await status(client)).traffic_split
        if split.candidate_version:
            return split.candidate_version
        run = (await pipelines(client).GetPipelineRun(pp.GetPipelineRunRequest(name=run_name))).run
        assert run.state not in (common.JOB_STATE_FAILED, common.JOB_STATE_CANCELLED), run
        await asyncio.sleep(0.1)
    raise AssertionError("the canary never started")


@pytest.mark.slow
async def test_a_canary_run_rolls_back_on_worse_feedback_and_the_next_promotes_on_better(make_server, data_dir,
                                                                                         tmp_path: Path):
    """The loop as issue 20 asks for it, with two replicas running: the negative-count trigger fires once, the run
    trains a continuation, the gate passes, the canary takes its share through both gateways, worse feedback rolls
    it back by itself; the complaints fire the trigger again and that run, with better feedback, promotes."""
    # The gate on: each run learns the facts well enough (as tests/server/test_gate.py does) to pass it. The
    # triggers are ticked by hand (their own loop would tick every hour).
    settings = dict(pipeline_poll_seconds=0.2, eval_gate=True, eval_max_tokens=8, serving_follow_seconds=0.2,
                    pipeline_trigger_interval_seconds=3600)
    client = await make_server(**settings)
    (tmp_path / "replica2").mkdir()
    two = await make_server(data_dir=tmp_path / "replica2", datasets_path=data_dir / "datasets",
                            artifacts_path=data_dir / "artifacts", **settings)
    engines = [client.app.engine.pipelines, two.app.engine.pipelines]
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FACTS]
    (data_dir / "datasets" / "facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    training = pb.TrainingJobSpec(jsonl=common.JsonlDataset(path="facts.jsonl"), hyperparameters=pb.Hyperparameters(
        epochs=40, batch_size=4, learning_rate=2e-2))
    policy = lc.CanaryPolicy(share=0.5, min_requests=10, min_feedback=10, feedback_margin=0.1,
                             check_interval=duration_pb2.Duration(nanos=200_000_000))
    complaints = pp.PipelineTrigger(feedback=pp.FeedbackCountTrigger(count=2, negative_only=True))
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="careful", pipeline=pp.Pipeline(
        training=training, rollout=pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_CANARY, canary=policy),
        triggers=[complaints], enabled=True)))

    async def fired() -> str:
        decided = [d for made in await asyncio.gather(*(e.tick() for e in engines)) for d in made]
        assert [(d.fired, d.kind.value) for d in decided] == [(True, "NEGATIVE_FEEDBACK")], decided
        return f"pipelineRuns/{decided[0].run_id}"

    first = (await pipelines(two).RunPipeline(pp.RunPipelineRequest(name="pipelines/careful"))).run.name
    first = await finished(client, first)  # nothing active yet: nothing to compare a canary with
    assert (first.state, first.version, first.rollout) == (common.JOB_STATE_SUCCEEDED, "v1.0", "ACTIVATED"), first
    assert "no version was active" in first.stages[-1].message
    assert first.stages[2].state == pp.STAGE_STATE_SUCCEEDED and first.stages[2].message.startswith("the gate passed")
    # the activation's gate took EVALUATE's evaluation (the same baseline, suites and thresholds) as it stands
    activation = (await status(client)).last_operation
    assert activation.kind == lc.LORA_OPERATION_KIND_ACTIVATE and activation.gate.passed
    assert activation.gate.evaluation_id == first.evaluation_id != ""

    await send(two, event("down0", fb.FEEDBACK_KIND_THUMBS_DOWN, "Capital of Nowhere?", "I do not know."),
               event("down1", fb.FEEDBACK_KIND_THUMBS_DOWN, "Capital of Elsewhere?", "No idea."))
    second = await fired()  # once for both replicas
    assert await asyncio.gather(*(e.tick() for e in engines)) == [[], []]
    # each replica's gateway routes the split once it has read it (status follows the store)
    assert await canary_of(client, second) == await canary_of(two, second) == "v1.1"
    # each replica's gateway takes half the alias's requests; the canary counts both
    assert await canary_send(client, 16) == {f"{TINY}@v1.0": 8, f"{TINY}@v1.1": 8}
    assert await canary_send(two, 14) == {f"{TINY}@v1.0": 7, f"{TINY}@v1.1": 7}
    # each process shares its gateway's counts every serving_follow_seconds: both read the sum before the ratings
    # can decide the canary (it would decide on the counts as they stood then)
    await asyncio.gather(*(counted(replica, 15, 15) for replica in (client, two)))
    await rate(client, f"{TINY}@v1.1", up=2, down=8)  # its users complain
    await rate(client, "v1.0", up=8, down=2)
    rolled_back = await finished(two, second)
    assert (rolled_back.state, rolled_back.rollout) == (common.JOB_STATE_FAILED, "ROLLED_BACK"), rolled_back
    assert rolled_back.trigger == pp.TRIGGER_KIND_NEGATIVE_FEEDBACK and rolled_back.parent_version == "v1.0"
    assert [s.state for s in rolled_back.stages[1:3]] == [pp.STAGE_STATE_SUCCEEDED] * 2  # trained, the gate passed
    assert rolled_back.error.message.startswith("the canary of v1.1 was rolled back: worse than the active version")
    outcome = (await status(two)).last_canary
    assert (outcome.figures.candidate.requests, outcome.figures.active.requests) == (15, 15)
    assert (await status(client)).active_version == (await status(two)).active_version == "v1.0"

    third = await fired()  # the complaints about v1.1 are new negative feedback
    assert await canary_of(two, third) == await canary_of(client, third) == "v1.2"
    await canary_send(client, 10)
    await canary_send(two, 10)
    await rate(two, f"{TINY}@v1.2", up=9, down=1)  # its users like it as much as the active's
    await rate(two, "v1.0", up=8, down=2)
    promoted = await finished(client, third)
    assert (promoted.state, promoted.rollout) == (common.JOB_STATE_SUCCEEDED, "PROMOTED"), promoted
    assert promoted.parent_version == "v1.0" and promoted.stages[-1].message.startswith("the canary promoted v1.2")
    assert [s.state for s in promoted.stages[1:3]] == [pp.STAGE_STATE_SUCCEEDED] * 2  # trained, and the gate passed
    for replica in (client, two):  # the process that did not decide follows within its serving_follow_seconds
        await asyncio.wait_for(active_becomes(replica, "v1.2"), 30)
