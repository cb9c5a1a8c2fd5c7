"""postgres.advisory_lock and the pool: callers in one process waiting for one key hold no connection while they wait.
Waiting inside pg_advisory_lock held one each, so as many waiters as the pool had connections left none for anything
else: the holder's own second query waited for ever, and every other query of the process (any RPC) waited for them
all. Every store's lock goes through it (datasets, pipelines, a target's serving)."""

from __future__ import annotations

import asyncio

import pytest

from engine.stores import postgres


async def test_waiters_for_one_key_leave_the_pool_to_the_holder_and_everyone_else(database_url: str) -> None:
    pool = await postgres.connect(database_url, min_size=1, max_size=2)
    try:
        order: list[int] = []

        async def section(i: int) -> None:
            async with postgres.advisory_lock(pool, "one-dataset") as conn:
                await conn.execute("SELECT 1")
                await asyncio.sleep(0.05)  # every other caller is waiting meanwhile
                async with pool.acquire() as other:  # a second connection, as a section that writes elsewhere takes
                    order.append(await other.fetchval("SELECT $1::int", i))

        callers = asyncio.gather(*(section(i) for i in range(5)))
        await asyncio.sleep(0.02)
        try:
            # while four wait, a query of anything else in the process gets a connection
            assert await asyncio.wait_for(pool.fetchval("SELECT 42"), 10) == 42
            await asyncio.wait_for(callers, 30)
        except TimeoutError:
            callers.cancel()
            pytest.fail(f"waiters for one advisory lock hold the pool (size {pool.get_size()}, "
                        f"idle {pool.get_idle_size()})")
        assert sorted(order) == [0, 1, 2, 3, 4]
    finally:
        pool.terminate()


async def test_blocks_of_different_keys_that_ask_for_another_connection_all_end(database_url: str) -> None:
    """Blocks of more keys than the pool has connections, each asking for a second one, end: they share the pool's
    slots, whichever store they are of (each store bounding its own blocks to half the pool let a pipeline's and an
    online session's blocks together take every connection), beside a connection held for good (a LISTEN)."""
    pool = await postgres.connect(database_url, min_size=1, max_size=4)
    try:
        async with pool.acquire():  # held for good, as engine.stores.job_queue's notifications hold one
            async def section(store: str, i: int) -> int:
                async with postgres.advisory_lock(pool, f"{store}/key-{i}", another_connection=True):
                    await asyncio.sleep(0.05)
                    async with pool.acquire() as other:
                        return int(await other.fetchval("SELECT $1::int", i))

            done = await asyncio.wait_for(asyncio.gather(*(section(store, i) for store in ("pipelines", "online")
                                                           for i in range(6))), 30)
            assert done == list(range(6)) * 2
    finally:
        pool.terminate()


async def test_postgresql_out_of_reach_while_the_lock_is_taken_is_unavailable() -> None:
    """A connection error taking the lock (a CreateOnlineSession's, a pipeline run's) was the driver's own error,
    answered INTERNAL; it is DATABASE_UNAVAILABLE, as every store's other calls."""
    from engine.errors import Unavailable
    from tests.fixtures.unreachable_postgres import RefusingPool

    with pytest.raises(Unavailable) as caught:
        async with postgres.advisory_lock(RefusingPool(), "k", another_connection=True):  # type: ignore[arg-type]
            pytest.fail("entered without a lock")
    assert caught.value.reason == "DATABASE_UNAVAILABLE"


def test_a_statements_own_error_is_no_outage() -> None:
    """A cancelled or timed-out statement and a dropped database are OperatorInterventionError's kinds too, but no
    moment's outage: a store must not turn them into UNAVAILABLE (which a running online session waits out)."""
    import asyncpg

    assert not issubclass(asyncpg.exceptions.QueryCanceledError, postgres.CONNECTION_ERRORS)
    assert not issubclass(asyncpg.exceptions.DatabaseDroppedError, postgres.CONNECTION_ERRORS)
    assert issubclass(asyncpg.exceptions.CannotConnectNowError, postgres.CONNECTION_ERRORS)
    assert issubclass(asyncpg.exceptions.ConnectionDoesNotExistError, postgres.CONNECTION_ERRORS)


async def test_the_lock_still_excludes_another_process(database_url: str) -> None:
    """The in-process wait is in front of PostgreSQL's lock, not in place of it: a second pool (another process's)
    waits for the holder."""
    one = await postgres.connect(database_url, min_size=1, max_size=2)
    two = await postgres.connect(database_url, min_size=1, max_size=2)
    try:
        released = asyncio.Event()
        inside: list[str] = []

        async def first() -> None:
            async with postgres.advisory_lock(one, "shared"):
                inside.append("one")
                await released.wait()
                inside.append("one out")

        async def second() -> None:
            async with postgres.advisory_lock(two, "shared"):
                inside.append("two")

        holder = asyncio.create_task(first())
        while not inside:
            await asyncio.sleep(0.01)
        waiter = asyncio.create_task(second())
        await asyncio.sleep(0.3)
        assert inside == ["one"]
        released.set()
        await asyncio.wait_for(asyncio.gather(holder, waiter), 10)
        assert inside == ["one", "one out", "two"]
    finally:
        one.terminate()
        two.terminate()
