"""Real in-process gRPC servers on port 0 with the tiny Llama: over the real engine on a real PostgreSQL
(``make_server``, ``client``), or over the same engine facades on in-memory stores (``make_memory_server``,
``memory_client``: no database, for the servicers' own behaviour)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from engine.serving.reference_model import ReferenceModel
from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as pb
from learning.v1 import training_pb2_grpc as pb_grpc
from server.main import App, start
from server.settings import Settings
from tests.fixtures.memory_engine import MemoryStores, memory_engine
from tests.fixtures.server_settings import TINY, base_settings
from tests.fixtures.serving import start_backend


@dataclass
class Client:
    app: App
    channel: grpc.aio.Channel
    training: pb_grpc.TrainingServiceStub


@pytest.fixture
async def make_pg_server(database_url: str, data_dir: Path, tiny_model_dir: Path):
    """Start servers over the real engine, sharing one database and data dir (a second call is a 'restart')."""
    opened: list[Client] = []
    backends: list = []

    async def make(**overrides) -> Client:
        if "serving_url" not in overrides:  # LoraControl: one in-process reference backend per test
            if not backends:
                backends.append(await start_backend(ReferenceModel(tiny_model_dir, TINY)))
            overrides["serving_url"] = backends[0].url
        overrides.setdefault("gateway_port", 0)
        settings = Settings(**{
            "host": "127.0.0.1", "port": 0, "data_dir": data_dir, "database_url": database_url,
            **base_settings(tiny_model_dir),  # the tiny model, one torch thread, one device (ONE_DEVICE)
            "eval_gate": False,  # (GATE_OFF)
            "base_protection_method": "NONE",  # (BASE_OFF)
            **overrides,
        })
        app = await start(settings)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
        client = Client(app, channel, pb_grpc.TrainingServiceStub(channel))
        opened.append(client)
        return client

    yield make
    for client in opened:
        await client.channel.close()
        await client.app.stop(0)
    for backend in backends:
        await backend.stop()


# GATE_OFF: activations skip the forgetting-aware gate unless a test turns it on. The tiny model answers nothing
# right after the few steps most tests train, so the gate would refuse those versions; the gate has its own tests
# (tests/server/test_gate.py, tests/engine/test_eval_gate.py).

# BASE_OFF: jobs train without the default base protection (BASE_KL) unless a test asks for it. With it every
# epoch also trains a share of the base model's answers to the shipped general prompts, which changes the steps
# and the time of every job the tests count; the protection has its own tests (tests/engine/test_base_kl.py,
# tests/engine/test_rehearsal.py, the base protection tests of tests/server/test_training_service.py), and
# tests/server/test_training_defaults.py holds what an unconfigured server applies.

# ONE_DEVICE (tests.fixtures.server_settings, as for the servers tests/e2e starts as processes): jobs train on one
# device, whatever the host: on a host with several GPUs the default (every GPU) would start one process per GPU
# for every job; training on several has its own tests (tests/engine/test_distributed.py).


@pytest.fixture
def make_server(make_pg_server: Callable[..., Awaitable[Client]]) -> Callable[..., Awaitable[Client]]:
    return make_pg_server


@pytest.fixture
async def client(make_server: Callable[..., Awaitable[Client]]) -> Client:
    return await make_server()


@pytest.fixture
async def pg_client(make_pg_server: Callable[..., Awaitable[Client]]) -> Client:
    """A server over the real engine on PostgreSQL, for tests about what the stores keep."""
    return await make_pg_server()


@pytest.fixture
async def make_memory_server(data_dir: Path, tiny_model_dir: Path):
    """Start servers over the engine on in-memory stores; a second call shares the stores (a 'restart')."""
    stores = MemoryStores()
    opened: list[Client] = []

    async def make(**overrides) -> Client:
        overrides.setdefault("gateway_port", 0)
        overrides.setdefault("base_protection_method", "NONE")  # (BASE_OFF)
        settings = Settings(**{
            "host": "127.0.0.1", "port": 0, "data_dir": data_dir,
            **base_settings(tiny_model_dir),  # the tiny model, one torch thread, one device (ONE_DEVICE)
            **overrides,
        })
        engine, owned = await memory_engine(settings, stores)
        app = await start(settings, engine=engine, owned=owned)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
        client = Client(app, channel, pb_grpc.TrainingServiceStub(channel))
        opened.append(client)
        return client

    make.stores = stores  # type: ignore[attr-defined]
    yield make
    for client in opened:
        await client.channel.close()
        await client.app.stop(0)


@pytest.fixture
async def memory_client(make_memory_server: Callable[..., Awaitable[Client]]) -> Client:
    return await make_memory_server()


def spec(path: str = "capitals.jsonl", **hyper) -> pb.TrainingJobSpec:
    hp = {"epochs": 2, "batch_size": 4, "learning_rate": 5e-3, "max_seq_length": 128, "seed": 7}
    hp.update(hyper)
    return pb.TrainingJobSpec(jsonl=common.JsonlDataset(path=path), hyperparameters=pb.Hyperparameters(**hp))


async def watch_all(stub: pb_grpc.TrainingServiceStub, name: str, after: int = 0) -> list[pb.WatchTrainingJobResponse]:
    return [msg async for msg in stub.WatchTrainingJob(pb.WatchTrainingJobRequest(name=name, after_sequence=after))]


async def aiter_events(stream) -> AsyncIterator[pb.TrainingJobEvent]:
    async for msg in stream:
        if msg.HasField("event"):
            yield msg.event


def error_details(err: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, list[tuple[str, str]]]:
    """The one ErrorInfo and the field violations of a failed call."""
    status = rpc_status.from_call(err)
    assert status is not None, "error carries no google.rpc.Status details"
    infos, violations = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
    assert len(infos) == 1, f"expected exactly one ErrorInfo, got {len(infos)}"
    assert infos[0].domain == "learning-engine"
    return infos[0], violations
