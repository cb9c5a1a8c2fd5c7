"""TrainingService against a real in-process server, real PostgreSQL and a tiny Llama."""

from __future__ import annotations

import asyncio
import math
import tarfile
from pathlib import Path

import grpc
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from engine.training.models import select_device
from engine.training.spec import Precision
from learning.v1 import adapter_pb2 as adapter_pb
from learning.v1 import adapter_pb2_grpc as adapter_grpc
from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as pb
from tests.server.conftest import TINY, aiter_events, error_details, spec, watch_all


# These tests are about the servicers and the engine behind them, not the stores: they run over the engine on
# in-memory stores (tests/fixtures/memory_engine.py).
@pytest.fixture
async def client(memory_client):
    return memory_client


@pytest.fixture
def make_server(make_memory_server):
    return make_memory_server


TERMINAL = {common.JOB_STATE_SUCCEEDED, common.JOB_STATE_FAILED, common.JOB_STATE_CANCELLED}


async def test_job_trains_streams_and_publishes_an_adapter(
    client, data_dir: Path, tiny_model_dir: Path, tmp_path: Path
):
    created = await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=4)))
    job = created.training_job
    assert job.name.startswith("trainingJobs/")
    assert job.state == common.JOB_STATE_QUEUED
    assert job.spec.lora.rank == 16 and list(job.spec.lora.target_modules) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert job.spec.base_model == TINY

    messages = await watch_all(client.training, job.name)
    assert messages[0].HasField("snapshot") and messages[0].snapshot.name == job.name
    events = [m.event for m in messages[1:]]
    assert all(m.HasField("event") for m in messages[1:])
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))

    states = [e.state_change.state for e in events if e.HasField("state_change")]
    assert states == [
        common.JOB_STATE_QUEUED, common.JOB_STATE_PREPARING, common.JOB_STATE_RUNNING, common.JOB_STATE_SUCCEEDED,
    ]
    steps = [e.step_metrics for e in events if e.HasField("step_metrics")]
    # 24 examples, batch 4, 4 epochs
    assert [s.step for s in steps] == list(range(1, 25))
    assert all(s.total_steps == 24 for s in steps)
    first, last = sum(s.loss for s in steps[:3]) / 3, sum(s.loss for s in steps[-3:]) / 3
    assert last < first * 0.7, f"loss did not fall: {first:.3f} -> {last:.3f}"
    for s in steps:
        assert s.loss == pytest.approx(s.task_loss + s.ewc_penalty)
        assert s.tokens_per_second > 0 and s.learning_rate > 0 and s.grad_norm > 0

    final = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert final.state == common.JOB_STATE_SUCCEEDED
    assert final.output_adapter_version == "v1.0"
    assert final.progress.fraction == 1.0 and final.progress.completed_steps == 24
    assert final.dataset.example_count == 24 and len(final.dataset.digest) == 64
    assert final.dataset.target_token_count > 24
    assert final.device == select_device(Precision.AUTO).device  # the machine's: cuda where there is one
    assert final.last_sequence == events[-1].sequence
    assert final.start_time.seconds > 0 and final.end_time.ToDatetime() >= final.start_time.ToDatetime()

    version_dir = data_dir / "artifacts" / "adapters" / TINY / "v1.0"
    archive_name, manifest_name = sorted(p.name for p in version_dir.iterdir())
    assert archive_name.endswith(".adapter.tar.gz") and manifest_name == "metadata.json"  # <attempt>.adapter.tar.gz
    adapter_dir = tmp_path / "v1.0"
    with tarfile.open(version_dir / archive_name) as archive:
        assert sorted(archive.getnames()) == ["adapter_config.json", "adapter_model.safetensors"]
        archive.extractall(adapter_dir, filter="data")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, adapter_dir)
        after = tuned(ids).logits
    assert not torch.allclose(before, after), "the adapter does not change the model's output"

    second = await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=1)))
    done = await watch_all(client.training, second.training_job.name)
    assert done[-1].event.state_change.state == common.JOB_STATE_SUCCEEDED
    again = await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=second.training_job.name))
    assert again.training_job.output_adapter_version == "v2.0"  # a fresh adapter starts a new major line


async def test_watch_resumes_after_a_sequence_and_serves_many_watchers(client):
    job = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=3)))).training_job
    watchers = [watch_all(client.training, job.name) for _ in range(4)]
    results = await asyncio.gather(*watchers)
    streams = [[m.event for m in r[1:]] for r in results]
    assert all(s == streams[0] for s in streams), "concurrent watchers saw different events"
    full = streams[0]
    assert full[-1].state_change.state == common.JOB_STATE_SUCCEEDED

    cut = full[5].sequence
    resumed = await watch_all(client.training, job.name, after=cut)
    assert resumed[0].HasField("snapshot")
    assert resumed[0].snapshot.state == common.JOB_STATE_SUCCEEDED
    assert [m.event for m in resumed[1:]] == full[6:]
    beyond = await watch_all(client.training, job.name, after=full[-1].sequence)
    assert len(beyond) == 1 and beyond[0].HasField("snapshot")


async def test_resume_while_running_gets_only_newer_events(client):
    job = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=4)))).training_job
    stream = client.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=job.name))
    seen = []
    async for event in aiter_events(stream):
        seen.append(event)
        if event.HasField("step_metrics") and event.step_metrics.step == 2:
            break
    stream.cancel()  # the client drops; the job must go on
    rest = await watch_all(client.training, job.name, after=seen[-1].sequence)
    tail = [m.event for m in rest[1:]]
    assert tail[0].sequence == seen[-1].sequence + 1
    assert tail[-1].state_change.state == common.JOB_STATE_SUCCEEDED
    whole = [m.event for m in (await watch_all(client.training, job.name))[1:]]
    assert whole == seen + tail


async def test_cancel_stops_the_job_at_the_next_step(client):
    job = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=500)))).training_job
    stream = client.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=job.name))
    events = []
    cancelled = False
    async for event in aiter_events(stream):
        events.append(event)
        if event.HasField("step_metrics") and not cancelled:
            response = await client.training.CancelTrainingJob(pb.CancelTrainingJobRequest(name=job.name))
            assert response.training_job.state in (common.JOB_STATE_CANCELLING, common.JOB_STATE_CANCELLED)
            cancelled = True
    states = [e.state_change.state for e in events if e.HasField("state_change")]
    assert states[-2:] == [common.JOB_STATE_CANCELLING, common.JOB_STATE_CANCELLED]
    steps = [e for e in events if e.HasField("step_metrics")]
    assert len(steps) < 10, "cancellation was not checked every step"
    final = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert final.state == common.JOB_STATE_CANCELLED and not final.output_adapter_version
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.training.CancelTrainingJob(pb.CancelTrainingJobRequest(name=job.name))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_jobs_and_events_survive_a_restart(make_server):
    first = await make_server()
    job = (await first.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=1)))).training_job
    before = await watch_all(first.training, job.name)
    await first.app.stop(0)

    second = await make_server()
    listed = (await second.training.ListTrainingJobs(pb.ListTrainingJobsRequest())).training_jobs
    assert [j.name for j in listed] == [job.name]
    after = await watch_all(second.training, job.name)
    assert [m.event for m in after[1:]] == [m.event for m in before[1:]]
    assert after[0].snapshot.state == common.JOB_STATE_SUCCEEDED
    assert after[0].snapshot.output_adapter_version == "v1.0"


@pytest.mark.slow
async def test_a_restart_hands_the_running_job_to_the_next_worker_and_runs_the_queued_one(make_server):
    """A server stopping (SIGTERM) stops its running job at the next step and queues it again; the next worker
    (here the restarted server) continues it, and runs what was queued. The log stays one gapless sequence."""
    first = await make_server()
    running = (await first.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=40)))).training_job
    queued = (await first.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=1)))).training_job
    async for event in aiter_events(first.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=running.name))):
        if event.HasField("step_metrics"):
            break
    await first.app.stop(0)
    second = await make_server()
    done = await watch_all(second.training, running.name)
    events = [m.event for m in done[1:]]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    requeued = [e.state_change for e in events if e.state_change.state == common.JOB_STATE_QUEUED]
    assert len(requeued) == 2 and "stopped" in requeued[1].message  # accepted, then handed on at the stop
    assert events[-1].state_change.state == common.JOB_STATE_SUCCEEDED
    assert done[-1].event.state_change.state == common.JOB_STATE_SUCCEEDED
    other = await watch_all(second.training, queued.name)
    assert other[-1].event.state_change.state == common.JOB_STATE_SUCCEEDED


async def test_create_is_idempotent_by_request_id(client):
    request = pb.CreateTrainingJobRequest(spec=spec(epochs=1), request_id="req-42")
    first = (await client.training.CreateTrainingJob(request)).training_job
    second = (await client.training.CreateTrainingJob(request)).training_job
    assert first.name == second.name
    listed = (await client.training.ListTrainingJobs(pb.ListTrainingJobsRequest())).training_jobs
    assert len(listed) == 1
    other = pb.CreateTrainingJobRequest(spec=spec(epochs=2), request_id="req-42")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.training.CreateTrainingJob(other)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    await watch_all(client.training, first.name)


@pytest.mark.slow
async def test_list_pages_newest_first_and_filters_by_state(client):
    names = []
    for _ in range(3):
        job = await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=1)))
        names.append(job.training_job.name)
    for name in names:
        await watch_all(client.training, name)
    page1 = await client.training.ListTrainingJobs(pb.ListTrainingJobsRequest(page_size=2))
    page2 = await client.training.ListTrainingJobs(
        pb.ListTrainingJobsRequest(page_size=2, page_token=page1.next_page_token)
    )
    assert [j.name for j in page1.training_jobs] + [j.name for j in page2.training_jobs] == names[::-1]
    assert page1.next_page_token and not page2.next_page_token
    failed = await client.training.ListTrainingJobs(pb.ListTrainingJobsRequest(states=[common.JOB_STATE_FAILED]))
    assert list(failed.training_jobs) == []
    ok = await client.training.ListTrainingJobs(pb.ListTrainingJobsRequest(states=[common.JOB_STATE_SUCCEEDED]))
    assert len(ok.training_jobs) == 3


async def test_validate_only_creates_nothing(client):
    response = await client.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=spec(), validate_only=True)
    )
    checked = response.training_job
    assert (checked.name, checked.state, checked.HasField("create_time")) == ("", common.JOB_STATE_UNSPECIFIED, False)
    assert checked.dataset.example_count == 24 and checked.spec.hyperparameters.epochs == 2  # what was resolved
    listed = await client.training.ListTrainingJobs(pb.ListTrainingJobsRequest())
    assert list(listed.training_jobs) == []


async def test_accumulation_checkpointing_and_packing_are_job_options(client):
    default = (await client.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=spec(epochs=1), validate_only=True))).training_job
    hp = default.spec.hyperparameters
    assert (hp.gradient_accumulation_steps, hp.gradient_checkpointing, hp.packing) == (1, False, True)

    asked = spec(epochs=1, batch_size=2, gradient_accumulation_steps=3, gradient_checkpointing=True, packing=False)
    job = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=asked))).training_job
    messages = await watch_all(client.training, job.name)
    steps = [m.event.step_metrics for m in messages[1:] if m.event.HasField("step_metrics")]
    assert [s.step for s in steps] == [1, 2, 3, 4] and all(s.total_steps == 4 for s in steps)  # 24 examples / (2 x 3)
    stored = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert stored.state == common.JOB_STATE_SUCCEEDED
    hp = stored.spec.hyperparameters
    assert (hp.batch_size, hp.gradient_accumulation_steps, hp.gradient_checkpointing, hp.packing) == (2, 3, True, False)


async def test_a_job_asking_for_more_gpus_than_its_worker_has_fails_with_the_reason(client):
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    job = (await client.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=spec(epochs=1, num_devices=available + 2)))).training_job
    await watch_all(client.training, job.name)
    failed = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert failed.state == common.JOB_STATE_FAILED and not failed.output_adapter_version
    assert failed.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert f"{available + 2} GPUs were requested but this worker has {available}" in failed.error.message


async def test_num_devices_out_of_range_is_invalid(client):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(num_devices=65)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = error_details(err.value)
    assert info.reason == "INVALID_TRAINING_SPEC"
    assert ("spec.hyperparameters.num_devices", "must be at most 64") in violations


async def test_self_rehearsal_mixes_the_base_models_answers_in_and_is_recorded_on_the_version(client):
    asked = spec(epochs=1)
    asked.base_protection.CopyFrom(common.BaseProtection(
        method=common.BASE_PROTECTION_METHOD_SELF_REHEARSAL, fraction=0.2))
    job = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=asked))).training_job
    assert job.spec.base_protection.method == common.BASE_PROTECTION_METHOD_SELF_REHEARSAL
    events = [m.event for m in (await watch_all(client.training, job.name))[1:]]
    notices = {e.notice.code: e.notice.message for e in events if e.HasField("notice")}
    assert "mixed 6 of the base model's own answers" in notices["BASE_REHEARSAL_MIXED"]  # 0.2 of 24 + 6
    steps = [e.step_metrics for e in events if e.HasField("step_metrics")]
    assert steps[-1].total_steps == 8  # 30 examples in batches of 4
    done = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert done.state == common.JOB_STATE_SUCCEEDED and done.base_rehearsed_examples == 6
    assert done.dataset.example_count == 24  # the user's data; the rehearsed answers are not part of it
    version = (await adapter_grpc.AdapterServiceStub(client.channel).GetAdapter(adapter_pb.GetAdapterRequest(
        base_model=TINY, version=done.output_adapter_version))).adapter
    assert version.base_protection.method == common.BASE_PROTECTION_METHOD_SELF_REHEARSAL
    assert round(version.base_protection.fraction, 6) == 0.2 and version.base_rehearsed_examples == 6


@pytest.mark.parametrize(("prompt_kl_weight", "how"), [
    (None, "a KL term to the base model's distribution (weight 0.5) only"),
    (1.5, "a KL term to the base model's distribution (weight 0.5) only; and the same KL term at the training "
          "examples' prompt positions (weight 1.5)"),
])
async def test_base_kl_holds_the_base_models_answers_to_its_distribution_and_is_recorded_on_the_version(
        client, prompt_kl_weight, how):
    asked = spec(epochs=1)
    asked.base_protection.CopyFrom(common.BaseProtection(
        method=common.BASE_PROTECTION_METHOD_BASE_KL, fraction=0.2, kl_weight=0.5, prompt_kl_weight=prompt_kl_weight))
    job = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=asked))).training_job
    assert job.spec.base_protection.method == common.BASE_PROTECTION_METHOD_BASE_KL
    assert job.spec.base_protection.kl_weight == 0.5
    assert job.spec.base_protection.prompt_kl_weight == (prompt_kl_weight or 0)  # unset: the server's 0
    events = [m.event for m in (await watch_all(client.training, job.name))[1:]]
    notices = {e.notice.code: e.notice.message for e in events if e.HasField("notice")}
    assert notices["BASE_REHEARSAL_MIXED"].endswith(how)
    steps = [e.step_metrics for e in events if e.HasField("step_metrics")]
    assert steps[-1].total_steps == 8 and all(s.task_loss > 0 for s in steps)  # 30 examples in batches of 4
    done = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert done.state == common.JOB_STATE_SUCCEEDED and done.base_rehearsed_examples == 6
    version = (await adapter_grpc.AdapterServiceStub(client.channel).GetAdapter(adapter_pb.GetAdapterRequest(
        base_model=TINY, version=done.output_adapter_version))).adapter
    assert version.base_protection.method == common.BASE_PROTECTION_METHOD_BASE_KL
    assert (round(version.base_protection.fraction, 6), version.base_protection.kl_weight,
            version.base_protection.prompt_kl_weight) == (0.2, 0.5, prompt_kl_weight or 0)
    assert version.base_rehearsed_examples == 6


async def test_ewc_against_the_base_model_adds_its_penalty_and_is_recorded_on_the_version(client, data_dir: Path):
    asked = spec(epochs=2)
    asked.base_protection.CopyFrom(common.BaseProtection(method=common.BASE_PROTECTION_METHOD_EWC_BASE,
                                                         ewc_lambda=50))
    job = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=asked))).training_job
    assert (job.spec.base_protection.method, job.spec.base_protection.ewc_lambda) == (
        common.BASE_PROTECTION_METHOD_EWC_BASE, 50)
    events = [m.event for m in (await watch_all(client.training, job.name))[1:]]
    notices = {e.notice.code: e.notice.message for e in events if e.HasField("notice")}
    assert notices["BASE_EWC"].startswith("EWC against the base model (lambda 50)")
    assert "BASE_REHEARSAL_MIXED" not in notices  # no rows mixed in
    steps = [e.step_metrics for e in events if e.HasField("step_metrics")]
    assert steps[-1].total_steps == 12  # the 24 examples alone, in batches of 4, twice
    assert steps[0].ewc_penalty == 0  # B = 0: the base model's weights
    assert all(s.ewc_penalty > 0 for s in steps[1:])  # B @ A moved away from them
    assert all(math.isclose(s.loss, s.task_loss + s.ewc_penalty, rel_tol=1e-5) for s in steps)
    done = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert done.state == common.JOB_STATE_SUCCEEDED and done.base_rehearsed_examples == 0
    version = (await adapter_grpc.AdapterServiceStub(client.channel).GetAdapter(adapter_pb.GetAdapterRequest(
        base_model=TINY, version=done.output_adapter_version))).adapter
    assert (version.base_protection.method, version.base_protection.ewc_lambda) == (
        common.BASE_PROTECTION_METHOD_EWC_BASE, 50)
    assert len(list((data_dir / "models").glob("base-kfac-*.safetensors"))) == 1  # measured once, kept


@pytest.mark.parametrize(("protection", "field", "description"), [
    (common.BaseProtection(fraction=0.95), "spec.base_protection.fraction", "must lie in [0, 0.9]"),
    (common.BaseProtection(ewc_lambda=-1), "spec.base_protection.ewc_lambda", "must lie in [0, 100000]"),
    (common.BaseProtection(ewc_lambda=math.inf), "spec.base_protection.ewc_lambda", "must lie in [0, 100000]"),
    (common.BaseProtection(ewc_lambda=100_001), "spec.base_protection.ewc_lambda", "must lie in [0, 100000]"),
    (common.BaseProtection(method=common.BASE_PROTECTION_METHOD_EWC_BASE, ewc_lambda=0),
     "spec.base_protection.ewc_lambda", "must be > 0 with EWC_BASE (its only term)"),
    (common.BaseProtection(kl_weight=-0.1), "spec.base_protection.kl_weight", "must lie in [0, 100]"),
    (common.BaseProtection(kl_weight=101), "spec.base_protection.kl_weight", "must lie in [0, 100]"),
    (common.BaseProtection(kl_weight=math.nan), "spec.base_protection.kl_weight", "must lie in [0, 100]"),
    (common.BaseProtection(method=common.BASE_PROTECTION_METHOD_BASE_KL, kl_weight=0),
     "spec.base_protection.kl_weight", "must be > 0 with BASE_KL (its only loss on the base model's answers)"),
    (common.BaseProtection(prompt_kl_weight=-1), "spec.base_protection.prompt_kl_weight", "must lie in [0, 100]"),
    (common.BaseProtection(prompt_kl_weight=math.inf), "spec.base_protection.prompt_kl_weight",
     "must lie in [0, 100]"),
    (common.BaseProtection(method=common.BASE_PROTECTION_METHOD_NONE, prompt_kl_weight=1),
     "spec.base_protection.prompt_kl_weight", "applies only with SELF_REHEARSAL or BASE_KL and a fraction > 0"),
    (common.BaseProtection(method=common.BASE_PROTECTION_METHOD_BASE_KL, fraction=0, prompt_kl_weight=1),
     "spec.base_protection.prompt_kl_weight", "applies only with SELF_REHEARSAL or BASE_KL and a fraction > 0"),
])
async def test_a_base_protection_setting_out_of_range_is_invalid(client, protection, field, description):
    asked = spec()
    asked.base_protection.CopyFrom(protection)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=asked))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = error_details(err.value)
    assert info.reason == "INVALID_TRAINING_SPEC"
    assert (field, description) in violations
