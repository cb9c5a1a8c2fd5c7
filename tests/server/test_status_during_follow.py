"""A status asked of a serving process while its periodic follow is under way waits for that follow and reads the
state afresh. The follow holds the operations' lock while it reads the store and the engine's list, and a status took
the lock's being held for an operation's: it answered with the state as it stood before, although another serving
process had already changed it (a canary it had ended showed as running, with no outcome; GetLoraStatus's
docstring: "the state as recorded")."""

from __future__ import annotations

import asyncio

from learning.v1 import lora_control_pb2 as lc
from tests.server.lora_helpers import ACTOR, status, stub


async def test_a_status_during_a_follow_shows_what_another_process_recorded(make_pg_server, tmp_path) -> None:
    settings = dict(serving_follow_seconds=600)  # no periodic follow meanwhile: the test runs the one under way
    one = await make_pg_server(**settings)
    (tmp_path / "replica2").mkdir()
    two = await make_pg_server(data_dir=tmp_path / "replica2", **settings)
    assert (await status(two)).enabled
    controller = two.app.owned.lora.controller
    reading, release = asyncio.Event(), asyncio.Event()
    real = controller._reconcile_needed

    async def slow_engine_list() -> str:  # the engine answering its model list slowly, mid-follow
        reading.set()
        await release.wait()
        return await real()

    controller._reconcile_needed = slow_engine_list
    following = asyncio.create_task(controller.follow())
    await asyncio.wait_for(reading.wait(), 10)
    controller._reconcile_needed = real
    await stub(one).DisableLora(lc.DisableLoraRequest(reason="incident"), metadata=ACTOR)  # recorded by the other
    asking = asyncio.ensure_future(status(two))
    await asyncio.sleep(0.3)
    release.set()
    seen = await asyncio.wait_for(asking, 10)
    await following
    assert not seen.enabled, "the status showed the state from before the other process disabled LoRA"
    assert seen.last_operation.reason == "incident", seen.last_operation
