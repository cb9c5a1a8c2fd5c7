"""A session stopped while QUEUED (no worker place for it: here online_max_sessions 0; or handed back by a stopping
worker) ended "cancelled before it ran", also after it had run, and said nothing of the examples it had acknowledged:
a running session's stop counts them (EXAMPLES_NOT_TRAINED), and the docs promise every example stored before the
stop is counted. Now it ends "cancelled while queued" with the same warning and count.

Until then its stats said 0 examples and 0 pending, as if nothing had been sent: now they count the examples stored
and not read yet (unread_examples), in GetOnlineStats, GetOnlineSession, ListOnlineSessions and the CLI's stats."""

from __future__ import annotations

import pytest

from learning.v1 import common_pb2 as common
from learning.v1 import online_pb2 as ol
from tests.cli.test_cli_e2e import cli
from tests.server.lora_helpers import train
from tests.server.test_online import FAST, _watch_until, facts, online, session, until


@pytest.mark.slow
async def test_a_session_stopped_while_queued_counts_the_examples_it_will_not_train_on(make_pg_server) -> None:
    client = await make_pg_server(online_max_sessions=0, **FAST)
    start = await train(client, epochs=1)
    made = (await online(client).CreateOnlineSession(ol.CreateOnlineSessionRequest(session_id="waiting", spec=(
        ol.OnlineSessionSpec(start_version=start, update_every=10, publish_every=0, max_seq_length=64,
                             ewc_lambda=0, replay_fraction=0))))).session
    added = await online(client).AddExamples(ol.AddExamplesRequest(name=made.name, examples=facts(3)))
    assert added.accepted == 3
    stats = (await online(client).GetOnlineStats(ol.GetOnlineStatsRequest(name=made.name))).stats
    assert (stats.unread_examples, stats.total_examples, stats.pending_examples) == (3, 0, 0), stats
    assert (await session(client, made.name)).stats.unread_examples == 3
    listed = (await online(client).ListOnlineSessions(ol.ListOnlineSessionsRequest())).sessions
    assert [(s.name, s.stats.unread_examples) for s in listed] == [(made.name, 3)], listed
    shown = await cli(client.app.port, "online", "stats", "waiting")
    assert shown.out.startswith("0 updates, 0 examples (0 skipped, 0 pending, 3 unread, 0 buffered)"), shown
    await online(client).StopOnlineSession(ol.StopOnlineSessionRequest(name=made.name))

    async def ended() -> ol.OnlineSession | None:
        found = await session(client, made.name)
        return found if found.state == common.JOB_STATE_CANCELLED else None

    await until(ended)
    events = [m.event async for m in _watch_until(client, made.name, lambda e: e.HasField("warning")
                                                  and e.warning.code == "EXAMPLES_NOT_TRAINED")]
    warning = events[-1].warning
    assert "3 examples received were not trained on (0 waiting for a full update of 10, 3 not read yet)" \
        in warning.message, warning.message
    states = [e.state_change.message for e in events if e.HasField("state_change")]
    assert "cancelled while queued" in states, states
