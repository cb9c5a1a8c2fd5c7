"""The SDK covers the contract: every RPC of every service in protos/learning/v1 has a method of its name on the
async client, which calls that RPC and takes each field of its request as a parameter; the blocking client and the
blocking job handles have every method of their async twins, with the same parameters.

The services are read from the generated descriptors (``make check`` keeps those equal to the protos), so a new
RPC, or a new field of a request, fails here until the SDK has it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

import learning.v1
from learning.v1 import adapter_pb2, dataset_pb2
from learning_engine import (
    AsyncClient,
    AsyncEvaluationJobHandle,
    AsyncFisherJobHandle,
    AsyncTrainingJobHandle,
    Client,
    EvaluationJobHandle,
    FisherJobHandle,
    TrainingJobHandle,
)

# Request fields that are no parameter of their method, and why.
NOT_PARAMETERS = {
    "DownloadAdapter": {"chunk_size"},  # the SDK asks for 1 MiB chunks
    "ImportAdapter": {"metadata", "chunk"},  # the metadata's fields are parameters; chunks are read from the file
    "StreamFeedback": {"events"},  # one message per batch of the `batches` parameter
    "StreamExamples": {"examples"},  # as StreamFeedback
    "UploadDataset": {"metadata", "chunk"},  # as ImportAdapter
}
# Messages whose fields are parameters too, but for those the SDK fills in.
FLATTENED = {  # sha256 and size: computed from the file
    "ImportAdapter": (adapter_pb2.ImportAdapterMetadata, {"sha256"}),
    "UploadDataset": (dataset_pb2.UploadDatasetMetadata, {"sha256", "size_bytes"}),
}
TWINS = (
    (AsyncClient, Client),
    (AsyncTrainingJobHandle, TrainingJobHandle),
    (AsyncFisherJobHandle, FisherJobHandle),
    (AsyncEvaluationJobHandle, EvaluationJobHandle),
)
RENAMES = {"AsyncIterator": "Iterator", **{a.__name__: s.__name__ for a, s in TWINS}}


def services() -> Iterator[ServiceDescriptor]:
    for module in pkgutil.iter_modules(learning.v1.__path__):
        if module.name.endswith("_pb2"):
            yield from importlib.import_module(f"learning.v1.{module.name}").DESCRIPTOR.services_by_name.values()


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def parameters(fn) -> set[str]:
    return set(inspect.signature(fn).parameters) - {"self"}


def expected_parameters(method: MethodDescriptor) -> set[str]:
    fields = {f.name for f in method.input_type.fields} - NOT_PARAMETERS.get(method.name, set())
    if method.name in FLATTENED:
        message, filled = FLATTENED[method.name]
        fields |= {f.name for f in message.DESCRIPTOR.fields} - filled
    return fields


def test_every_rpc_has_an_async_method_that_calls_it_with_every_request_field() -> None:
    rpcs = [(service, method) for service in services() for method in service.methods]
    assert {"TrainingService", "FisherService", "AdapterService", "LoraControlService", "EvaluationService",
            "DatasetService", "FeedbackService"} <= {s.name for s, _ in rpcs}
    assert len(rpcs) >= 49  # as of this writing; the walk must find them all
    missing, silent, unexposed = [], [], {}
    for service, method in rpcs:
        fn = getattr(AsyncClient, snake(method.name), None)
        if fn is None:
            missing.append(f"{service.name}.{method.name} -> AsyncClient.{snake(method.name)}")
            continue
        if f".{method.name}," not in inspect.getsource(fn):  # the stub call: self.training.PauseTrainingJob, ...
            silent.append(f"AsyncClient.{fn.__name__} does not call {method.name}")
        left_out = expected_parameters(method) - parameters(fn)
        if left_out:
            unexposed[f"AsyncClient.{fn.__name__}"] = sorted(left_out)
    assert not missing, f"RPCs without an SDK method: {missing}"
    assert not silent, silent
    assert not unexposed, f"request fields the SDK method does not take: {unexposed}"


def _shape(fn) -> tuple[list[tuple[str, object, object, str]], str]:
    """Parameters (name, kind, default, annotation) and return annotation, async names mapped to their twins."""

    def rename(annotation: object) -> str:
        return re.sub(r"\b\w+\b", lambda m: RENAMES.get(m.group(), m.group()), str(annotation))

    signature = inspect.signature(fn)
    params = [(p.name, p.kind, p.default, rename(p.annotation)) for p in signature.parameters.values()]
    return params, rename(signature.return_annotation)


def test_the_blocking_twins_have_every_method_with_the_same_parameters() -> None:
    for async_cls, sync_cls in TWINS:
        public = {name for name, _ in inspect.getmembers(async_cls) if not name.startswith("_")}
        assert public <= set(dir(sync_cls)), f"{sync_cls.__name__} lacks {sorted(public - set(dir(sync_cls)))}"
        for name in sorted(public):
            async_member, sync_member = inspect.getattr_static(async_cls, name), inspect.getattr_static(sync_cls, name)
            if isinstance(async_member, property):
                assert isinstance(sync_member, property), f"{sync_cls.__name__}.{name}"
                continue
            assert _shape(async_member) == _shape(sync_member), f"{sync_cls.__name__}.{name} differs from its twin"
    assert _shape(AsyncClient.__init__) == _shape(Client.__init__)
    assert {"wait", "events", "cancel", "pause", "resume"} <= set(dir(TrainingJobHandle))
    for handle in (FisherJobHandle, EvaluationJobHandle):  # jobs that cannot be paused
        assert {"wait", "events", "cancel"} <= set(dir(handle)) and not hasattr(handle, "pause")


async def test_an_uploads_deadline_grows_with_its_size() -> None:
    """Uploads (ImportAdapter, UploadDataset) get the client's timeout plus a second per MiB, not the timeout of a
    unary call for the whole stream; none without a client timeout. (In a running loop: an AsyncClient's channel
    needs one, and a synchronous test has none once an earlier asynchronous test in its worker closed its own.)"""
    from learning_engine.client import AsyncClient  # noqa: PLC0415

    timed, untimed = AsyncClient("127.0.0.1:1", timeout=30.0), AsyncClient("127.0.0.1:1", timeout=None)
    assert timed._upload_timeout(100 * 1024 * 1024) == 130.0
    assert untimed._upload_timeout(5) is None
    await timed.close()
    await untimed.close()
