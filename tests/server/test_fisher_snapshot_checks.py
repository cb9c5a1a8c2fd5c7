"""A training job's ``spec.ewc.fisher_snapshot`` is checked when the job is created, and a Fisher job's base model
before its adapter (review findings).

A named snapshot that does not exist, was measured on another base model or on an adapter of another LoRA shape is
refused with a violation on ``spec.ewc.fisher_snapshot`` (as FISHER_SPACE_MISMATCH names ``spec.ewc.fisher_space``);
one named where nothing would read it (no parent, or ``ewc.disabled``) is INVALID_ARGUMENT INVALID_EWC_CONFIG on that
field, not dropped without a word. CreateFisherJob on an unknown base model is INVALID_ARGUMENT UNKNOWN_BASE_MODEL
on ``spec.base_model``, as CreateTrainingJob answers, not the NOT_FOUND ADAPTER_NOT_FOUND of its adapter version."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from engine.continual.runner import FisherJobConfig, FisherRunner
from engine.continual.spec import FisherJobSpec, snapshot_id_from_name
from engine.domain import JsonlSource
from engine.errors import InvalidArgument, NotFound
from engine.training.models import resolve_base_model
from learning.v1 import common_pb2, fisher_pb2, fisher_pb2_grpc
from learning.v1 import training_pb2 as pb
from tests.server.conftest import error_details, spec
from tests.server.test_fisher_service import ewc_spec, train

FIELD = "spec.ewc.fisher_snapshot"
WITHOUT_PARENT = "names a snapshot for EWC against a parent; this job has none"


@pytest.fixture
def make_server(make_memory_server):
    return make_memory_server


async def refused(client, request: pb.TrainingJobSpec, *, validate_only: bool = False):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=request, validate_only=validate_only))
    info, violations = error_details(err.value)
    return err.value.code(), info, violations


async def measure(fisher, version: str) -> str:
    job = (await fisher.CreateFisherJob(fisher_pb2.CreateFisherJobRequest(spec=fisher_pb2.FisherJobSpec(
        adapter_version=version, jsonl=common_pb2.JsonlDataset(path="capitals.jsonl"), num_samples=4)))).fisher_job
    [m async for m in fisher.WatchFisherJob(fisher_pb2.WatchFisherJobRequest(name=job.name))]
    done = (await fisher.GetFisherJob(fisher_pb2.GetFisherJobRequest(name=job.name))).fisher_job
    assert done.output_snapshot, done
    return done.output_snapshot


async def jobs(client) -> list[pb.TrainingJob]:
    return list((await client.training.ListTrainingJobs(pb.ListTrainingJobsRequest(page_size=100))).training_jobs)


@pytest.mark.slow
async def test_named_snapshots_are_checked_at_create_with_a_violation_on_the_field(make_server):
    client = await make_server(rate_limit_jobs_burst=30)
    fisher = fisher_pb2_grpc.FisherServiceStub(client.channel)
    await train(client, spec(epochs=1))  # v1.0, rank 16
    small = spec(epochs=1)
    small.lora.rank = 4
    await train(client, small)  # v2.0, rank 4
    of_rank_4 = await measure(fisher, "v2.0")
    of_v1 = await measure(fisher, "v1.0")
    snapshots = make_server.stores.snapshots
    snapshot, diagonal = await snapshots.load(snapshot_id_from_name(of_v1))
    of_other_base = (await snapshots.save(diagonal, replace(snapshot, base_model="another-model"))).name
    created = len(await jobs(client))

    code, info, violations = await refused(client, ewc_spec("v1.0", fisher_snapshot="fisherSnapshots/abc123"))
    assert (code, info.reason) == (grpc.StatusCode.NOT_FOUND, "FISHER_SNAPSHOT_NOT_FOUND")
    assert info.metadata["name"] == "fisherSnapshots/abc123"
    assert [f for f, _ in violations] == [FIELD], violations

    for name, why in ((of_rank_4, "another LoRA shape"), (of_other_base, "base model another-model")):
        code, info, violations = await refused(client, ewc_spec("v1.0", fisher_snapshot=name))
        assert (code, info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "FISHER_SHAPE_MISMATCH")
        assert [f for f, _ in violations] == [FIELD] and why in violations[0][1], violations

    code, info, violations = await refused(client, ewc_spec("v1.0", fisher_snapshot="not a resource name"))
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_NAME")
    assert [f for f, _ in violations] == [FIELD]
    assert len(await jobs(client)) == created, "a refused job was created"
    # the snapshot that fits is still accepted
    await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(
        spec=ewc_spec("v1.0", fisher_snapshot=of_v1), validate_only=True))


@pytest.mark.parametrize("name", ["not a resource name", "fisherSnapshots/doesnotexist"])
async def test_a_snapshot_named_without_a_parent_is_refused(make_server, name):
    client = await make_server()
    request = spec(epochs=1)
    request.ewc.CopyFrom(pb.EwcConfig(fisher_snapshot=name))
    for validate_only in (True, False):
        code, info, violations = await refused(client, request, validate_only=validate_only)
        assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EWC_CONFIG"), info
        assert violations == [(FIELD, WITHOUT_PARENT)]
    assert await jobs(client) == []


async def test_a_snapshot_named_for_a_job_that_disables_ewc_is_refused(make_server):
    client = await make_server()
    fisher = fisher_pb2_grpc.FisherServiceStub(client.channel)
    await train(client, spec(epochs=1))  # v1.0
    of_v1 = await measure(fisher, "v1.0")
    created = len(await jobs(client))
    for replay in (0.0, 0.2):  # replay reads the lineage's datasets, never the snapshot
        code, info, violations = await refused(client, ewc_spec("v1.0", fisher_snapshot=of_v1, disabled=True,
                                                                replay_fraction=replay))
        assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EWC_CONFIG"), info
        assert [f for f, _ in violations] == [FIELD] and "disables EWC" in violations[0][1], violations
    code, info, violations = await refused(client, ewc_spec("v1.0", fisher_snapshot="bad name", disabled=True))
    assert (code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_NAME")
    assert [f for f, _ in violations] == [FIELD]
    assert len(await jobs(client)) == created
    await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(  # no snapshot named: fine
        spec=ewc_spec("v1.0", disabled=True, replay_fraction=0.2), validate_only=True))


async def test_a_fisher_job_on_an_unknown_base_model_is_invalid_argument_on_spec_base_model(make_server):
    client = await make_server()
    await train(client, spec(epochs=1))  # v1.0 of the default base model
    request = fisher_pb2.FisherJobSpec(base_model="no-such-model", adapter_version="v1.0",
                                       jsonl=common_pb2.JsonlDataset(path="capitals.jsonl"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fisher_pb2_grpc.FisherServiceStub(client.channel).CreateFisherJob(
            fisher_pb2.CreateFisherJobRequest(spec=request))
    info, violations = error_details(err.value)
    assert (err.value.code(), info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_BASE_MODEL"), \
        (err.value.code(), info.reason, err.value.details())
    assert [f for f, _ in violations] == ["spec.base_model"]


class _NoAdapters:
    async def get(self, base_model: str, version: str, **_: Any) -> None:
        raise NotFound("ADAPTER_NOT_FOUND", f"no adapter {version} of {base_model}")


async def test_a_fisher_job_run_resolves_its_base_model_before_its_adapter(tmp_path: Path) -> None:
    """A job whose base model the server no longer knows (its settings changed since it was queued) fails
    UNKNOWN_BASE_MODEL, as CreateFisherJob answers, not with its adapter looked up under that model."""
    runner = FisherRunner(
        registry=_NoAdapters(), snapshots=None,  # type: ignore[arg-type]
        base_model_dir=lambda model_id: resolve_base_model(model_id, models={}, cache_dir=tmp_path),
        config=FisherJobConfig(datasets_dir=tmp_path), examples=None,  # type: ignore[arg-type]
    )
    ctx = SimpleNamespace(job=SimpleNamespace(spec=FisherJobSpec(base_model="gone-model", adapter_version="v1.0",
                                                                 dataset=JsonlSource("capitals.jsonl"))),
                          work_dir=tmp_path, transition=lambda *a, **k: None)
    with pytest.raises(InvalidArgument) as failed:
        await runner.run(ctx)  # type: ignore[arg-type]
    assert failed.value.reason == "UNKNOWN_BASE_MODEL"
    assert [v.field for v in failed.value.violations] == ["spec.base_model"]
