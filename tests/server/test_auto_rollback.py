"""Auto-rollback rolls back only the version it judged, and only on evidence about both versions."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from engine.lora.auto_rollback import AutoRollback, AutoRollbackConfig
from engine.lora.state import FeedbackCounts
from tests.server.lora_helpers import activate, status, train


class GatedRates:
    """Ratings by version; counting ``hold``'s waits until ``release`` is set."""

    def __init__(self, counts: dict[str, FeedbackCounts], hold: str = "") -> None:
        self.counts_by_version = counts
        self.hold = hold
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def counts(self, base_model: str, version: str, since: datetime) -> FeedbackCounts:
        if version == self.hold:
            self.entered.set()
            await self.release.wait()
        return self.counts_by_version.get(version, FeedbackCounts())


@pytest.mark.slow
async def test_auto_rollback_leaves_a_version_activated_while_it_judged_the_one_before(make_server):
    client = await make_server()
    v10 = await train(client)
    v11 = await train(client, parent=v10)
    v12 = await train(client, parent=v10)
    await activate(client, v10, mark_known_good=True)
    await activate(client, v11)
    controller = client.app.owned.lora.controller
    rates = GatedRates({v10: FeedbackCounts(80, 20), v11: FeedbackCounts(14, 16)}, hold=v11)
    auto = AutoRollback(controller, rates, AutoRollbackConfig(margin=0.1, min_samples=20), controller._store.history)
    check = asyncio.create_task(auto.check_once())
    await rates.entered.wait()  # it has read active=v11 and is counting its ratings
    await activate(client, v12)  # the fix ships meanwhile
    rates.release.set()
    assert await check == ""
    st = await status(client)
    assert st.active_version == v12 and st.last_operation.version == v12, st  # nothing rolled back nor recorded
    rates.hold = ""
    rates.counts_by_version[v12] = FeedbackCounts(14, 16)
    assert "53.3%" in await auto.check_once()  # the version it judges now, it does roll back
    assert (await status(client)).active_version == v10


async def test_auto_rollback_needs_min_samples_ratings_of_the_known_good_too(make_server):
    client = await make_server()
    v10 = await train(client)
    v11 = await train(client, parent=v10)
    await activate(client, v10, mark_known_good=True)
    await activate(client, v11)
    controller = client.app.owned.lora.controller
    # v10 has not served in the window (no ratings); v11: 15% negative over 100 ratings
    rates = GatedRates({v10: FeedbackCounts(0, 0), v11: FeedbackCounts(85, 15)})
    auto = AutoRollback(controller, rates, AutoRollbackConfig(margin=0.1, min_samples=50), controller._store.history)
    assert await auto.check_once() == ""
    rates.counts_by_version[v10] = FeedbackCounts(49, 0)  # one rating short
    assert await auto.check_once() == ""
    rates.counts_by_version[v10] = FeedbackCounts(50, 0)  # 0% over 50 ratings: 15% is above it by more than 10%
    assert "15.0%" in await auto.check_once()
    assert (await status(client)).active_version == v10
