"""Two serving processes of one target (replicas behind a load balancer, one serving engine). An activation on one
switches its own gateway at once; the other's routes the alias to the replaced version until its next follow
(``serving_follow_seconds``). The replaced version is unloaded only after that, plus the drain timeout for the
requests the other replica sent it: that replica's clients never get the engine's 404 for the alias during a
swap."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import pytest

from engine.serving.reference_model import ReferenceModel
from tests.fixtures.serving import start_backend
from tests.server.conftest import TINY
from tests.server.lora_helpers import activate, another_replica, gateway_url, loaded_when, status, v11_serving

SETTINGS = {"serving_follow_seconds": 1.0, "drain_timeout_seconds": 1.0}  # v1.1 is unloaded 2 s after the swap


@pytest.mark.slow
async def test_the_other_replica_never_routes_the_alias_to_an_unloaded_version(make_server, tiny_model_dir, tmp_path):
    backend = await start_backend(ReferenceModel(tiny_model_dir, TINY))
    try:
        one = await make_server(serving_url=backend.url, **SETTINGS)
        v10, v11, v12 = await v11_serving(one)
        two = await another_replica(make_server, tmp_path, serving_url=backend.url, **SETTINGS)
        assert (await status(two)).active_version == v11  # the second replica routes the alias to v1.1

        unloaded = asyncio.Event()
        statuses: Counter[int] = Counter()
        served: Counter[str] = Counter()

        async def through_two() -> None:  # the second replica's clients, through the swap and v1.1's unload
            async with aiohttp.ClientSession() as s:
                while not unloaded.is_set():
                    async with s.post(gateway_url(two) + "/v1/completions",
                                      json={"model": "active", "prompt": "Hello", "max_tokens": 2}) as r:
                        await r.read()
                        statuses[r.status] += 1
                        served[r.headers.get("x-served-model", "")] += 1
                    await asyncio.sleep(0.02)

        clients = asyncio.create_task(through_two())
        await activate(one, v12, force=True)
        try:
            loaded = await loaded_when(one, [v10, v12], within=15)
        finally:
            await asyncio.sleep(0.3)  # (and a few requests more once it is gone)
            unloaded.set()
            await clients
        assert loaded == sorted([v10, v12]), f"{v11} was never unloaded: {loaded}"
        assert set(statuses) == {200}, f"replica two answered {dict(statuses)} (served {dict(served)})"
        assert served[f"{TINY}@{v11}"] and served[f"{TINY}@{v12}"], served  # it followed the swap meanwhile
    finally:
        await backend.stop()
