"""Every bad input gets a precise status with one ErrorInfo (and field violations), and nothing is created."""

from __future__ import annotations

import math
import os
from pathlib import Path

import grpc
import pytest

from learning.v1 import common_pb2 as common
from learning.v1 import fisher_pb2 as fpb
from learning.v1 import fisher_pb2_grpc as fpb_grpc
from learning.v1 import training_pb2 as pb
from tests.server.conftest import error_details, spec, watch_all


# These tests are about the servicers and the engine behind them, not the stores: they run over the engine on
# in-memory stores (tests/fixtures/memory_engine.py).
@pytest.fixture
async def client(memory_client):
    return memory_client

async def _create_fails(client, request: pb.CreateTrainingJobRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.training.CreateTrainingJob(request)
    listed = await client.training.ListTrainingJobs(pb.ListTrainingJobsRequest())
    assert list(listed.training_jobs) == [], "a rejected request left a job behind"
    return err.value


async def test_malformed_jsonl_names_line_and_field(client, data_dir: Path):
    (data_dir / "datasets" / "bad.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
        "{not json\n"
        '{"messages": [{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}]}\n'
        '{"prompt": "p"}\n'
    )
    err = await _create_fails(client, pb.CreateTrainingJobRequest(spec=spec("bad.jsonl")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = error_details(err)
    assert info.reason == "DATASET_INVALID"
    fields = [f for f, _ in violations]
    assert "line[2]" in fields
    assert "line[3].messages[1].role" in fields
    assert "line[4].completion" in fields
    assert "line 2" in err.details()


async def test_empty_dataset(client, data_dir: Path):
    (data_dir / "datasets" / "empty.jsonl").write_text("\n\n")
    err = await _create_fails(client, pb.CreateTrainingJobRequest(spec=spec("empty.jsonl")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(err)[0].reason == "DATASET_EMPTY"


@pytest.mark.parametrize("path", ["../outside.jsonl", "/etc/passwd", "link.jsonl", "sub/../../x.jsonl"])
async def test_dataset_outside_the_data_root(client, data_dir: Path, path: str):
    (data_dir / "outside.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    os.symlink(data_dir / "outside.jsonl", data_dir / "datasets" / "link.jsonl")
    err = await _create_fails(client, pb.CreateTrainingJobRequest(spec=spec(path)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = error_details(err)
    assert info.reason == "DATASET_PATH_OUTSIDE_ROOT"
    assert [f for f, _ in violations] == ["spec.jsonl.path"]


async def test_missing_dataset(client):
    err = await _create_fails(client, pb.CreateTrainingJobRequest(spec=spec("nope.jsonl")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(err)[0].reason == "DATASET_NOT_FOUND"


async def test_unknown_target_modules(client):
    request = pb.CreateTrainingJobRequest(spec=spec())
    request.spec.lora.target_modules.extend(["q_proj", "qq_proj"])
    err = await _create_fails(client, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, violations = error_details(err)
    assert [f for f, _ in violations] == ["spec.lora.target_modules"]
    assert "qq_proj" in violations[0][1]


@pytest.mark.parametrize("rank", [300, 100000])
async def test_rank_out_of_range(client, rank: int):
    request = pb.CreateTrainingJobRequest(spec=spec())
    request.spec.lora.rank = rank
    err = await _create_fails(client, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(err)[1]] == ["spec.lora.rank"]


async def test_gradient_accumulation_out_of_range(client):
    err = await _create_fails(client, pb.CreateTrainingJobRequest(spec=spec(gradient_accumulation_steps=5000)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(err)[1]] == ["spec.hyperparameters.gradient_accumulation_steps"]


@pytest.mark.parametrize("field,value", [("max_grad_norm", -1.0), ("max_grad_norm", 1e7), ("max_grad_norm", math.nan),
                                         ("weight_decay", -0.1), ("learning_rate", -1e-3)])
async def test_optimiser_settings_out_of_range(client, field: str, value: float):
    err = await _create_fails(client, pb.CreateTrainingJobRequest(spec=spec(**{field: value})))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(err)[1]] == [f"spec.hyperparameters.{field}"]


async def test_unknown_lr_schedule(client):
    err = await _create_fails(client, pb.CreateTrainingJobRequest(spec=spec(lr_schedule=99)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(err)[1]] == ["spec.hyperparameters.lr_schedule"]


async def test_unknown_objective(client):
    request = pb.CreateTrainingJobRequest(spec=spec())
    request.spec.objective = 42  # a value a newer client may send: refused, not trained as SFT
    err = await _create_fails(client, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(err)[1]] == ["spec.objective"]


async def test_unknown_base_model(client):
    request = pb.CreateTrainingJobRequest(spec=spec())
    request.spec.base_model = "no-such-model"
    err = await _create_fails(client, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(err)[0].reason == "UNKNOWN_BASE_MODEL"


async def test_no_dataset_named(client):
    err = await _create_fails(client, pb.CreateTrainingJobRequest(spec=pb.TrainingJobSpec()))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(err)[1]] == ["spec.dataset"]


async def test_unknown_parent_version_and_malformed_version(client):
    request = pb.CreateTrainingJobRequest(spec=spec())
    request.spec.parent_adapter_version = "v9.9"
    err = await _create_fails(client, request)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, violations = error_details(err)
    assert info.reason == "PARENT_ADAPTER_NOT_FOUND" and info.metadata["parent"] == "v9.9"
    assert [f for f, _ in violations] == ["spec.parent_adapter_version"]
    request.spec.parent_adapter_version = "1.0-final"
    err = await _create_fails(client, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(err)[1]] == ["spec.parent_adapter_version"]


async def test_unknown_and_malformed_job_names(client):
    for call in (
        lambda n: client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=n)),
        lambda n: client.training.CancelTrainingJob(pb.CancelTrainingJobRequest(name=n)),
        lambda n: watch_all(client.training, n),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call("trainingJobs/0123456789abcdef")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_details(err.value)[0].reason == "JOB_NOT_FOUND"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call("jobs/../../etc")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_details(err.value)[1][0][0] == "name"


async def test_bad_page_token(client):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.training.ListTrainingJobs(pb.ListTrainingJobsRequest(page_token="garbage!"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(err.value)[0].reason == "INVALID_PAGE_TOKEN"


async def test_a_job_failing_midway_ends_failed_and_the_server_keeps_serving(client, data_dir: Path):
    # Valid JSONL, but every completion starts beyond max_seq_length: found only when tokenising.
    long_prompt = " ".join(["word"] * 200)
    (data_dir / "datasets" / "long.jsonl").write_text(
        "".join(f'{{"prompt": "{long_prompt} {i}", "completion": " ok"}}\n' for i in range(4))
    )
    job = (await client.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=spec("long.jsonl", max_seq_length=16))
    )).training_job
    messages = await watch_all(client.training, job.name)
    events = [m.event for m in messages[1:]]
    errors = [e.error for e in events if e.HasField("error")]
    assert len(errors) == 1
    assert errors[0].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert events[-1].state_change.state == common.JOB_STATE_FAILED
    final = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert final.state == common.JOB_STATE_FAILED
    assert final.error == errors[0].status
    ok = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=1)))).training_job
    done = await watch_all(client.training, ok.name)
    assert done[-1].event.state_change.state == common.JOB_STATE_SUCCEEDED


async def test_a_feedback_window_out_of_range_is_refused_by_training_and_fisher_alike(client):
    bad = common.FeedbackDataset(days=2**31 - 1, thumbs_up_weight=float("nan"))
    expected = [("spec.feedback.days", "at most 3650"),
                ("spec.feedback.thumbs_up_weight", "a finite number >= 0 (0: the default)")]
    err = await _create_fails(client, pb.CreateTrainingJobRequest(spec=pb.TrainingJobSpec(feedback=bad)))
    info, violations = error_details(err)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and info.reason == "INVALID_TRAINING_SPEC"
    assert violations == expected
    with pytest.raises(grpc.aio.AioRpcError) as fisher:
        await fpb_grpc.FisherServiceStub(client.channel).CreateFisherJob(fpb.CreateFisherJobRequest(
            spec=fpb.FisherJobSpec(adapter_version="v1.0", feedback=bad)))
    info, violations = error_details(fisher.value)
    assert fisher.value.code() == grpc.StatusCode.INVALID_ARGUMENT and info.reason == "INVALID_FISHER_SPEC"
    assert violations == expected
