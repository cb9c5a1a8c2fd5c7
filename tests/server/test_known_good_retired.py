"""Marking a new known-good version unloads the one it replaces from the serving engine (retired in the background,
as every replaced version is), unless a role still needs it (the active version, a split's candidate, a version
another name routes). Held here: it does not stay loaded until Learning Engine restarts (on MAX each loaded adapter
holds a LoRA slot, ``--max-num-loras``, and GPU memory), whether the new known-good version is being activated or is
already the active one."""

from __future__ import annotations

import pytest

from tests.server.lora_helpers import RETIRE_FAST, activate, loaded_when, status, train


@pytest.mark.slow
async def test_the_replaced_known_good_version_is_unloaded(make_server):
    client = await make_server(**RETIRE_FAST)
    v10 = await train(client)
    v11 = await train(client, parent=v10)
    v12 = await train(client, parent=v11)
    await activate(client, v10, mark_known_good=True)
    await activate(client, v11, force=True)
    st = (await activate(client, v12, mark_known_good=True, force=True)).status
    assert (st.active_version, st.known_good_version) == (v12, v12)
    loaded = await loaded_when(client, [v12])
    assert loaded == [v12], f"loaded on the engine: {loaded}; {v10} is no longer active nor known-good"


@pytest.mark.slow
async def test_marking_the_active_version_known_good_unloads_the_replaced_one(make_server):
    client = await make_server(**RETIRE_FAST)
    v10 = await train(client)
    v11 = await train(client, parent=v10)
    await activate(client, v10, mark_known_good=True)
    await activate(client, v11, force=True)
    assert sorted(a.version for a in (await status(client)).loaded) == sorted([v10, v11])
    st = (await activate(client, v11, mark_known_good=True)).status  # no activation to run: only the mark
    assert (st.active_version, st.known_good_version) == (v11, v11)
    assert await loaded_when(client, [v11]) == [v11]
