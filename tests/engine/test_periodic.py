"""engine.periodic.Periodic: a step that fails, or that ends with a cancellation of something it awaited, is
logged and called again at the next period; only ``stop`` (or a step returning False) ends the loop."""

from __future__ import annotations

import asyncio
import logging

from engine.periodic import Periodic


async def test_a_step_ended_by_a_cancellation_it_did_not_ask_for_is_tried_again(caplog):
    calls: list[int] = []
    again = asyncio.Event()

    async def step() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            awaited = asyncio.get_running_loop().create_future()
            awaited.cancel()  # what the step waits for is cancelled by its owner
            await awaited
        if len(calls) == 2:
            raise RuntimeError("the database restarted")
        again.set()

    loop = Periodic("follower", step, 0.01)
    with caplog.at_level(logging.ERROR, logger="engine.periodic"):
        loop.start()
        await asyncio.wait_for(again.wait(), timeout=30)
        assert loop.running
        await loop.stop()
    assert len(calls) >= 3
    assert loop.running is False
    assert [r.getMessage() for r in caplog.records][:2] == [
        "follower crashed: a cancellation of what it awaited", "follower crashed"]


async def test_stop_ends_the_loop_in_the_middle_of_a_step():
    entered = asyncio.Event()

    async def step() -> None:
        entered.set()
        await asyncio.sleep(3600)

    loop = Periodic("follower", step, 0.01)
    loop.start()
    task = loop._task
    await asyncio.wait_for(entered.wait(), timeout=30)
    await asyncio.wait_for(loop.stop(), timeout=30)
    assert task is not None and task.cancelled()


async def test_a_step_returning_false_ends_the_loop():
    calls: list[int] = []

    async def step() -> bool:
        calls.append(1)
        return False

    loop = Periodic("once", step, 0.01)
    loop.start()
    task = loop._task
    assert task is not None
    await asyncio.wait_for(task, timeout=30)
    assert calls == [1]

