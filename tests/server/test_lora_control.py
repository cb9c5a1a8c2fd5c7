"""LoraControl end to end through gRPC against the reference backend: activate, roll back, kill switch,
each under concurrent traffic through the gateway, with the serving adapter checked by its logprobs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from engine.telemetry import REGISTRY
from learning.v1 import lora_control_pb2 as lc
from tests.server.conftest import TINY
from tests.server.lora_helpers import (
    ACTOR,
    RETIRE_FAST,
    activate,
    ask,
    expected,
    gateway_url,
    loaded_when,
    stub,
    train,
    under_load,
)


@pytest.mark.slow
async def test_activate_rollback_disable_enable_under_load(make_server, tiny_model_dir: Path):
    client = await make_server(**RETIRE_FAST)  # a replaced version is retired in the background, soon
    v10 = await train(client)
    v11 = await train(client, parent=v10)
    assert (v10, v11) == ("v1.0", "v1.1")
    control = stub(client)
    watch = control.WatchLoraStatus(lc.WatchLoraStatusRequest())
    first = await watch.read()
    assert first.status.active_version == "" and first.status.enabled and first.status.alias == "active"

    base_out = expected(tiny_model_dir, None)
    served, out = await ask(client)
    assert served == TINY and out == pytest.approx(base_out, abs=1e-4)

    # activate v1.0
    resp, statuses, _ = await under_load(client, activate(client, v10, reason="first rollout"))
    assert set(statuses) == {200} and sum(statuses.values()) > 0
    st = resp.status
    assert (st.active_version, st.previous_version, st.known_good_version) == ("v1.0", "", "")
    op = st.last_operation
    assert op.kind == lc.LORA_OPERATION_KIND_ACTIVATE and op.actor == "alice@example.com"
    assert op.reason == "first rollout" and not op.HasField("error")
    assert {"fetch", "load", "smoke", "switch", "to_serving"} <= set(op.phase_durations)
    paths = {a.version: a.path for a in st.loaded}
    v10_out = expected(tiny_model_dir, paths["v1.0"])
    assert v10_out != pytest.approx(base_out, abs=1e-3)
    served, out = await ask(client)
    assert served == f"{TINY}@v1.0" and out == pytest.approx(v10_out, abs=1e-4)

    # activate v1.1: v1.0 becomes known-good (there was none) and stays loaded
    resp, statuses, served_during = await under_load(client, activate(client, v11, reason="continual update"))
    assert set(statuses) == {200}
    st = resp.status
    assert (st.active_version, st.previous_version, st.known_good_version) == ("v1.1", "v1.0", "v1.0")
    paths = {a.version: a.path for a in st.loaded}
    assert set(paths) == {"v1.0", "v1.1"}
    v11_out = expected(tiny_model_dir, paths["v1.1"])
    served, out = await ask(client)
    assert served == f"{TINY}@v1.1" and out == pytest.approx(v11_out, abs=1e-4)
    assert v11_out != pytest.approx(v10_out, abs=1e-3)

    # roll back to v1.0: still loaded, so no load phase; v1.1 is retired (unloaded once its requests have ended)
    resp, statuses, _ = await under_load(
        client, control.RollbackAdapter(lc.RollbackAdapterRequest(reason="complaints"), metadata=ACTOR))
    assert set(statuses) == {200}
    st = resp.status
    assert (st.active_version, st.previous_version, st.known_good_version) == ("v1.0", "v1.1", "v1.0")
    assert "load" not in st.last_operation.phase_durations
    assert await loaded_when(client, ["v1.0"]) == ["v1.0"]
    assert st.last_operation.phase_durations["to_serving"].ToTimedelta().total_seconds() < 1.0
    served, out = await ask(client)
    assert served == f"{TINY}@v1.0" and out == pytest.approx(v10_out, abs=1e-4)

    # kill switch: the alias serves the base model; v1.0 stays loaded
    resp, statuses, _ = await under_load(
        client, control.DisableLora(lc.DisableLoraRequest(reason="incident"), metadata=ACTOR))
    assert set(statuses) == {200} and not resp.status.enabled and resp.status.active_version == "v1.0"
    served, out = await ask(client)
    assert served == TINY and out == pytest.approx(base_out, abs=1e-4)

    resp, statuses, _ = await under_load(
        client, control.EnableLora(lc.EnableLoraRequest(reason="resolved"), metadata=ACTOR))
    assert set(statuses) == {200} and resp.status.enabled
    served, out = await ask(client)
    assert served == f"{TINY}@v1.0" and out == pytest.approx(v10_out, abs=1e-4)

    listed = await control.ListLoadedAdapters(lc.ListLoadedAdaptersRequest())
    assert [(a.lora_name, a.version) for a in listed.loaded] == [(f"{TINY}@v1.0", "v1.0")]

    seen = []
    while True:
        msg = await asyncio.wait_for(watch.read(), 5)
        seen.append(msg.status)
        if msg.status.last_operation.kind == lc.LORA_OPERATION_KIND_ENABLE:
            break
    kinds = [s.last_operation.kind for s in seen]
    for kind in (lc.LORA_OPERATION_KIND_ACTIVATE, lc.LORA_OPERATION_KIND_ROLLBACK,
                 lc.LORA_OPERATION_KIND_DISABLE, lc.LORA_OPERATION_KIND_ENABLE):
        assert kind in kinds
    watch.cancel()

    # the registry refuses to delete what the serving side relies on
    async with client.app.owned.pool.acquire() as conn:
        rows = await conn.fetch("SELECT role, major, minor FROM serving_state WHERE base_model = $1", TINY)
    assert sorted((r["role"], r["major"], r["minor"]) for r in rows) == [("ACTIVE", 1, 0), ("KNOWN_GOOD", 1, 0)]


async def test_the_gateway_streams_names_its_models_and_counts_per_version(make_server):
    client = await make_server()
    v10 = await train(client)
    await activate(client, v10)
    status = (await stub(client).GetLoraStatus(lc.GetLoraStatusRequest())).status
    assert status.gateway_url == gateway_url(client)  # also when gateway_port is 0
    served = f"{TINY}@{v10}"

    def count(code: str) -> float:
        return REGISTRY.get_sample_value("learning_engine_gateway_requests_total",
                                         {"model": served, "status": code}) or 0.0

    before = count("200")
    body = {"model": "active", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 6}
    async with aiohttp.ClientSession() as s:
        async with s.post(status.gateway_url + "/v1/chat/completions", json=body) as r:
            whole = (await r.json())["choices"][0]["message"]["content"]
        async with s.post(status.gateway_url + "/v1/chat/completions", json={**body, "stream": True}) as r:
            assert r.status == 200 and r.headers["x-served-model"] == served
            assert r.headers["content-type"].startswith("text/event-stream")
            events = [e.removeprefix("data: ") for e in (await r.read()).decode().split("\n\n") if e]
        assert events[-1] == "[DONE]"
        assert "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]) == whole
        async with s.post(status.gateway_url + "/v1/chat/completions", json={**body, "n": 3}) as r:
            assert r.status == 400 and "n=3" in (await r.json())["error"]["message"]
        for name in ("active", served, TINY):
            async with s.get(f"{status.gateway_url}/v1/models/{name}") as r:
                doc = await r.json()
                assert r.status == 200 and doc["id"] == name and "root" not in doc  # names, never paths
        async with s.get(status.gateway_url + "/v1/models/nope") as r:
            assert r.status == 404
    assert count("200") == before + 2 and count("400") >= 1
    assert REGISTRY.get_sample_value("learning_engine_gateway_request_duration_seconds_count",
                                     {"model": served}) >= 3
