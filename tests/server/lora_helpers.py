"""Helpers for LoraControl tests: train versions, drive traffic through the gateway, call the RPCs."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import aiohttp
import grpc

from engine.serving.reference_model import ReferenceModel
from learning.v1 import lora_control_pb2 as lc
from learning.v1 import lora_control_pb2_grpc as lc_grpc
from learning.v1 import training_pb2 as pb
from tests.fixtures.serving import expected_logprobs
from tests.server.conftest import spec, watch_all

PROMPT = "What is the capital of France?"
ACTOR = [("x-actor", "alice@example.com")]


async def train(client, parent: str = "", epochs: int = 2) -> str:
    s = spec(epochs=epochs)
    if parent:
        s.parent_adapter_version = parent
        s.ewc.disabled = True
    job = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=s))).training_job
    await watch_all(client.training, job.name)
    done = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert done.output_adapter_version, done
    return done.output_adapter_version


def stub(client) -> lc_grpc.LoraControlServiceStub:
    return lc_grpc.LoraControlServiceStub(client.channel)


def gateway_url(client) -> str:
    return f"http://127.0.0.1:{client.app.owned.lora.gateway.port}"


async def ask(client, model: str = "active", max_tokens: int = 5) -> tuple[str, list[float]]:
    """One completion through the gateway: (the upstream model that served it, token logprobs)."""
    async with aiohttp.ClientSession() as s, s.post(
        gateway_url(client) + "/v1/completions",
        json={"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "logprobs": 1},
    ) as r:
        body = await r.json()
        assert r.status == 200, body
        return r.headers["x-served-model"], body["choices"][0]["logprobs"]["token_logprobs"]


def expected(model_dir: Path, adapter_dir: str | None) -> list[float]:
    return expected_logprobs(model_dir, Path(adapter_dir) if adapter_dir else None, PROMPT, 5)


SLOW = 7  # max_tokens of a request to a SlowModel that takes its time (a long answer)


class SlowModel(ReferenceModel):
    """The reference backend whose answers of SLOW tokens take ``seconds`` (a long answer, still in flight while
    its version is replaced); off the event loop: the backend runs generate in a thread."""

    def __init__(self, *args, seconds: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seconds = seconds

    def generate(self, model, prompt_ids, max_tokens, streamer=None, **kw):
        if max_tokens == SLOW:
            time.sleep(self.seconds)
        return super().generate(model, prompt_ids, max_tokens, streamer, **kw)


async def long_request(client) -> tuple[int, str]:
    """A request of SLOW tokens to the alias through ``client``'s gateway: its status and what served it."""
    async with aiohttp.ClientSession() as s, s.post(
            gateway_url(client) + "/v1/completions",
            json={"model": "active", "prompt": "Hello", "max_tokens": SLOW}) as r:
        await r.read()
        return r.status, r.headers["x-served-model"]


async def v11_serving(client) -> tuple[str, str, str]:
    """Three versions trained in a chain, v1.0 activated as the known-good one and v1.1 active: activating v1.2 then
    retires v1.1 (it is neither active nor known-good). Returns the three versions."""
    v10 = await train(client)
    v11 = await train(client, parent=v10)
    v12 = await train(client, parent=v11)
    await activate(client, v10, mark_known_good=True)
    await activate(client, v11, force=True)
    return v10, v11, v12


async def another_replica(make_server, tmp_path: Path, name: str = "replica2", **settings):
    """Another serving process of the same target (its own data directory, the same database and engine)."""
    (tmp_path / name / "datasets").mkdir(parents=True)
    return await make_server(data_dir=tmp_path / name, **settings)


async def under_load(client, call, workers: int = 4):
    """Run ``call`` while ``workers`` clients send requests to the alias; returns (result, statuses, served)."""
    stop = asyncio.Event()
    statuses: Counter[int] = Counter()
    served: Counter[str] = Counter()

    async def worker() -> None:
        async with aiohttp.ClientSession() as s:
            while not stop.is_set():
                async with s.post(gateway_url(client) + "/v1/completions",
                                  json={"model": "active", "prompt": "Hello", "max_tokens": 2}) as r:
                    await r.read()
                    statuses[r.status] += 1
                    served[r.headers.get("x-served-model", "")] += 1

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    await asyncio.sleep(0.3)
    try:
        result = await call
    finally:
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*tasks)
    return result, statuses, served


async def activate(client, version: str, **kw) -> lc.ActivateAdapterResponse:
    return await stub(client).ActivateAdapter(lc.ActivateAdapterRequest(version=version, **kw), metadata=ACTOR)


async def status(client) -> lc.LoraStatus:
    return (await stub(client).GetLoraStatus(lc.GetLoraStatusRequest())).status


# RETIRE_FAST: the settings under which a replaced version is unloaded soon (a retirement waits a follow period plus
# the drain timeout, 35 s by default, before it unloads it): for tests that wait for it.
RETIRE_FAST = {"serving_follow_seconds": 0.2, "drain_timeout_seconds": 0.2}


async def loaded_when(client, versions: list[str], within: float = 10.0) -> list[str]:
    """The versions the engine has loaded once they are ``versions`` (a replaced version is unloaded by a retirement
    in the background, after the RPC returned), or as they are after ``within`` seconds; sorted."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        loaded = sorted(a.version for a in (await status(client)).loaded)
        if loaded == sorted(versions) or asyncio.get_running_loop().time() > deadline:
            return loaded
        await asyncio.sleep(0.05)


def code_of(err: grpc.aio.AioRpcError) -> grpc.StatusCode:
    return err.code()
