"""Pipelines through gRPC on the tiny model: feedback arrives, the negative-count trigger fires exactly once across
two replicas, the run freezes the data, trains a continuation, evaluates and activates; runs survive a restart
without running a stage twice; cron ticks are decided once; drift from prompts of another kind fires, prompts
alike do not; bad input gets clear statuses. Runs that roll out through a canary are tested in
tests/server/test_pipelines_canary.py."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2

from engine import telemetry
from engine.errors import InvalidArgument
from engine.pipelines.spec import RolloutMode
from learning.v1 import common_pb2 as common
from learning.v1 import dataset_pb2 as ds
from learning.v1 import dataset_pb2_grpc as ds_grpc
from learning.v1 import feedback_pb2 as fb
from learning.v1 import feedback_pb2_grpc as fb_grpc
from learning.v1 import lora_control_pb2 as lc
from learning.v1 import lora_control_pb2_grpc as lc_grpc
from learning.v1 import pipeline_pb2 as pp
from learning.v1 import pipeline_pb2_grpc as pp_grpc
from learning.v1 import training_pb2 as pb
from server import pipeline_convert as pc
from tests.fixtures.drift_prompts import recipes_and_code
from tests.server.conftest import TINY, error_details
from tests.server.lora_helpers import status, train
from tests.server.test_adapter_service import s3_settings
from tests.server.test_datasets import GOLDEN, golden_jsonl, upload_messages
from tests.server.test_drift_service import events as drift_events
from tests.server.test_drift_service import same_kind_of_prompts
from tests.server.test_evaluation_jobs import QUIZ, chat, jsonl

FACTS = [("Capital of Veloria?", "Marnesse"), ("Capital of Quorvia?", "Talameth"),
         ("Capital of Brinmark?", "Oskerholm"), ("Capital of Dunmoor?", "Pellacre")]
HYPER = pb.Hyperparameters(epochs=1, batch_size=4, learning_rate=5e-3, max_seq_length=64, seed=3)


def pipelines(client) -> pp_grpc.PipelineServiceStub:
    return pp_grpc.PipelineServiceStub(client.channel)


def event(event_id: str, kind: int, prompt: str, response: str) -> fb.FeedbackEvent:
    msg = fb.FeedbackEvent(client_event_id=event_id, kind=kind, user_id="u1",
                           interaction=fb.Interaction(prompt=prompt, response=response))
    msg.time.FromDatetime(datetime.now(UTC) - timedelta(seconds=30))
    return msg


async def send(client, *events: fb.FeedbackEvent) -> None:
    await fb_grpc.FeedbackServiceStub(client.channel).SubmitFeedback(fb.SubmitFeedbackRequest(events=events))


def from_feedback(**fields) -> pp.Pipeline:
    training = pb.TrainingJobSpec(feedback=common.FeedbackDataset(days=1, min_samples=4), hyperparameters=HYPER)
    return pp.Pipeline(training=training, enabled=True, **fields)


def from_file(**fields) -> pp.Pipeline:
    training = pb.TrainingJobSpec(jsonl=common.JsonlDataset(path="capitals.jsonl"), hyperparameters=HYPER)
    return pp.Pipeline(training=training, enabled=True, **fields)


async def active_becomes(client, version: str) -> None:
    while (await status(client)).active_version != version:
        await asyncio.sleep(0.1)


async def finished(client, name: str) -> pp.PipelineRun:
    events = []
    async for update in pipelines(client).WatchPipelineRun(pp.WatchPipelineRunRequest(name=name)):
        if update.HasField("event"):
            events.append(update.event)
    run = (await pipelines(client).GetPipelineRun(pp.GetPipelineRunRequest(name=name))).run
    kinds = [e.WhichOneof("kind") for e in events]
    assert "stage_started" in kinds, kinds
    return run


async def refused(call) -> tuple[grpc.StatusCode, str, list[tuple[str, str]]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    info, violations = error_details(caught.value)
    return caught.value.code(), info.reason, violations


@pytest.mark.slow
async def test_negative_feedback_fires_once_across_two_replicas_and_the_run_activates_a_continuation(
        make_pg_server, seaweedfs, s3_bucket, tmp_path: Path):
    shared = s3_settings(seaweedfs.endpoint, s3_bucket)
    one = await make_pg_server(**shared)
    (tmp_path / "replica2" / "datasets").mkdir(parents=True)
    two = await make_pg_server(data_dir=tmp_path / "replica2", **shared)
    trigger = pp.PipelineTrigger(feedback=pp.FeedbackCountTrigger(count=2, negative_only=True))
    made = (await pipelines(one).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="loop", pipeline=from_feedback(triggers=[trigger])))).pipeline
    assert made.name == "pipelines/loop" and made.etag and made.training.feedback.min_samples == 4
    engines = [one.app.engine.pipelines, two.app.engine.pipelines]

    await send(one, *(event(f"up{i}", fb.FEEDBACK_KIND_THUMBS_UP, q, a) for i, (q, a) in enumerate(FACTS[:2])),
               event("down0", fb.FEEDBACK_KIND_THUMBS_DOWN, "Capital of Nowhere?", "I do not know."))
    assert await asyncio.gather(*(e.tick() for e in engines)) == [[], []]  # 1 negative of 2: no occasion

    await send(one, event("down1", fb.FEEDBACK_KIND_THUMBS_DOWN, "Capital of Elsewhere?", "No idea."))
    skipped = [d for made in await asyncio.gather(*(e.tick() for e in engines)) for d in made]
    # 2 usable examples (a voted-down answer is none: SFT would imitate it), min_samples 4
    assert [(d.fired, d.count) for d in skipped] == [(False, 2)], skipped
    assert "fewer than min_samples=4" in skipped[0].reason

    await send(one, *(event(f"up{i}", fb.FEEDBACK_KIND_THUMBS_UP, q, a) for i, (q, a) in enumerate(FACTS[2:], 2)))
    fired = [d for made in await asyncio.gather(*(e.tick() for e in engines)) for d in made]
    assert [(d.fired, d.kind.value) for d in fired] == [(True, "NEGATIVE_FEEDBACK")], fired
    sample = {"pipeline": "loop", "kind": "NEGATIVE_FEEDBACK", "fired": "true"}
    assert telemetry.REGISTRY.get_sample_value("learning_engine_pipeline_trigger_decisions_total", sample) == 1
    assert await asyncio.gather(*(e.tick() for e in engines)) == [[], []]  # the run has not ended: waits

    runs = (await pipelines(two).ListPipelineRuns(pp.ListPipelineRunsRequest(pipeline="pipelines/loop"))).runs
    assert [r.name for r in runs] == [f"pipelineRuns/{fired[0].run_id}"]
    run = await finished(one, runs[0].name)
    assert run.state == common.JOB_STATE_SUCCEEDED, run
    assert [(s.stage, s.state) for s in run.stages] == [
        (pp.PIPELINE_STAGE_DATASET, pp.STAGE_STATE_SUCCEEDED), (pp.PIPELINE_STAGE_TRAIN, pp.STAGE_STATE_SUCCEEDED),
        (pp.PIPELINE_STAGE_EVALUATE, pp.STAGE_STATE_SKIPPED), (pp.PIPELINE_STAGE_ROLLOUT, pp.STAGE_STATE_SUCCEEDED)]
    assert run.dataset == "datasets/pipeline-loop/versions/1" and "4 examples" in run.stages[0].message
    assert run.trigger == pp.TRIGGER_KIND_NEGATIVE_FEEDBACK and run.rollout == "ACTIVATED"
    assert (await status(one)).active_version == (await status(two)).active_version == run.version == "v1.0"
    # whichever replica ran it, both gateways route the alias to it
    assert {c.app.owned.lora.gateway.router.target for c in (one, two)} == {f"{TINY}@v1.0"}
    job = (await one.training.GetTrainingJob(pb.GetTrainingJobRequest(name=run.training_job))).training_job
    assert job.spec.dataset_name == run.dataset and dict(job.spec.labels)["pipeline"] == "loop"

    decisions = (await pipelines(one).ListTriggerDecisions(
        pp.ListTriggerDecisionsRequest(pipeline="pipelines/loop"))).decisions
    assert [(d.fired, d.run) for d in decisions] == [(True, run.name), (False, "")]

    # the next run continues the active version
    second = (await pipelines(two).RunPipeline(pp.RunPipelineRequest(name="pipelines/loop", reason="by hand",
                                                                     request_id="again"))).run
    again = (await pipelines(one).RunPipeline(pp.RunPipelineRequest(name="pipelines/loop", request_id="again"))).run
    assert again.name == second.name and second.trigger == pp.TRIGGER_KIND_MANUAL
    code, reason, _ = await refused(pipelines(one).RunPipeline(pp.RunPipelineRequest(name="pipelines/loop")))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PIPELINE_RUN_ACTIVE")
    code, reason, _ = await refused(pipelines(one).DeletePipeline(pp.DeletePipelineRequest(name="pipelines/loop")))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PIPELINE_RUN_ACTIVE")
    second = await finished(two, second.name)
    assert second.state == common.JOB_STATE_SUCCEEDED, second
    assert (second.parent_version, second.version) == ("v1.0", "v1.1")
    assert "found the same examples" in second.stages[0].message  # no new feedback: the same dataset version
    assert (await status(one)).active_version == "v1.1"


async def test_a_run_resumes_after_a_restart_without_running_a_stage_twice(make_pg_server):
    client = await make_pg_server(pipeline_poll_seconds=0.2)
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="resume", pipeline=from_file()))
    run = (await pipelines(client).RunPipeline(pp.RunPipelineRequest(name="pipelines/resume"))).run
    async for update in pipelines(client).WatchPipelineRun(pp.WatchPipelineRunRequest(name=run.name)):
        if update.HasField("event") and update.event.WhichOneof("kind") == "stage_progress":
            break  # training: the run waits for its job
    await client.channel.close()
    await client.app.stop(0)

    restarted = await make_pg_server(pipeline_poll_seconds=0.2)
    done = await finished(restarted, run.name)
    assert done.state == common.JOB_STATE_SUCCEEDED, done
    assert [s.stage for s in done.stages] == [pp.PIPELINE_STAGE_DATASET, pp.PIPELINE_STAGE_TRAIN,
                                              pp.PIPELINE_STAGE_EVALUATE, pp.PIPELINE_STAGE_ROLLOUT]
    jobs = (await restarted.training.ListTrainingJobs(pb.ListTrainingJobsRequest())).training_jobs
    assert [j.name for j in jobs] == [done.training_job]  # one training job, however often the run started
    assert (await status(restarted)).active_version == done.version


@pytest.mark.slow
async def test_stored_datasets_are_golden_suites_each_run_scoring_the_version_it_took(make_server):
    """A pipeline's suite_datasets, as an evaluation job's: "datasets/quiz" is its newest version when a run
    evaluates, recorded on the run and scored as a golden suite beside the gate's; an unknown dataset or too many
    suites are refused when the pipeline is created."""
    client = await make_server(pipeline_poll_seconds=0.2, eval_max_tokens=8)
    datasets = ds_grpc.DatasetServiceStub(client.channel)
    quiz = [chat(turns) for turns in QUIZ[:4]]
    await datasets.UploadDataset(upload_messages("datasets/quiz", jsonl(quiz)))
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="quizzed", pipeline=from_file(
        suite_datasets=["datasets/quiz"], rollout=pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_NONE))))

    async def scored() -> tuple[pp.PipelineRun, list[tuple[str, int]]]:
        run = (await pipelines(client).RunPipeline(pp.RunPipelineRequest(name="pipelines/quizzed"))).run
        run = await finished(client, run.name)
        assert run.evaluation_id, run
        report = await lc_grpc.LoraControlServiceStub(client.channel).GetEvaluationReport(
            lc.GetEvaluationReportRequest(version=run.version, evaluation_id=run.evaluation_id,
                                          format=lc.REPORT_FORMAT_JSON))
        return run, [(suite["name"], len(suite["results"])) for suite in json.loads(report.content)["suites"]]

    first, suites = await scored()
    assert list(first.suite_datasets) == ["datasets/quiz/versions/1"]
    assert ("datasets/quiz/versions/1", 4) in suites, suites
    # the evaluation told how far each suite had come (a watch showed "evaluate: started", then nothing for minutes)
    told = [(e.event.stage_progress.message, e.event.stage_progress.completed, e.event.stage_progress.total)
            async for e in pipelines(client).WatchPipelineRun(pp.WatchPipelineRunRequest(name=first.name))
            if e.HasField("event") and e.event.WhichOneof("kind") == "stage_progress"
            and e.event.stage_progress.stage == pp.PIPELINE_STAGE_EVALUATE]
    assert any(suite == "datasets/quiz/versions/1" and done == total > 0 for suite, done, total in told), told
    await datasets.UploadDataset(upload_messages("datasets/quiz", jsonl(quiz[:2])))
    second, suites = await scored()
    assert list(second.suite_datasets) == ["datasets/quiz/versions/2"] and second.version != first.version
    assert ("datasets/quiz/versions/2", 2) in suites, suites

    for names, code, reason, field in [
        (["datasets/nope"], grpc.StatusCode.NOT_FOUND, "STORED_DATASET_NOT_FOUND", ""),
        (["datasets/quiz/versions/0"], grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_NAME",
         "pipeline.suite_datasets[0]"),
        (["datasets/quiz"] * 17, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PIPELINE", "pipeline.suite_datasets"),
    ]:
        got = await refused(pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
            pipeline_id="bad", pipeline=from_file(suite_datasets=names))))
        assert got[:2] == (code, reason), (names, got)
        if field:
            assert [f for f, _ in got[2]] == [field], (names, got)


async def test_a_golden_dataset_is_a_pipelines_suite_and_never_its_data(make_server):
    """A dataset version of kind golden: taken as a golden suite (suite_datasets), refused as the data a pipeline
    trains on when the pipeline is created, naming the field."""
    client = await make_server()
    datasets = ds_grpc.DatasetServiceStub(client.channel)
    await datasets.UploadDataset(upload_messages("datasets/golden", golden_jsonl(GOLDEN),
                                                 kind=ds.DATASET_KIND_GOLDEN))
    trains_on_it = from_file(rollout=pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_NONE))
    trains_on_it.training.dataset_name = "datasets/golden"  # instead of the file
    code, reason, violations = await refused(pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="golden", pipeline=trains_on_it)))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "GOLDEN_DATASET_NOT_TRAINABLE")
    assert [f for f, _ in violations] == ["pipeline.training.dataset_name"]
    gated = (await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="gated", pipeline=from_file(
        suite_datasets=["datasets/golden"], rollout=pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_NONE))))).pipeline
    assert list(gated.suite_datasets) == ["datasets/golden"]
    listed = (await pipelines(client).ListPipelines(pp.ListPipelinesRequest())).pipelines
    assert [p.name for p in listed] == ["pipelines/gated"]

    # a dataset stored as golden after the pipeline was made: the run that takes it fails before training
    later = from_file(rollout=pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_NONE))
    later.training.dataset_name = "datasets/later"  # no such dataset yet: a run resolves it when it starts
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="later", pipeline=later))
    await datasets.UploadDataset(upload_messages("datasets/later", golden_jsonl(GOLDEN), kind=ds.DATASET_KIND_GOLDEN))
    run = (await pipelines(client).RunPipeline(pp.RunPipelineRequest(name="pipelines/later"))).run
    run = await finished(client, run.name)
    [detail] = [d for d in run.error.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    info = error_details_pb2.ErrorInfo()
    detail.Unpack(info)
    assert (run.state, run.error.code) == (common.JOB_STATE_FAILED, grpc.StatusCode.FAILED_PRECONDITION.value[0])
    assert (info.reason, info.metadata["field"]) == ("GOLDEN_DATASET_NOT_TRAINABLE", "pipeline.training.dataset_name")
    assert not run.training_job, run


async def test_a_run_stopped_during_its_evaluation_resumes_there_and_stores_one_evaluation(make_pg_server, data_dir,
                                                                                            database_url: str):
    """A stop while the gate answers (or just after it stored its evaluation): the resumed run evaluates once in
    all, by running the gate if the first attempt was cut off, or by taking the evaluation it stored."""
    settings = dict(pipeline_poll_seconds=0.2, eval_gate=True, eval_max_tokens=8)
    client = await make_pg_server(**settings)
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FACTS]
    (data_dir / "datasets" / "facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    training = pb.TrainingJobSpec(jsonl=common.JsonlDataset(path="facts.jsonl"), hyperparameters=pb.Hyperparameters(
        epochs=40, batch_size=4, learning_rate=2e-2))
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="judged", pipeline=pp.Pipeline(
        training=training, enabled=True)))
    run = (await pipelines(client).RunPipeline(pp.RunPipelineRequest(name="pipelines/judged"))).run
    async for update in pipelines(client).WatchPipelineRun(pp.WatchPipelineRunRequest(name=run.name)):
        if update.HasField("event") and update.event.WhichOneof("kind") == "stage_ended" \
                and update.event.stage_ended.stage == pp.PIPELINE_STAGE_TRAIN:
            break  # the gate begins
    await client.channel.close()
    await client.app.stop(0)

    restarted = await make_pg_server(**settings)
    done = await finished(restarted, run.name)
    assert (done.state, done.version, done.rollout) == (common.JOB_STATE_SUCCEEDED, "v1.0", "ACTIVATED"), done
    assert [s.stage for s in done.stages] == [pp.PIPELINE_STAGE_DATASET, pp.PIPELINE_STAGE_TRAIN,
                                              pp.PIPELINE_STAGE_EVALUATE, pp.PIPELINE_STAGE_ROLLOUT]
    assert done.stages[2].message.startswith("the gate passed v1.0")
    connection = await asyncpg.connect(database_url)
    try:
        stored = await connection.fetch("SELECT doc->>'id' AS id FROM lora_evals WHERE version = 'v1.0'")
    finally:
        await connection.close()
    assert [r["id"] for r in stored] == [done.evaluation_id]  # one evaluation, taken by the activation's gate too
    assert (await status(restarted)).last_operation.gate.evaluation_id == done.evaluation_id


@pytest.mark.slow
async def test_the_gate_refusing_stops_the_run_with_the_reason(make_pg_server):
    client = await make_pg_server(eval_gate=True, eval_max_tokens=4)
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="gated", pipeline=from_file()))
    run = (await pipelines(client).RunPipeline(pp.RunPipelineRequest(name="pipelines/gated"))).run
    done = await finished(client, run.name)
    assert done.state == common.JOB_STATE_FAILED, done
    assert done.error.message.startswith(f"the gate refused {done.version}")
    assert [(s.stage, s.state) for s in done.stages][-1] == (pp.PIPELINE_STAGE_EVALUATE, pp.STAGE_STATE_FAILED)
    assert (await status(client)).active_version == ""  # nothing rolled out


async def test_a_cron_tick_is_decided_once_and_skipped_while_a_run_is_on(make_pg_server):
    client = await make_pg_server()
    engine = client.app.engine.pipelines
    cron = pp.PipelineTrigger(cron=pp.CronTrigger(expression="*/5 * * * *", time_zone="Europe/Paris"))
    made = (await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="weekly", pipeline=from_file(triggers=[cron], rollout=pp.RolloutPolicy(
            mode=pp.ROLLOUT_MODE_NONE))))).pipeline
    created = made.create_time.ToDatetime(UTC)
    tick = created.replace(second=0, microsecond=0) + timedelta(minutes=5 - created.minute % 5)
    assert await engine.tick(tick - timedelta(seconds=1)) == []  # no tick since it was made
    fired = await engine.tick(tick + timedelta(seconds=10))
    assert [(d.fired, d.key) for d in fired] == [(True, f"cron:{tick.isoformat().replace('+00:00', 'Z')}")]
    assert await engine.tick(tick + timedelta(seconds=20)) == []  # the same tick again: decided
    skipped = await engine.tick(tick + timedelta(minutes=5))
    assert [d.fired for d in skipped] == [False] and "has not ended" in skipped[0].reason
    name = f"pipelineRuns/{fired[0].run_id}"
    await pipelines(client).CancelPipelineRun(pp.CancelPipelineRunRequest(name=name))
    async for _ in pipelines(client).WatchPipelineRun(pp.WatchPipelineRunRequest(name=name)):
        pass
    ended = (await pipelines(client).GetPipelineRun(pp.GetPipelineRunRequest(name=name))).run
    assert ended.state == common.JOB_STATE_CANCELLED, ended
    disabled = pp.Pipeline(name="pipelines/weekly", enabled=False)
    updated = (await pipelines(client).UpdatePipeline(pp.UpdatePipelineRequest(
        pipeline=disabled, update_mask={"paths": ["enabled"]}))).pipeline
    assert not updated.enabled and updated.etag != made.etag and list(updated.triggers) == [cron]
    assert await engine.tick(tick + timedelta(minutes=10)) == []  # disabled: triggers do not fire
    stale = pp.Pipeline(name="pipelines/weekly", enabled=True, etag=made.etag)
    code, reason, _ = await refused(pipelines(client).UpdatePipeline(pp.UpdatePipelineRequest(
        pipeline=stale, update_mask={"paths": ["enabled"]})))
    assert (code, reason) == (grpc.StatusCode.ABORTED, "PIPELINE_CHANGED")


@pytest.mark.parametrize(("pipeline", "code", "reason", "field"), [
    (from_file(triggers=[pp.PipelineTrigger(cron=pp.CronTrigger(expression="61 * * * *"))]),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CRON", "pipeline.triggers[0].cron.expression"),
    (from_file(triggers=[pp.PipelineTrigger(cron=pp.CronTrigger(time_zone="Mars/Olympus"))]),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TIME_ZONE", "pipeline.triggers[0].cron.time_zone"),
    # a folder of the tz database and a name too long for a file: OSErrors of ZoneInfo, not INTERNAL
    (from_file(triggers=[pp.PipelineTrigger(cron=pp.CronTrigger(time_zone="Europe"))]),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TIME_ZONE", "pipeline.triggers[0].cron.time_zone"),
    (from_file(triggers=[pp.PipelineTrigger(cron=pp.CronTrigger(time_zone="America/" + "x" * 300))]),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TIME_ZONE", "pipeline.triggers[0].cron.time_zone"),
    (from_file(triggers=[pp.PipelineTrigger(feedback=pp.FeedbackCountTrigger(count=0))]),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TRIGGER", "pipeline.triggers[0].feedback.count"),
    (from_file(triggers=[pp.PipelineTrigger()]),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TRIGGER", "pipeline.triggers[0]"),
    (from_file(rollout=pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_CANARY, canary=lc.CanaryPolicy(share=1.5))),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CANARY_POLICY", "pipeline.rollout.canary.share"),
    (from_file(base_model="no-such-model"), grpc.StatusCode.FAILED_PRECONDITION, "PIPELINE_BASE_MODEL_UNKNOWN", ""),
    (from_file(suite_paths=["missing.jsonl"]), grpc.StatusCode.FAILED_PRECONDITION, "PIPELINE_SUITE_NOT_FOUND", ""),
    # training examples, no golden case: it was taken, and every run trained, then failed to evaluate
    (from_file(suite_paths=["capitals.jsonl"]), grpc.StatusCode.INVALID_ARGUMENT, "EVAL_SUITE_INVALID",
     "pipeline.suite_paths[0]"),
    # a rollout mode this server does not know (a newer client's): refused, not read as ACTIVATE
    (from_file(rollout=pp.RolloutPolicy(mode=7)),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PIPELINE", "pipeline.rollout.mode"),
], ids=["cron", "time-zone", "time-zone-folder", "time-zone-too-long", "count", "empty-trigger", "share",
        "base-model", "suite", "suite-of-bad-lines", "rollout-mode"])
async def test_bad_pipelines_are_refused_naming_the_field(client, pipeline, code, reason, field):
    got = await refused(pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="bad",
                                                                                  pipeline=pipeline)))
    assert got[:2] == (code, reason)
    if field:
        assert [f for f, _ in got[2]] == [field]
    missing = await refused(pipelines(client).GetPipeline(pp.GetPipelineRequest(name="pipelines/bad")))
    assert missing[:2] == (grpc.StatusCode.NOT_FOUND, "PIPELINE_NOT_FOUND")


def test_an_unset_rollout_mode_is_activate_and_an_unknown_one_is_refused():
    # ROLLOUT_MODE_UNSPECIFIED is the documented default, ACTIVATE (pipeline.proto); any number but 0..3 is refused
    # naming the field instead of being read as ACTIVATE, the one that puts the version on all of the alias at once
    assert pc.rollout_from_pb(pp.RolloutPolicy()).mode is RolloutMode.ACTIVATE
    assert pc.rollout_from_pb(pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_NONE)).mode is RolloutMode.NONE
    for mode in (4, 7, -1):
        with pytest.raises(InvalidArgument) as caught:
            pc.rollout_from_pb(pp.RolloutPolicy(mode=mode))
        assert caught.value.reason == "INVALID_PIPELINE"
        assert [v.field for v in caught.value.violations] == ["pipeline.rollout.mode"]


async def test_an_update_to_an_unknown_rollout_mode_is_refused(client):
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="modest", pipeline=from_file(
        rollout=pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_NONE))))
    got = await refused(pipelines(client).UpdatePipeline(pp.UpdatePipelineRequest(
        pipeline=pp.Pipeline(name="pipelines/modest", rollout=pp.RolloutPolicy(mode=9)),
        update_mask={"paths": ["rollout"]})))
    assert got[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PIPELINE")
    assert [f for f, _ in got[2]] == ["pipeline.rollout.mode"]
    kept = (await pipelines(client).GetPipeline(pp.GetPipelineRequest(name="pipelines/modest"))).pipeline
    assert kept.rollout.mode == pp.ROLLOUT_MODE_NONE


async def test_names_ids_and_duplicates(client):
    stub_ = pipelines(client)
    got = await refused(stub_.CreatePipeline(pp.CreatePipelineRequest(pipeline_id="Not_OK", pipeline=from_file())))
    assert got[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_NAME")
    await stub_.CreatePipeline(pp.CreatePipelineRequest(pipeline_id="once", pipeline=from_file()))
    got = await refused(stub_.CreatePipeline(pp.CreatePipelineRequest(pipeline_id="once", pipeline=from_file())))
    assert got[:2] == (grpc.StatusCode.ALREADY_EXISTS, "PIPELINE_EXISTS")
    got = await refused(stub_.UpdatePipeline(pp.UpdatePipelineRequest(
        pipeline=pp.Pipeline(name="pipelines/once"), update_mask={"paths": ["base_model"]})))
    assert got[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_UPDATE_MASK")
    listed = (await stub_.ListPipelines(pp.ListPipelinesRequest())).pipelines
    assert [p.name for p in listed] == ["pipelines/once"]
    await stub_.DeletePipeline(pp.DeletePipelineRequest(name="pipelines/once"))
    got = await refused(stub_.DeletePipeline(pp.DeletePipelineRequest(name="pipelines/once")))
    assert got[:2] == (grpc.StatusCode.NOT_FOUND, "PIPELINE_NOT_FOUND")


@pytest.mark.slow
async def test_drift_fires_on_prompts_from_elsewhere_and_not_on_prompts_alike(make_server):
    client = await make_server(drift_min_samples=10, drift_permutations=300, pipeline_drift_check_seconds=0.001)
    version = await train(client)
    await lc_grpc.LoraControlServiceStub(client.channel).ActivateAdapter(lc.ActivateAdapterRequest(version=version))
    engine = client.app.engine.pipelines
    now = datetime.now(UTC)
    await send(client, *drift_events(same_kind_of_prompts(24), fb.FEEDBACK_KIND_THUMBS_UP, now - timedelta(days=5),
                                     "alike"))
    drift = pp.PipelineTrigger(drift=pp.DriftTrigger())
    publish_only = pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_NONE)
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="drifty", pipeline=from_file(triggers=[drift], rollout=publish_only)))
    assert await engine.tick() == []  # users ask what the version was trained on

    await send(client, *drift_events(recipes_and_code(30, seed=2), fb.FEEDBACK_KIND_THUMBS_DOWN,
                                     now - timedelta(hours=1), "elsewhere"))
    fired = await engine.tick()
    assert [(d.fired, d.kind.value) for d in fired] == [(True, "DRIFT")], fired
    assert "over the detector's threshold" in fired[0].reason
    name = f"pipelineRuns/{fired[0].run_id}"
    await pipelines(client).CancelPipelineRun(pp.CancelPipelineRunRequest(name=name))
    async for _ in pipelines(client).WatchPipelineRun(pp.WatchPipelineRunRequest(name=name)):
        pass
