"""API-contract defects found in review: each test states what the proto promises and checks what is served.

1. A pipeline's training template is refused on the template's own paths in the request (``pipeline.training.*``),
   not on a CreateTrainingJobRequest's (``spec.*``): server.convert.spec_from_pb names every violation from the
   root it is given.
2. ``PipelineRun.request_id`` is the key the run was started with (RunPipeline's request_id, "" when it gave none,
   or ``<pipeline>/<occasion>`` for a trigger's run), never the run's internal dedup key
   (engine.pipelines.triggers.shown_request_id); the dedup key still tells a pipeline from a deleted predecessor.
3. A page token is good only for the list, and the filter values, that issued it (engine.names.PageScope): any other
   list call refuses it as a token this server did not issue (INVALID_ARGUMENT INVALID_PAGE_TOKEN, ``page_token``).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from engine.errors import InvalidArgument
from engine.names import PageScope, decode_page_token, encode_page_token
from learning.v1 import adapter_pb2 as ad
from learning.v1 import adapter_pb2_grpc as ad_grpc
from learning.v1 import common_pb2 as common
from learning.v1 import dataset_pb2 as ds
from learning.v1 import dataset_pb2_grpc as ds_grpc
from learning.v1 import fisher_pb2 as fi
from learning.v1 import fisher_pb2_grpc as fi_grpc
from learning.v1 import online_pb2 as on
from learning.v1 import online_pb2_grpc as on_grpc
from learning.v1 import pipeline_pb2 as pp
from learning.v1 import pipeline_pb2_grpc as pp_grpc
from learning.v1 import training_pb2 as pb
from learning.v1 import training_pb2_grpc as pb_grpc
from tests.server.conftest import error_details, spec

PUBLISH_ONLY = pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_NONE)


def pipelines(client) -> pp_grpc.PipelineServiceStub:
    return pp_grpc.PipelineServiceStub(client.channel)


async def refused(call) -> tuple[grpc.StatusCode, str, list[str], str]:
    """(code, reason, violated fields, message) of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    info, violations = error_details(caught.value)
    return caught.value.code(), info.reason, [f for f, _ in violations], caught.value.details() or ""


# ---- 1. a pipeline's training template: violations named by the template's paths in this request ------------------

BAD_TEMPLATES = [
    # (what is wrong, the template, the field of CreatePipelineRequest that holds it)
    ("negative learning rate", spec(learning_rate=-1.0), "pipeline.training.hyperparameters.learning_rate"),
    ("NaN LoRA alpha", pb.TrainingJobSpec(jsonl=common.JsonlDataset(path="capitals.jsonl"),
                                          lora=common.LoraConfig(alpha=float("nan"))), "pipeline.training.lora.alpha"),
    ("unknown precision (a newer client's enum value)", pb.TrainingJobSpec(
        jsonl=common.JsonlDataset(path="capitals.jsonl"), hyperparameters=pb.Hyperparameters(precision=99)),
     "pipeline.training.hyperparameters.precision"),
    ("no dataset", pb.TrainingJobSpec(), "pipeline.training.dataset"),
    ("checkpoints kept out of range", pb.TrainingJobSpec(jsonl=common.JsonlDataset(path="capitals.jsonl"),
                                                         checkpoints=pb.CheckpointPolicy(keep=0)),
     "pipeline.training.checkpoints.keep"),
    ("base protection fraction out of range", pb.TrainingJobSpec(
        jsonl=common.JsonlDataset(path="capitals.jsonl"), base_protection=common.BaseProtection(fraction=5.0)),
     "pipeline.training.base_protection.fraction"),
]


@pytest.mark.parametrize(("what", "template", "field"), BAD_TEMPLATES, ids=[b[0] for b in BAD_TEMPLATES])
async def test_create_pipeline_names_the_bad_template_field_by_its_path_in_the_request(client, what, template, field):
    code, reason, fields, message = await refused(pipelines(client).CreatePipeline(
        pp.CreatePipelineRequest(pipeline_id="p", pipeline=pp.Pipeline(training=template))))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TRAINING_SPEC"), what
    assert field in fields, f"{what}: violations name {fields}"
    assert not [f for f in fields if not f.startswith("pipeline.training.")], fields
    assert f"{field}:" in message and "spec." not in message, message  # the message names the same paths


async def test_a_training_job_with_the_same_spec_is_still_refused_on_its_spec_paths(client):
    code, _, fields, message = await refused(client.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=spec(learning_rate=-1.0))))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["spec.hyperparameters.learning_rate"])
    assert message.startswith("invalid training job spec: spec.hyperparameters.learning_rate:"), message


async def test_update_pipeline_names_the_bad_template_field_by_its_path_in_the_request(client):
    stub = pipelines(client)
    await stub.CreatePipeline(pp.CreatePipelineRequest(pipeline_id="p", pipeline=pp.Pipeline(training=spec())))
    code, _, fields, message = await refused(stub.UpdatePipeline(pp.UpdatePipelineRequest(
        pipeline=pp.Pipeline(name="pipelines/p", training=spec(learning_rate=-1.0)),
        update_mask={"paths": ["training"]})))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["pipeline.training.hyperparameters.learning_rate"])
    assert message.startswith("invalid training job spec: pipeline.training.hyperparameters.learning_rate:"), message


# ---- 2. PipelineRun.request_id is the key the run was started with ------------------------------------------------

async def first_snapshot(stub: pp_grpc.PipelineServiceStub, name: str) -> pp.PipelineRun:
    """The snapshot WatchPipelineRun sends first (the run does not end: the stream would not either)."""
    call = stub.WatchPipelineRun(pp.WatchPipelineRunRequest(name=name))
    try:
        async for msg in call:
            assert msg.HasField("snapshot"), msg
            return msg.snapshot
    finally:
        call.cancel()
    raise AssertionError("the watch sent nothing")


async def ended_by_cancel(stub: pp_grpc.PipelineServiceStub, name: str) -> None:
    """Cancel the run and wait for it to end (its watch ends with it): no run of the pipeline is active after."""
    await stub.CancelPipelineRun(pp.CancelPipelineRunRequest(name=name))
    async for _ in stub.WatchPipelineRun(pp.WatchPipelineRunRequest(name=name), timeout=120):
        pass


async def test_a_run_started_with_a_request_id_reports_that_request_id_everywhere(make_server):
    # pipeline.proto, PipelineRun.request_id: "The idempotency key it was started with: RunPipeline's request_id,
    # or "<pipeline>/<occasion>" for a trigger's run."
    client = await make_server(embedded_worker=False)  # the run never ends: nothing trains its training job
    stub = pipelines(client)
    await stub.CreatePipeline(pp.CreatePipelineRequest(pipeline_id="p", pipeline=pp.Pipeline(training=spec())))
    request = pp.RunPipelineRequest(name="pipelines/p", request_id="nightly-42")
    run = (await stub.RunPipeline(request)).run
    replayed = (await stub.RunPipeline(request)).run  # the same request again: the run it started
    got = (await stub.GetPipelineRun(pp.GetPipelineRunRequest(name=run.name))).run
    listed = (await stub.ListPipelineRuns(pp.ListPipelineRunsRequest(pipeline="pipelines/p"))).runs
    watched = await first_snapshot(stub, run.name)
    assert replayed.name == run.name and [r.name for r in listed] == [run.name]
    assert [r.request_id for r in (run, replayed, got, *listed, watched)] == ["nightly-42"] * 5


async def test_a_run_started_without_a_request_id_reports_none(make_server):
    client = await make_server(embedded_worker=False)
    stub = pipelines(client)
    await stub.CreatePipeline(pp.CreatePipelineRequest(pipeline_id="p", pipeline=pp.Pipeline(training=spec())))
    run = (await stub.RunPipeline(pp.RunPipelineRequest(name="pipelines/p"))).run
    got = (await stub.GetPipelineRun(pp.GetPipelineRunRequest(name=run.name))).run
    assert (run.request_id, got.request_id) == ("", "")
    decisions = (await stub.ListTriggerDecisions(pp.ListTriggerDecisionsRequest(pipeline="pipelines/p"))).decisions
    assert [d.run for d in decisions] == [run.name]
    # its occasion is one no request_id names: a client's request_id equal to the key's tail is another request
    tail = decisions[0].key.split("#", 1)[1]
    await ended_by_cancel(stub, run.name)
    other = (await stub.RunPipeline(pp.RunPipelineRequest(name="pipelines/p", request_id=tail))).run
    await ended_by_cancel(stub, other.name)
    assert (other.name != run.name, other.request_id) == (True, tail)


async def test_a_trigger_run_reports_its_pipeline_and_occasion(make_server):
    client = await make_server(embedded_worker=False)
    cron = pp.PipelineTrigger(cron=pp.CronTrigger(expression="*/5 * * * *", time_zone="UTC"))
    made = (await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="nightly", pipeline=pp.Pipeline(training=spec(), triggers=[cron], enabled=True,
                                                    rollout=PUBLISH_ONLY)))).pipeline
    created = made.create_time.ToDatetime(UTC)
    tick = created.replace(second=0, microsecond=0) + timedelta(minutes=5 - created.minute % 5)
    key = f"cron:{tick.isoformat().replace('+00:00', 'Z')}"
    fired = await client.app.engine.pipelines.tick(tick + timedelta(seconds=10))
    assert [(d.key, d.fired) for d in fired] == [(key, True)], fired
    runs = (await pipelines(client).ListPipelineRuns(pp.ListPipelineRunsRequest(pipeline="pipelines/nightly"))).runs
    await ended_by_cancel(pipelines(client), runs[0].name)
    assert [r.request_id for r in runs] == [f"nightly/{key}"]


async def test_the_same_request_id_on_a_pipeline_created_again_starts_its_own_run(make_server):
    # The dedup key keeps the pipeline's creation time: a pipeline deleted and created again under the same id is
    # another pipeline, and its RunPipeline with the same request_id starts a run of its own (both show that id).
    client = await make_server(embedded_worker=False)
    stub = pipelines(client)
    create = pp.CreatePipelineRequest(pipeline_id="p", pipeline=pp.Pipeline(training=spec()))
    request = pp.RunPipelineRequest(name="pipelines/p", request_id="again")
    await stub.CreatePipeline(create)
    first = (await stub.RunPipeline(request)).run
    await ended_by_cancel(stub, first.name)
    await stub.DeletePipeline(pp.DeletePipelineRequest(name="pipelines/p"))
    await stub.CreatePipeline(create)
    second = (await stub.RunPipeline(request)).run
    await ended_by_cancel(stub, second.name)
    assert second.name != first.name and (first.request_id, second.request_id) == ("again", "again")


# ---- 3. page tokens are bound to the List call and filter that issued them ---------------------------------------

OTHER_LISTS = [
    ("ListFisherJobs", lambda ch, t: fi_grpc.FisherServiceStub(ch).ListFisherJobs(
        fi.ListFisherJobsRequest(page_token=t))),
    ("ListFisherSnapshots", lambda ch, t: fi_grpc.FisherServiceStub(ch).ListFisherSnapshots(
        fi.ListFisherSnapshotsRequest(page_token=t))),
    ("ListPipelines", lambda ch, t: pp_grpc.PipelineServiceStub(ch).ListPipelines(
        pp.ListPipelinesRequest(page_token=t))),
    ("ListPipelineRuns", lambda ch, t: pp_grpc.PipelineServiceStub(ch).ListPipelineRuns(
        pp.ListPipelineRunsRequest(pipeline="pipelines/p", page_token=t))),
    ("ListDatasets", lambda ch, t: ds_grpc.DatasetServiceStub(ch).ListDatasets(ds.ListDatasetsRequest(page_token=t))),
    ("ListOnlineSessions", lambda ch, t: on_grpc.OnlineLearningServiceStub(ch).ListOnlineSessions(
        on.ListOnlineSessionsRequest(page_token=t))),
    ("ListTrainingJobs with another state filter", lambda ch, t: pb_grpc.TrainingServiceStub(ch).ListTrainingJobs(
        pb.ListTrainingJobsRequest(page_token=t, states=[common.JOB_STATE_CANCELLED]))),
    ("ListTrainingJobs without a state filter", lambda ch, t: pb_grpc.TrainingServiceStub(ch).ListTrainingJobs(
        pb.ListTrainingJobsRequest(page_token=t))),
    ("ListAdapters", lambda ch, t: ad_grpc.AdapterServiceStub(ch).ListAdapters(ad.ListAdaptersRequest(page_token=t))),
]


async def assert_invalid_page_token(call) -> None:
    # error_reason.proto: "INVALID_ARGUMENT: a page_token this server did not issue." (INVALID_PAGE_TOKEN)
    code, reason, fields, _ = await refused(call)
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", ["page_token"])


@pytest.mark.parametrize(("rpc", "call"), OTHER_LISTS, ids=[o[0] for o in OTHER_LISTS])
async def test_a_training_job_page_token_is_refused_by_other_list_calls(make_server, rpc, call):
    # the list requests: "page_token: From a previous response's next_page_token" (of the same call).
    client = await make_server(embedded_worker=False)
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="p",
                                                                    pipeline=pp.Pipeline(training=spec())))
    for _ in range(2):
        await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec()))
    first = await client.training.ListTrainingJobs(pb.ListTrainingJobsRequest(page_size=1,
                                                                              states=[common.JOB_STATE_QUEUED]))
    assert first.next_page_token
    await assert_invalid_page_token(call(client.channel, first.next_page_token))


async def test_a_page_token_pages_its_own_list_to_the_end(make_server):
    # The same filter in another order is the same filter: the listing goes on, each job once.
    client = await make_server(embedded_worker=False)
    made = {(await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec()))).training_job.name
            for _ in range(3)}
    orders = [[common.JOB_STATE_QUEUED, common.JOB_STATE_PAUSED], [common.JOB_STATE_PAUSED, common.JOB_STATE_QUEUED]]
    seen, token = [], ""
    for i in range(4):
        page = await client.training.ListTrainingJobs(pb.ListTrainingJobsRequest(
            page_size=1, states=orders[i % 2], page_token=token))
        seen += [j.name for j in page.training_jobs]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(made) and not token


@pytest.mark.slow
async def test_a_pipeline_run_page_token_is_refused_for_another_pipeline(make_server):
    client = await make_server(embedded_worker=False)
    stub = pipelines(client)
    for pipeline_id in ("a", "b"):
        await stub.CreatePipeline(pp.CreatePipelineRequest(pipeline_id=pipeline_id,
                                                           pipeline=pp.Pipeline(training=spec())))
    for _ in range(2):  # runs never overlap: the first ends before the second starts
        run = (await stub.RunPipeline(pp.RunPipelineRequest(name="pipelines/a"))).run
        await ended_by_cancel(stub, run.name)
    first = await stub.ListPipelineRuns(pp.ListPipelineRunsRequest(pipeline="pipelines/a", page_size=1))
    rest = await stub.ListPipelineRuns(pp.ListPipelineRunsRequest(pipeline="pipelines/a", page_size=1,
                                                                  page_token=first.next_page_token))
    assert len(first.runs) == len(rest.runs) == 1 and first.runs[0].name != rest.runs[0].name
    await assert_invalid_page_token(stub.ListPipelineRuns(pp.ListPipelineRunsRequest(
        pipeline="pipelines/b", page_token=first.next_page_token)))


async def test_a_page_token_from_before_tokens_had_a_scope_is_refused(make_server):
    # A client holding one starts its listing again: its cursor names no list, so no list can take it.
    client = await make_server(embedded_worker=False)
    old = base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00+00:00", "0" * 32]).encode()).decode()
    await assert_invalid_page_token(client.training.ListTrainingJobs(pb.ListTrainingJobsRequest(page_token=old)))


def test_a_token_decodes_only_under_the_scope_that_issued_it():
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    scope = PageScope("fisherSnapshots", ("tiny", "v1.0"))
    token = encode_page_token(scope, when, "abc")
    assert decode_page_token(token, PageScope("fisherSnapshots", ("tiny", "v1.0"))) == (when, "abc")
    for other in (PageScope("fisherSnapshots", ("tiny", "v1.1")), PageScope("fisherSnapshots"),
                  PageScope("trainingJobs", ("tiny", "v1.0"))):
        with pytest.raises(InvalidArgument) as caught:
            decode_page_token(token, other)
        assert caught.value.reason == "INVALID_PAGE_TOKEN"
        assert "issued for another listing or other filters" in caught.value.message  # not "not one this server issued"
    assert "tiny" not in base64.urlsafe_b64decode(token).decode()  # opaque: the filters travel as a digest
    assert len(token) < 120
