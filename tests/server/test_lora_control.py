"""LoraControl end to end through gRPC against the reference backend: activate, roll back, kill switch,
each under concurrent traffic through the gateway, with the serving adapter checked by its logprobs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from learning.v1 import lora_control_pb2 as lc
from tests.server.conftest import TINY
from tests.server.lora_helpers import ACTOR, activate, ask, expected, stub, train, under_load


async def test_activate_rollback_disable_enable_under_load(make_server, tiny_model_dir: Path):
    client = await make_server(drain_timeout_seconds=10)
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

    # roll back to v1.0: still loaded, so no load phase; v1.1 is drained and unloaded
    resp, statuses, _ = await under_load(
        client, control.RollbackAdapter(lc.RollbackAdapterRequest(reason="complaints"), metadata=ACTOR))
    assert set(statuses) == {200}
    st = resp.status
    assert (st.active_version, st.previous_version, st.known_good_version) == ("v1.0", "v1.1", "v1.0")
    assert [a.version for a in st.loaded] == ["v1.0"]
    assert "load" not in st.last_operation.phase_durations
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
