"""Retirements are persisted (table lora_retirements), so every serving process of a target sees them: a version
one replica retires stays loaded until its retirement is due, whoever reconciles meanwhile (a replica starting, an
engine found again), and any replica's follow unloads it once due, the retiring process stopped or not. A version
retired again is due after its latest retirement (served again in between, its followers get a whole grace again);
a replica still streaming from a retiring version pushes it further; and an error in the follow's retirement work
is tried again at the next follow, never leaving the version loaded for good."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from engine.serving.reference_model import ReferenceModel
from tests.fixtures.serving import start_backend
from tests.server.conftest import TINY
from tests.server.lora_helpers import (
    RETIRE_FAST,
    SlowModel,
    activate,
    another_replica,
    gateway_url,
    loaded_when,
    long_request,
    status,
    v11_serving,
)


@pytest.mark.slow
async def test_a_starting_replica_does_not_unload_a_version_another_is_retiring(make_server, tiny_model_dir,
                                                                                 tmp_path):
    settings = {"serving_follow_seconds": 30.0, "drain_timeout_seconds": 30.0}  # a retirement's grace: 60 s
    backend = await start_backend(ReferenceModel(tiny_model_dir, TINY))
    try:
        one = await make_server(serving_url=backend.url, **settings)
        v10, v11, v12 = await v11_serving(one)
        two = await another_replica(make_server, tmp_path, serving_url=backend.url, **settings)
        assert (await status(two)).active_version == v11  # replica two routes the alias to v1.1

        await activate(one, v12, force=True)  # v1.1 retiring on replica one: unloaded in 60 s at the earliest
        assert f"{TINY}@{v11}" in backend.model.adapters()

        await another_replica(make_server, tmp_path, "replica3", serving_url=backend.url, **settings)  # it starts

        assert f"{TINY}@{v11}" in backend.model.adapters(), \
            "the starting replica's reconciliation unloaded v1.1 during replica one's retirement grace"
        async with aiohttp.ClientSession() as s, s.post(
                gateway_url(two) + "/v1/completions",
                json={"model": "active", "prompt": "Hello", "max_tokens": 2}) as r:  # two has not followed yet
            body = await r.text()
        assert r.status == 200, (r.status, body)
    finally:
        await backend.stop()


@pytest.mark.slow
async def test_a_version_served_again_elsewhere_gets_a_new_grace(make_server, tiny_model_dir, data_dir, tmp_path):
    settings = {"serving_follow_seconds": 1.0, "drain_timeout_seconds": 3.0}  # a retirement's grace: 4 s
    backend = await start_backend(ReferenceModel(tiny_model_dir, TINY))
    try:
        one = await make_server(serving_url=backend.url, **settings)
        v10, v11, v12 = await v11_serving(one)
        (tmp_path / "replica2").mkdir()
        two = await make_server(serving_url=backend.url, data_dir=tmp_path / "replica2",
                                datasets_path=data_dir / "datasets", artifacts_path=data_dir / "artifacts",
                                **settings)
        loop = asyncio.get_running_loop()
        await activate(one, v12, force=True)  # one retires v1.1: due at t0 + 4 s
        t0 = loop.time()
        await asyncio.sleep(1.5)
        assert (await activate(two, v11, force=True)).status.active_version == v11  # v1.1 serves again
        await asyncio.sleep(0.5)  # every replica follows it to v1.1 within a second
        assert (await activate(two, v12, force=True)).status.active_version == v12
        t1 = loop.time()  # two retires v1.1 again: its followers' requests to it have until t1 + 4 s
        while loop.time() < t1 + 3.0:
            assert f"{TINY}@{v11}" in backend.model.adapters(), (
                f"v1.1 unloaded {loop.time() - t1:.1f} s after it left the alias again (grace 4 s), "
                f"{loop.time() - t0:.1f} s after replica one's own retirement began")
            await asyncio.sleep(0.05)
        assert (await status(one)).active_version == v12
        assert await loaded_when(one, [v10, v12]) == sorted([v10, v12]), "the latest retirement never unloaded v1.1"
    finally:
        await backend.stop()


@pytest.mark.slow
async def test_a_retirement_survives_one_transient_error(make_server):
    client = await make_server(**RETIRE_FAST)  # a retirement's grace: 0.4 s
    v10, v11, v12 = await v11_serving(client)

    controller = client.app.owned.lora.controller
    real = controller._store.serialised
    failures = []

    def flaky(target: str):
        if not failures:  # the next taker of the lock: v1.1's retirement, once due after the activation below
            failures.append(asyncio.current_task())
            raise TimeoutError("pool.acquire timed out")  # (asyncpg's pool under load)
        return real(target)

    await activate(client, v12, force=True)
    controller._store.serialised = flaky
    await asyncio.sleep(0.1)
    assert failures == [], "something else took the lock first"
    loaded = await loaded_when(client, [v10, v12], within=5.0)  # a dozen graces
    assert failures, "the retirement never ran"
    assert loaded == sorted([v10, v12]), f"one transient error left {v11} loaded for good: {loaded}"


@pytest.mark.slow
async def test_another_replica_unloads_a_retirement_once_due_after_the_retiring_process_stopped(
        make_server, tiny_model_dir, tmp_path):
    settings = {"serving_follow_seconds": 0.2, "drain_timeout_seconds": 4.0}  # a retirement's grace: 4.2 s
    backend = await start_backend(ReferenceModel(tiny_model_dir, TINY))
    try:
        one = await make_server(serving_url=backend.url, **settings)
        v10, v11, v12 = await v11_serving(one)
        two = await another_replica(make_server, tmp_path, serving_url=backend.url, **settings)
        await activate(one, v12, force=True)  # one retires v1.1, then stops before it is due
        await asyncio.wait_for(one.app.stop(0), 30)

        assert v11 in {a.version for a in (await status(two)).loaded}, "unloaded before its retirement was due"
        assert await loaded_when(two, [v10, v12], within=15.0) == sorted([v10, v12]), \
            "the retirement of a process that stopped was never carried out"
    finally:
        await backend.stop()


@pytest.mark.slow
async def test_a_long_request_on_another_replica_keeps_the_version_loaded_past_the_grace(
        make_server, tiny_model_dir, tmp_path):
    settings = {"serving_follow_seconds": 0.3, "drain_timeout_seconds": 1.0}  # a retirement's grace: 1.3 s
    backend = await start_backend(SlowModel(tiny_model_dir, TINY, seconds=4.0))
    try:
        one = await make_server(serving_url=backend.url, **settings)
        v10, v11, v12 = await v11_serving(one)
        two = await another_replica(make_server, tmp_path, serving_url=backend.url, **settings)

        running = asyncio.create_task(long_request(two))
        await asyncio.sleep(0.3)
        await activate(one, v12, force=True)  # one retires v1.1: due in 1.3 s, but two streams from it for 4 s
        loop = asyncio.get_running_loop()
        until = loop.time() + 2.5  # past the grace and a follow
        while loop.time() < until:
            assert not running.done()
            assert f"{TINY}@{v11}" in backend.model.adapters(), "unloaded under replica two's request"
            await asyncio.sleep(0.05)
        assert await running == (200, f"{TINY}@{v11}")  # whole
        assert await loaded_when(one, [v10, v12]) == sorted([v10, v12]), "kept loaded after its last request"
    finally:
        await backend.stop()
