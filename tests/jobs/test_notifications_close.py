"""The LISTEN connection of job notifications is never lost to the pool: a close while a watch starts listening, or
a watch cancelled while it starts, gives it back, so the pool (and the server's stop) can close."""

from __future__ import annotations

import asyncio

import pytest

from engine.stores import postgres
from engine.stores.job_store import JobNotifications


async def test_a_close_while_a_watch_starts_listening_leaves_no_connection_taken(database_url: str) -> None:
    pool = await postgres.connect(database_url, max_size=2)
    notifications = JobNotifications(pool)
    listening = asyncio.create_task(notifications.notified())  # a watch taking its token: LISTEN begins
    await asyncio.sleep(0)  # it is asking the pool for the connection
    await notifications.close()  # the server stops meanwhile
    await listening
    try:
        await asyncio.wait_for(pool.close(), 10)
    except TimeoutError:
        pool.terminate()
        pytest.fail("the LISTEN connection taken as the notifications closed was never given back")


async def test_a_watch_cancelled_while_it_starts_listening_gives_the_connection_back(database_url: str) -> None:
    pool = await postgres.connect(database_url, max_size=2)
    notifications = JobNotifications(pool)
    for _ in range(20):  # at each point of LISTEN's start, as the event loop lets the cancel land
        for ticks in range(6):
            listening = asyncio.create_task(notifications.notified())
            for _ in range(ticks):
                await asyncio.sleep(0)
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
        await notifications.close()
        notifications = JobNotifications(pool)
    try:
        await asyncio.wait_for(pool.close(), 10)
    except TimeoutError:
        pool.terminate()
        pytest.fail("a LISTEN connection taken by a cancelled watch was never given back")
