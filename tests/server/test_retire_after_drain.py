"""A replaced version is retired, not unloaded by the operation that replaced it: its retirement is persisted, due
once every serving process has followed the change (``serving_follow_seconds``) and their requests have had
``drain_timeout_seconds`` to end; this process's requests still in flight to it push it further at each follow, however
long they run (a long stream past the drain timeout neither loses its adapter nor leaves it loaded until the next
restart). Held here too: a version needed again before its retirement is due stays loaded, and a process stopping
with retirements pending leaves them to the next start (not unloaded as strays before they are due, then unloaded
once due). Across replicas: tests/server/test_retire_across_replicas.py."""

from __future__ import annotations

import asyncio

import pytest

from learning.v1 import lora_control_pb2 as lc
from tests.fixtures.serving import start_backend
from tests.server.conftest import TINY
from tests.server.lora_helpers import (
    ACTOR,
    RETIRE_FAST,
    SlowModel,
    activate,
    loaded_when,
    long_request,
    status,
    stub,
    v11_serving,
)


@pytest.mark.slow
async def test_a_replaced_version_is_unloaded_once_its_last_request_ends(make_server, tiny_model_dir):
    backend = await start_backend(SlowModel(tiny_model_dir, TINY, seconds=3.0))
    try:
        client = await make_server(serving_url=backend.url, **RETIRE_FAST)  # a retirement's grace: 0.4 s
        v10, v11, v12 = await v11_serving(client)

        running = asyncio.create_task(long_request(client))
        await asyncio.sleep(0.3)
        assert not running.done()
        st = (await activate(client, v12, force=True)).status
        assert st.active_version == v12
        assert not running.done(), "the activation waited for the request to the version it replaced"
        await asyncio.sleep(0.8)  # twice the grace, and v1.1's request is still running: it stays loaded
        assert not running.done()
        assert sorted(a.version for a in (await status(client)).loaded) == sorted([v10, v11, v12])
        assert await running == (200, f"{TINY}@{v11}")  # v1.1's last request has ended, whole
        loaded = await loaded_when(client, [v10, v12])
        assert loaded == sorted([v10, v12]), \
            f"{v11} (neither active nor known-good, no request in flight) is still loaded: {loaded}"
    finally:
        await backend.stop()


@pytest.mark.slow
async def test_a_version_needed_again_before_its_retirement_stays_loaded(make_server):
    client = await make_server(serving_follow_seconds=0.3, drain_timeout_seconds=0.3)  # a grace of 0.6 s
    v10, v11, v12 = await v11_serving(client)
    await activate(client, v12, force=True)  # v1.1's retirement is due in 0.6 s
    st = (await activate(client, v11, force=True, reason="back to v1.1")).status  # loaded: not loaded again
    assert st.active_version == v11
    assert await loaded_when(client, [v10, v11]) == sorted([v10, v11])  # v1.2 retired (due after v1.1's)
    await asyncio.sleep(1.0)
    assert sorted(a.version for a in (await status(client)).loaded) == sorted([v10, v11])

    # a rollback retires the version it leaves, and keeps the known-good one it goes back to
    st = (await stub(client).RollbackAdapter(lc.RollbackAdapterRequest(reason="complaints"), metadata=ACTOR)).status
    assert (st.active_version, st.previous_version) == (v10, v11)
    assert v11 in {a.version for a in st.loaded}, "the rollback unloaded the version it left at once"
    assert await loaded_when(client, [v10]) == [v10]


@pytest.mark.slow
async def test_a_stopping_process_leaves_its_retirements_to_the_next_start(make_server):
    one = await make_server(serving_follow_seconds=0.2, drain_timeout_seconds=4.0)  # a retirement's grace: 4.2 s
    v10, v11, v12 = await v11_serving(one)
    await activate(one, v12, force=True)
    assert sorted(a.version for a in (await status(one)).loaded) == sorted([v10, v11, v12])  # v1.1: retiring
    await asyncio.wait_for(one.app.stop(0), 30)  # the pending retirement does not hold the stop up

    restarted = await make_server(**RETIRE_FAST)
    st = await status(restarted)
    assert sorted(a.version for a in st.loaded) == sorted([v10, v11, v12]), \
        "the start unloaded v1.1 as a stray before its retirement was due"
    assert await loaded_when(restarted, [v10, v12], within=15.0) == sorted([v10, v12]), \
        "the restarted process never carried out the retirement it found"
