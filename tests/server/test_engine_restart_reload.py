"""The serving engine restarting while Learning Engine runs (MAX redeployed, OOM-killed) comes back with no adapters
loaded. Held here: the next follow of each serving process (every ``serving_follow_seconds``) finds the versions the
state needs loaded missing, or reaches the engine again after an outage, and reconciles as the start does, under the
same locks: the active and known-good versions are loaded again and the alias answers 200 again, with no operator
call and no restart of Learning Engine. Two serving processes sharing the engine load each version once (the one
that takes the target's lock second finds nothing missing), and a version an operation deliberately unloaded (the
one an activation retired) is not loaded back."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from engine.serving.reference_model import ReferenceModel
from learning.v1 import lora_control_pb2 as lc
from tests.fixtures.serving import start_backend
from tests.server.conftest import TINY
from tests.server.lora_helpers import PROMPT, activate, gateway_url, status, train


async def _alias_codes(client, n: int = 3) -> list[tuple[int, str | None]]:
    codes = []
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            async with s.post(gateway_url(client) + "/v1/completions",
                              json={"model": "active", "prompt": PROMPT, "max_tokens": 2}) as r:
                await r.read()
                codes.append((r.status, r.headers.get("x-served-model")))
    return codes


async def _until_loaded(client, wanted: list[str], seconds: float = 20.0) -> list[str]:
    loaded: list[str] = []
    for _ in range(int(seconds / 0.2)):
        loaded = sorted(a.version for a in (await status(client)).loaded)
        if loaded == wanted:
            break
        await asyncio.sleep(0.2)
    return loaded


def _counting_loads(client) -> list[str]:
    """The names this serving process's LoraControl loads from now on."""
    serving = client.app.owned.lora.controller._client
    loads: list[str] = []
    load = serving.load

    async def counted(name: str, path: str) -> None:
        loads.append(name)
        await load(name, path)

    serving.load = counted
    return loads


@pytest.mark.slow
async def test_the_alias_serves_the_active_version_again_after_the_engine_restarts(make_server, tiny_model_dir):
    backend = await start_backend(ReferenceModel(tiny_model_dir, TINY))
    client = await make_server(serving_url=backend.url, serving_follow_seconds=0.2)
    v10 = await train(client)
    v11 = await train(client, parent=v10)
    await activate(client, v10, mark_known_good=True)
    await activate(client, v11, force=True)
    assert await _until_loaded(client, sorted([v10, v11])) == sorted([v10, v11])
    # the serving engine restarts, empty, on the same address
    await backend.stop()
    await asyncio.sleep(1)  # a few follow periods with the engine unreachable
    backend = await start_backend(ReferenceModel(tiny_model_dir, TINY), port=backend.port)
    try:
        loaded = await _until_loaded(client, sorted([v10, v11]))
        st = await status(client)
        for _ in range(50):  # the reconciliation records itself once its loads are done: the engine lists them first
            if st.last_operation.kind == lc.LORA_OPERATION_KIND_RECONCILE:
                break
            await asyncio.sleep(0.2)
            st = await status(client)
        assert st.active_version == v11 and st.known_good_version == v10 and st.enabled
        assert loaded == sorted([v10, v11]), f"loaded on the engine after its restart: {loaded}"
        assert st.serving_reachable
        assert st.last_operation.kind == lc.LORA_OPERATION_KIND_RECONCILE and st.last_operation.actor == "system"
        assert not st.last_operation.HasField("error"), st.last_operation
        codes = await _alias_codes(client)
        assert all(c == (200, f"{TINY}@{v11}") for c in codes), codes
    finally:
        await backend.stop()


@pytest.mark.slow
async def test_two_serving_processes_sharing_the_engine_reload_each_version_once(make_server, tiny_model_dir,
                                                                                   tmp_path):
    backend = await start_backend(ReferenceModel(tiny_model_dir, TINY))
    one = await make_server(serving_url=backend.url, serving_follow_seconds=0.2)
    v10 = await train(one)
    await activate(one, v10, mark_known_good=True)
    (tmp_path / "replica2" / "datasets").mkdir(parents=True)
    two = await make_server(serving_url=backend.url, data_dir=tmp_path / "replica2", serving_follow_seconds=0.2)
    assert [a.version for a in (await status(two)).loaded] == [v10]
    loads = _counting_loads(one), _counting_loads(two)
    await backend.stop()
    backend = await start_backend(ReferenceModel(tiny_model_dir, TINY), port=backend.port)
    try:
        assert await _until_loaded(one, [v10]) == [v10]
        assert await _until_loaded(two, [v10]) == [v10]
        await asyncio.sleep(1.5)  # more follow periods of both: nothing more is loaded or unloaded
        assert loads[0] + loads[1] == [f"{TINY}@{v10}"], loads
        for client in (one, two):
            assert await _alias_codes(client, 2) == [(200, f"{TINY}@{v10}")] * 2
            assert [a.version for a in (await status(client)).loaded] == [v10]
    finally:
        await backend.stop()


@pytest.mark.slow
async def test_a_version_an_activation_retired_after_the_engine_restarted_is_not_loaded_back(make_server,
                                                                                            tiny_model_dir):
    backend = await start_backend(ReferenceModel(tiny_model_dir, TINY))
    client = await make_server(serving_url=backend.url, serving_follow_seconds=0.1, drain_timeout_seconds=0.2)
    v10 = await train(client)
    v11 = await train(client, parent=v10)
    v12 = await train(client, parent=v11)
    await activate(client, v10, mark_known_good=True)
    await activate(client, v11, force=True)
    await backend.stop()
    backend = await start_backend(ReferenceModel(tiny_model_dir, TINY), port=backend.port)
    try:
        assert await _until_loaded(client, sorted([v10, v11])) == sorted([v10, v11])
        await activate(client, v12, force=True)  # v11 is retired (unloaded 0.3 s on) while the follow runs
        await asyncio.sleep(1.5)  # many follow periods, and v11's retirement
        st = await status(client)
        assert sorted(a.version for a in st.loaded) == sorted([v10, v12]), st.loaded
        assert st.last_operation.kind == lc.LORA_OPERATION_KIND_ACTIVATE, st.last_operation  # no reconcile since
        assert await _alias_codes(client, 2) == [(200, f"{TINY}@{v12}")] * 2
    finally:
        await backend.stop()
