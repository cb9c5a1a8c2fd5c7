"""List-valued fields of a training job spec are checked as the rest of the API checks them: spec.labels (copied
onto the published adapter) and spec.feedback.labels as AdapterService checks an adapter's labels (at most 64; keys
1..256 printable characters; values at most 256 printable characters), INVALID_ARGUMENT naming spec.labels /
spec.feedback.labels; lora.target_modules naming a module twice is INVALID_ARGUMENT INVALID_LORA_CONFIG on
spec.lora.target_modules, with a parent too (it was a misleading PARENT_LORA_MISMATCH)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from learning.v1 import adapter_pb2_grpc as apb_grpc
from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as pb
from tests.fixtures.peft_adapters import build_peft_adapter, tar_dir
from tests.server.conftest import error_details, spec
from tests.server.test_parent_lora import _continuing, _import

BAD_LABELS = [{"": "x"}, {"team": "a\nb"}, {"k": "v" * 5000}, {f"k{i}": "v" for i in range(100)}, {"k" * 300: "v"}]
BAD_IDS = ["empty-key", "newline", "long-value", "too-many", "long-key"]


async def test_duplicate_target_module_with_a_parent_is_not_a_shape_mismatch(memory_client, tiny_model_dir: Path,
                                                                               tmp_path: Path):
    adapters = apb_grpc.AdapterServiceStub(memory_client.channel)
    parent_dir = build_peft_adapter(tiny_model_dir, tmp_path / "p", rank=4, targets=("q_proj", "v_proj"))
    await _import(adapters, tar_dir(parent_dir))
    request = _continuing("v1.0", common.LoraConfig(target_modules=["q_proj", "v_proj", "v_proj"]))
    request.validate_only = True
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await memory_client.training.CreateTrainingJob(request)
    info, violations = error_details(err.value)
    assert (err.value.code(), info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_LORA_CONFIG"), violations
    assert [f for f, _ in violations] == ["spec.lora.target_modules"]


async def test_duplicate_target_module_is_refused(memory_client):
    request = pb.CreateTrainingJobRequest(spec=spec(), validate_only=True)
    request.spec.lora.target_modules.extend(["q_proj", "q_proj"])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await memory_client.training.CreateTrainingJob(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(err.value)[1]] == ["spec.lora.target_modules"]


@pytest.mark.parametrize("labels", BAD_LABELS, ids=BAD_IDS)
async def test_spec_labels_checked_like_adapter_labels(memory_client, labels: dict[str, str]):
    request = pb.CreateTrainingJobRequest(spec=spec(), validate_only=True)
    request.spec.labels.update(labels)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await memory_client.training.CreateTrainingJob(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [f for f, _ in error_details(err.value)[1]]
    assert fields and all(f.startswith("spec.labels") for f in fields)


@pytest.mark.parametrize("labels", BAD_LABELS, ids=BAD_IDS)
async def test_feedback_labels_checked_like_adapter_labels(memory_client, labels: dict[str, str]):
    request = pb.CreateTrainingJobRequest(spec=pb.TrainingJobSpec(feedback=common.FeedbackDataset()),
                                          validate_only=True)
    request.spec.feedback.labels.update(labels)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await memory_client.training.CreateTrainingJob(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [f for f, _ in error_details(err.value)[1]]
    assert fields and all(f.startswith("spec.feedback.labels") for f in fields)


async def test_good_labels_are_kept(memory_client):
    request = pb.CreateTrainingJobRequest(spec=spec(), validate_only=True)
    request.spec.labels.update({"team": "search", "k" * 256: "v" * 256})
    checked = (await memory_client.training.CreateTrainingJob(request)).training_job
    assert dict(checked.spec.labels) == {"team": "search", "k" * 256: "v" * 256}
