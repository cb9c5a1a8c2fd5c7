"""A pipeline's lock and the pool: as many concurrent DeletePipeline calls as the server's pool has connections (10,
the default of postgres.connect) each end (here: NOT_FOUND) instead of waiting for ever. The advisory lock takes a
pool connection; a locked section that asked the pool for a second one (store.get) while the others waited holding
one each left no connection to give."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import NotFound
from engine.pipelines.service import Pipelines
from engine.stores import postgres
from engine.stores.pipeline_store import PostgresPipelineStore


@pytest.mark.parametrize("N", [9, 10])
async def test_concurrent_pipeline_calls_do_not_deadlock_the_pool(database_url: str, N: int) -> None:
    pool = await postgres.connect(database_url)  # the server's pool: max_size 10
    try:
        await postgres.migrate(pool)
        service = Pipelines(PostgresPipelineStore(pool), None, serving=None, datasets=None,  # type: ignore[arg-type]
                            suite_path=None, suites=None, base_model_known=lambda _: True,  # type: ignore[arg-type]
                            check_training=None)  # type: ignore[arg-type]

        async def delete(i: int) -> str:
            with pytest.raises(NotFound):
                await service.delete("p-missing")  # ten clients (or retries) deleting one pipeline
            return "NOT_FOUND"

        try:
            answers = await asyncio.wait_for(asyncio.gather(*(delete(i) for i in range(N))), 30)
        except TimeoutError:
            pytest.fail(f"{N} concurrent DeletePipeline calls still waiting after 30 s: the pool is deadlocked "
                        f"(pool size {pool.get_size()}, idle {pool.get_idle_size()})")
        assert answers == ["NOT_FOUND"] * N
    finally:
        pool.terminate()


@pytest.mark.parametrize("pipelines", [1, 20])
async def test_locked_sections_that_need_another_connection_all_end(database_url: str, pipelines: int) -> None:
    """Twenty locked sections (on one pipeline, or on as many as the pool and more) that each ask the pool for another
    connection, as starting a run does (the job store), all end: waiting for the lock holds none, and the sections
    never hold every connection of the pool."""
    pool = await postgres.connect(database_url)  # max_size 10
    try:
        await postgres.migrate(pool)
        store = PostgresPipelineStore(pool)

        async def section(i: int) -> None:
            pipeline_id = f"p-{i % pipelines}"
            async with store.locked(pipeline_id) as locked:
                assert await locked.decision(pipeline_id, "k") is None  # on the lock's connection
                await asyncio.sleep(0.05)  # every other section starts meanwhile
                async with pool.acquire() as conn:
                    await conn.execute("SELECT 1")

        try:
            await asyncio.wait_for(asyncio.gather(*(section(i) for i in range(20))), 30)
        except TimeoutError:
            pytest.fail(f"locked sections still waiting after 30 s: the pool is deadlocked "
                        f"(pool size {pool.get_size()}, idle {pool.get_idle_size()})")
    finally:
        pool.terminate()
