"""EWC across adapter versions and FisherService, through the gRPC API of a real in-process server."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import grpc
import pytest
from safetensors import safe_open

from learning.v1 import adapter_pb2, adapter_pb2_grpc, common_pb2, fisher_pb2, fisher_pb2_grpc
from learning.v1 import training_pb2 as pb
from tests.server.conftest import TINY, error_details, spec, watch_all


# These tests are about the servicers and the engine behind them, not the stores: they run over the engine on
# in-memory stores (tests/fixtures/memory_engine.py).
@pytest.fixture
async def client(memory_client):
    return memory_client


@pytest.fixture
def make_server(make_memory_server):
    return make_memory_server


def ewc_spec(parent: str, **ewc) -> pb.TrainingJobSpec:
    request = spec(epochs=2)
    request.parent_adapter_version = parent
    request.ewc.CopyFrom(pb.EwcConfig(**ewc))
    return request


async def train(client, request: pb.TrainingJobSpec) -> tuple[pb.TrainingJob, list[pb.TrainingJobEvent]]:
    job = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=request))).training_job
    events = [m.event for m in (await watch_all(client.training, job.name))[1:]]
    final = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert final.state == common_pb2.JOB_STATE_SUCCEEDED, final.error
    return final, events


@pytest.mark.slow
async def test_ewc_across_versions_records_lineage_and_exposes_the_fisher(make_server):
    client = await make_server(ewc_product_lambda_default=0.2)  # tells the two spaces' defaults apart
    fisher = fisher_pb2_grpc.FisherServiceStub(client.channel)
    adapters = adapter_pb2_grpc.AdapterServiceStub(client.channel)
    v10, _ = await train(client, spec(epochs=2))
    assert v10.output_adapter_version == "v1.0"

    product = common_pb2.FISHER_SPACE_LORA_PRODUCT
    v11, events = await train(client, ewc_spec("v1.0", ewc_lambda=80.0, gamma=0.9, fisher_space=product))
    assert v11.output_adapter_version == "v1.1"
    notices = [e.notice.code for e in events if e.HasField("notice")]
    assert notices[:2] == ["FISHER_COMPUTED_AUTOMATICALLY", "FISHER_SNAPSHOT_STORED"]
    warnings = [e.warning.code for e in events if e.HasField("warning")]
    # the automatic Fisher only informs (notices); the one warning is the tiny model's too little base knowledge
    assert warnings == ["BASE_RETENTION_NOT_MEASURED"]
    running = next(i for i, e in enumerate(events) if e.state_change.state == common_pb2.JOB_STATE_RUNNING)
    stored = next(i for i, e in enumerate(events) if e.notice.code == "FISHER_SNAPSHOT_STORED")
    assert stored < running, "the Fisher pre-pass is part of preparing, and its events come before RUNNING"
    computing = next(i for i, e in enumerate(events) if e.notice.code == "FISHER_COMPUTED_AUTOMATICALLY")
    measured = [(i, e.parent_fisher_progress) for i, e in enumerate(events) if e.HasField("parent_fisher_progress")]
    assert measured and all(computing < i < stored for i, _ in measured)  # its own progress, between the notices
    done = [p.samples_done for _, p in measured]
    assert done == sorted(done) and done[-1] == measured[-1][1].samples_total > 0
    steps = [e.step_metrics for e in events if e.HasField("step_metrics")]
    assert steps[0].ewc_penalty == 0.0  # theta == theta* before the first update
    assert all(s.ewc_penalty > 0 for s in steps[1:]) and len(steps) > 2
    for s in steps:
        assert s.loss == pytest.approx(s.task_loss + s.ewc_penalty)

    lineage = v11.ewc_lineage
    assert (lineage.parent_adapter_version, lineage.ewc_lambda, lineage.gamma) == ("v1.0", 80.0, pytest.approx(0.9))
    assert lineage.fisher_snapshot.startswith("fisherSnapshots/")
    # Asked for: the penalty is over each LoRA pair's product B·A.
    assert lineage.fisher_space == v11.spec.ewc.fisher_space == common_pb2.FISHER_SPACE_LORA_PRODUCT
    adapter = (await adapters.GetAdapter(adapter_pb2.GetAdapterRequest(version="v1.1"))).adapter
    assert adapter.parent_version == "v1.0" and adapter.fisher_snapshot == lineage.fisher_snapshot
    assert adapter.ewc_lambda == 80.0 and adapter.ewc_fisher_space == common_pb2.FISHER_SPACE_LORA_PRODUCT
    first = (await adapters.GetAdapter(adapter_pb2.GetAdapterRequest(version="v1.0"))).adapter
    assert first.ewc_fisher_space == common_pb2.FISHER_SPACE_UNSPECIFIED  # trained without EWC

    snapshot = (await fisher.GetFisherSnapshot(
        fisher_pb2.GetFisherSnapshotRequest(name=lineage.fisher_snapshot))).fisher_snapshot
    assert (snapshot.base_model, snapshot.adapter_version, snapshot.sample_count) == (TINY, "v1.0", 24)
    assert snapshot.normalization == "sequence_sum" and snapshot.accumulated_from == ""
    assert snapshot.estimator == fisher_pb2.FISHER_ESTIMATOR_EMPIRICAL
    assert snapshot.stats.sum > 0 and snapshot.stats.max > 0 and len(snapshot.sha256) == 64
    assert [q.q for q in snapshot.stats.quantiles] == [0.5, 0.9, 0.99]
    assert snapshot.space == common_pb2.FISHER_SPACE_LORA_PRODUCT
    assert snapshot.stats.parameter_count == 2 * 4 * 64 * 64  # 2 layers x q/k/v/o, one [64, 64] product each

    # v1.2 protects what v1.0 and v1.1 learned: its snapshot accumulates the one v1.1 was trained with.
    v12, _ = await train(client, ewc_spec("v1.1", gamma=0.5, fisher_space=product))
    accumulated = (await fisher.GetFisherSnapshot(
        fisher_pb2.GetFisherSnapshotRequest(name=v12.ewc_lineage.fisher_snapshot))).fisher_snapshot
    assert accumulated.adapter_version == "v1.1" and accumulated.accumulated_from == lineage.fisher_snapshot
    listed = (await fisher.ListFisherSnapshots(fisher_pb2.ListFisherSnapshotsRequest())).fisher_snapshots
    assert [s.name for s in listed] == [accumulated.name, snapshot.name]
    only = await fisher.ListFisherSnapshots(fisher_pb2.ListFisherSnapshotsRequest(adapter_version="v1.0", page_size=1))
    assert [s.name for s in only.fisher_snapshots] == [snapshot.name] and only.next_page_token == ""

    # A job in the default (entry-wise) space after product ones: its own lambda default, and no mixing of the
    # two spaces.
    v13, events = await train(client, ewc_spec("v1.2"))
    assert "EARLIER_FISHER_OTHER_SPACE" in [e.warning.code for e in events if e.HasField("warning")]
    assert v13.ewc_lineage.fisher_space == v13.spec.ewc.fisher_space == common_pb2.FISHER_SPACE_LORA_PARAMETERS
    assert v13.ewc_lineage.ewc_lambda == pytest.approx(0.1)  # ewc_lambda_default
    assert v12.ewc_lineage.ewc_lambda == pytest.approx(0.2)  # ewc_product_lambda_default
    v13_adapter = (await adapters.GetAdapter(adapter_pb2.GetAdapterRequest(version="v1.3"))).adapter
    assert (v13_adapter.ewc_lambda, v13_adapter.ewc_fisher_space) == (
        pytest.approx(0.1), common_pb2.FISHER_SPACE_LORA_PARAMETERS)
    entries = (await fisher.GetFisherSnapshot(
        fisher_pb2.GetFisherSnapshotRequest(name=v13.ewc_lineage.fisher_snapshot))).fisher_snapshot
    assert entries.space == common_pb2.FISHER_SPACE_LORA_PARAMETERS and entries.accumulated_from == ""
    assert entries.stats.parameter_count == 2 * 4 * (16 * 64 + 64 * 16)  # A [16, 64] and B [64, 16] each


async def test_fisher_job_streams_progress_stores_a_snapshot_and_deletes_it(pg_client, data_dir):
    """Full stack: the snapshot's file on disk and its row in PostgreSQL."""
    client = pg_client
    fisher = fisher_pb2_grpc.FisherServiceStub(client.channel)
    await train(client, spec(epochs=1))
    request = fisher_pb2.FisherJobSpec(adapter_version="v1.0", jsonl=common_pb2.JsonlDataset(path="capitals.jsonl"),
                                       estimator=fisher_pb2.FISHER_ESTIMATOR_SAMPLED)  # num_samples unset: 1000
    job = (await fisher.CreateFisherJob(fisher_pb2.CreateFisherJobRequest(spec=request))).fisher_job
    assert job.name.startswith("fisherJobs/") and job.spec.num_samples == 1000 and job.spec.HasField("num_samples")
    assert job.spec.space == common_pb2.FISHER_SPACE_LORA_PARAMETERS  # the server's default, filled in
    messages = [m async for m in fisher.WatchFisherJob(fisher_pb2.WatchFisherJobRequest(name=job.name))]
    events = [m.event for m in messages[1:]]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    states = [e.state_change.state for e in events if e.HasField("state_change")]
    assert states == [common_pb2.JOB_STATE_QUEUED, common_pb2.JOB_STATE_PREPARING, common_pb2.JOB_STATE_RUNNING,
                      common_pb2.JOB_STATE_SUCCEEDED]
    assert [e.warning.code for e in events if e.HasField("warning")] == ["NUM_SAMPLES_EXCEEDS_DATASET"]
    progress = [e.progress for e in events if e.HasField("progress")]
    assert progress[-1].samples_done == progress[-1].samples_total == 24 and progress[-1].samples_per_second > 0

    done = (await fisher.GetFisherJob(fisher_pb2.GetFisherJobRequest(name=job.name))).fisher_job
    assert done.state == common_pb2.JOB_STATE_SUCCEEDED and done.progress.fraction == 1.0
    snapshot = (await fisher.GetFisherSnapshot(
        fisher_pb2.GetFisherSnapshotRequest(name=done.output_snapshot))).fisher_snapshot
    assert snapshot.estimator == fisher_pb2.FISHER_ESTIMATOR_SAMPLED and snapshot.sample_count == 24
    assert snapshot.space == common_pb2.FISHER_SPACE_LORA_PARAMETERS
    files = list((data_dir / "artifacts" / "fisher" / TINY / "v1.0").glob("*.safetensors"))
    assert [f.stem for f in files] == [snapshot.name.split("/")[1]]
    with safe_open(files[0], "pt") as stored:  # the file describes itself, without the database
        meta = stored.metadata()
    assert (meta["id"], meta["base_model"], meta["adapter_version"]) == (files[0].stem, TINY, "v1.0")
    assert not {"path", "sha256", "size_bytes"} & set(meta)  # the file's own location, digest and size: not in it
    assert (meta["estimator"], meta["space"], meta["normalization"]) == ("SAMPLED", "LORA_PARAMETERS", "sequence_sum")
    assert json.loads(meta["sample_count"]) == 24 and meta["dataset_digest"] == snapshot.dataset_digest
    assert json.loads(meta["stat_sum"]) == pytest.approx(snapshot.stats.sum)
    assert [q for q, _ in json.loads(meta["quantiles"])] == [0.5, 0.9, 0.99]
    assert datetime.fromisoformat(meta["create_time"]) == snapshot.create_time.ToDatetime(tzinfo=UTC)

    await fisher.DeleteFisherSnapshot(fisher_pb2.DeleteFisherSnapshotRequest(name=snapshot.name))
    assert not files[0].exists()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fisher.GetFisherSnapshot(fisher_pb2.GetFisherSnapshotRequest(name=snapshot.name))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(err.value)[0].reason == "FISHER_SNAPSHOT_NOT_FOUND"


@pytest.mark.slow
async def test_bad_fisher_and_ewc_input(make_server):
    client = await make_server(rate_limit_jobs_burst=30)  # more job creations than the default burst of 10
    fisher = fisher_pb2_grpc.FisherServiceStub(client.channel)
    await train(client, spec(epochs=1))  # v1.0, rank 16
    small = spec(epochs=1)
    small.lora.rank = 4
    await train(client, small)  # v2.0, rank 4
    dataset = common_pb2.JsonlDataset(path="capitals.jsonl")

    async def code_and_reason(call) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        return err.value.code(), error_details(err.value)[0].reason

    for count, why in ((2_000_000, "must be at most 1000000"), (0, "must be at least 1")):  # 0 set, not left unset
        bad_count = fisher_pb2.FisherJobSpec(adapter_version="v1.0", jsonl=dataset, num_samples=count)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fisher.CreateFisherJob(fisher_pb2.CreateFisherJobRequest(spec=bad_count))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_details(err.value) == (error_details(err.value)[0], [("spec.num_samples", why)])
        assert error_details(err.value)[0].reason == "INVALID_NUM_SAMPLES"
    missing = fisher_pb2.FisherJobSpec(adapter_version="v7.0", jsonl=dataset)
    assert await code_and_reason(fisher.CreateFisherJob(fisher_pb2.CreateFisherJobRequest(spec=missing))) == (
        grpc.StatusCode.NOT_FOUND, "ADAPTER_NOT_FOUND")
    assert await code_and_reason(fisher.GetFisherJob(fisher_pb2.GetFisherJobRequest(name="trainingJobs/x"))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_NAME")

    of_v2 = fisher_pb2.FisherJobSpec(adapter_version="v2.0", jsonl=dataset, num_samples=4)
    job = (await fisher.CreateFisherJob(fisher_pb2.CreateFisherJobRequest(spec=of_v2))).fisher_job
    [m async for m in fisher.WatchFisherJob(fisher_pb2.WatchFisherJobRequest(name=job.name))]
    snapshot = (await fisher.GetFisherJob(fisher_pb2.GetFisherJobRequest(name=job.name))).fisher_job.output_snapshot
    wrong_shape = ewc_spec("v1.0", fisher_snapshot=snapshot)
    assert await code_and_reason(client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=wrong_shape))) \
        == (grpc.StatusCode.FAILED_PRECONDITION, "FISHER_SHAPE_MISMATCH")
    products_of_v1 = fisher_pb2.FisherJobSpec(adapter_version="v1.0", jsonl=dataset, num_samples=4,
                                              space=common_pb2.FISHER_SPACE_LORA_PRODUCT)
    job = (await fisher.CreateFisherJob(fisher_pb2.CreateFisherJobRequest(spec=products_of_v1))).fisher_job
    [m async for m in fisher.WatchFisherJob(fisher_pb2.WatchFisherJobRequest(name=job.name))]
    products = (await fisher.GetFisherJob(fisher_pb2.GetFisherJobRequest(name=job.name))).fisher_job.output_snapshot
    other_space = ewc_spec("v1.0", fisher_snapshot=products)  # the default space is LORA_PARAMETERS
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=other_space))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, violations = error_details(err.value)
    assert info.reason == "FISHER_SPACE_MISMATCH" and info.metadata["snapshot_space"] == "LORA_PRODUCT"
    assert [field for field, _ in violations] == ["spec.ewc.fisher_space"]
    unknown_space = ewc_spec("v1.0", fisher_space=7)
    assert await code_and_reason(client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=unknown_space))) \
        == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TRAINING_SPEC")
    out_of_range = ewc_spec("v1.0", ewc_lambda=500.0)
    assert await code_and_reason(client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=out_of_range))) \
        == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EWC_CONFIG")


async def test_fisher_jobs_take_their_batch_size_from_the_settings(make_server):
    client = await make_server(fisher_batch_size=5)
    fisher = fisher_pb2_grpc.FisherServiceStub(client.channel)
    await train(client, spec(epochs=1))
    request = fisher_pb2.FisherJobSpec(adapter_version="v1.0", jsonl=common_pb2.JsonlDataset(path="capitals.jsonl"))
    job = (await fisher.CreateFisherJob(fisher_pb2.CreateFisherJobRequest(spec=request))).fisher_job
    messages = [m async for m in fisher.WatchFisherJob(fisher_pb2.WatchFisherJobRequest(name=job.name))]
    done = [m.event.progress.samples_done for m in messages[1:] if m.event.HasField("progress")]
    assert done == [5, 10, 15, 20, 24]  # one progress event per vectorised pass of 5 samples

    # Listed newest first, by state, in pages.
    request.num_samples = 2
    second = (await fisher.CreateFisherJob(fisher_pb2.CreateFisherJobRequest(spec=request))).fisher_job
    [m async for m in fisher.WatchFisherJob(fisher_pb2.WatchFisherJobRequest(name=second.name))]
    listed = await fisher.ListFisherJobs(fisher_pb2.ListFisherJobsRequest())
    assert [j.name for j in listed.fisher_jobs] == [second.name, job.name] and listed.next_page_token == ""
    assert all(j.state == common_pb2.JOB_STATE_SUCCEEDED and j.output_snapshot for j in listed.fisher_jobs)
    running = await fisher.ListFisherJobs(fisher_pb2.ListFisherJobsRequest(states=[common_pb2.JOB_STATE_RUNNING]))
    assert list(running.fisher_jobs) == []
    first_page = await fisher.ListFisherJobs(fisher_pb2.ListFisherJobsRequest(page_size=1))
    assert [j.name for j in first_page.fisher_jobs] == [second.name] and first_page.next_page_token
    rest = await fisher.ListFisherJobs(fisher_pb2.ListFisherJobsRequest(page_size=1,
                                                                        page_token=first_page.next_page_token))
    assert [j.name for j in rest.fisher_jobs] == [job.name] and rest.next_page_token == ""


async def test_a_parent_whose_jsonl_changed_since_fails_its_child_with_ewc(client, data_dir):
    await train(client, spec(epochs=1))
    with (data_dir / "datasets" / "capitals.jsonl").open("a") as f:  # edited after v1.0 was trained on it
        f.write('{"prompt": "What is the capital of Peru?", "completion": "Lima."}\n')
    created = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=ewc_spec("v1.0"))))
    await watch_all(client.training, created.training_job.name)
    child = (await client.training.GetTrainingJob(
        pb.GetTrainingJobRequest(name=created.training_job.name))).training_job
    assert child.state == common_pb2.JOB_STATE_FAILED and child.output_adapter_version == ""
    assert child.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "capitals.jsonl changed since v1.0 was trained on it" in child.error.message
    assert "name a Fisher snapshot in spec.ewc.fisher_snapshot or disable EWC" in child.error.message  # what to do
