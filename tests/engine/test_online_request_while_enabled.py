"""ForceUpdate's check that learning is enabled and its request are one write (``PostgresOnlineStore.request`` with
``while_enabled``): before, the service read the controls, then added the request, and a disable committed between
the two left a request the runner never acts on (it updates only an enabled session) while the caller was told
"requested". Here the store's answer says whether it was requested, with the controls it was judged on; a publish
request is taken whether learning is enabled or not."""

from __future__ import annotations

import asyncpg
import pytest

from engine.errors import NotFound
from engine.stores.online_store import PostgresOnlineStore
from engine.stores.postgres import migrate


async def test_a_request_while_enabled_is_taken_only_while_learning_is_enabled(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await migrate(pool)
        store = PostgresOnlineStore(pool)
        await store.create("while-enabled", 1e-4)
        await store.set("while-enabled", enabled=False, disabled_reason="audit")

        controls, requested = await store.request("while-enabled", "force_updates", while_enabled=True)
        assert not requested and controls.force_updates == 0 and controls.disabled_reason == "audit"
        assert (await store.controls("while-enabled")).force_updates == 0

        controls, requested = await store.request("while-enabled", "publish_requests")
        assert requested and controls.publish_requests == 1  # publishing does not need learning on

        await store.set("while-enabled", enabled=True, disabled_reason="")
        controls, requested = await store.request("while-enabled", "force_updates", while_enabled=True)
        assert requested and controls.force_updates == 1 and controls.enabled
        assert (await store.controls("while-enabled")).force_updates == 1

        with pytest.raises(NotFound):
            await store.request("no-such-session", "force_updates", while_enabled=True)
    finally:
        await pool.close()
