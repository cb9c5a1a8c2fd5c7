"""What online sessions leave when they end, through gRPC on the tiny model: the live alias keeps serving the
session's publication that passed the gate after StopOnlineSession, after a server restart (LoraControl's
reconciliation leaves it loaded), until an operator moves or removes it; the retention sweep deletes an ended
session's examples after the retention (but the window of a published version) and the live archives nothing
reads any more, and never touches a running session's; an alias whose session's create is still under way (its
controls stored, its job not yet) goes on following it."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from engine.online.serving import UNSTORED_SESSION_SECONDS
from engine.online.spec import AliasState
from engine.stores.online_store import PostgresOnlineStore
from learning.v1 import adapter_pb2 as ad
from learning.v1 import adapter_pb2_grpc as ad_grpc
from learning.v1 import common_pb2 as common
from learning.v1 import lora_control_pb2 as lc
from learning.v1 import online_pb2 as ol
from tests.server.conftest import TINY
from tests.server.lora_helpers import stub, train
from tests.server.test_online import (
    FAST,
    _answer,
    _ended,
    _said,
    _unrouted,
    _updated,
    facts,
    online,
    refused,
    session,
    until,
)


def _spec(start: str, **fields) -> ol.OnlineSessionSpec:
    settings = {"update_every": 5, "publish_every": 0, "learning_rate": 5e-3, "ewc_lambda": 0, "replay_fraction": 0,
                "max_seq_length": 64, **fields}
    return ol.OnlineSessionSpec(start_version=start, **settings)


async def _alias_state(client, name: str, state: int) -> ol.OnlineSession | None:
    found = await session(client, name)
    return found if found.alias_state == state else None


async def _loaded(client) -> set[str]:
    return {a.version for a in (await stub(client).ListLoadedAdapters(lc.ListLoadedAdaptersRequest())).loaded}


@pytest.mark.slow
async def test_the_live_alias_outlives_its_session_and_a_restart_until_an_operator_removes_it(make_pg_server):
    one = await make_pg_server(**FAST)
    start = await train(one)
    sessions = online(one)
    made = (await sessions.CreateOnlineSession(ol.CreateOnlineSessionRequest(
        session_id="kept", spec=_spec(start, live_alias="kept-live")))).session
    assert made.alias_state == ol.LIVE_ALIAS_STATE_FOLLOWING
    await sessions.AddExamples(ol.AddExamplesRequest(name=made.name, examples=facts(10)))
    await until(lambda: _updated(one, made.name, 2))
    await sessions.PublishOnlineSession(ol.PublishOnlineSessionRequest(name=made.name))
    published = f"{start}.1"
    await until(lambda: _answer(one, "kept-live", f"{TINY}@{published}"))  # no gate here: it is followed

    # Another session cannot take the name while this one holds it.
    code, reason, _ = await refused(sessions.CreateOnlineSession(ol.CreateOnlineSessionRequest(
        spec=_spec(start, live_alias="kept-live"))))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ONLINE_ALIAS_IN_USE")

    await sessions.StopOnlineSession(ol.StopOnlineSessionRequest(name=made.name))
    kept = await until(lambda: _alias_state(one, made.name, ol.LIVE_ALIAS_STATE_KEPT))
    assert kept.state == common.JOB_STATE_CANCELLED and kept.alias_version == published
    events = await _said(one, made.name, lambda e: e.notice.code == "LIVE_ALIAS_KEPT")
    notice = events[-1].notice.message
    assert notice.startswith(f"the live alias 'kept-live' keeps serving {published} now that the session has "
                             "ended"), notice
    assert events[-2].state_change.state == common.JOB_STATE_CANCELLED  # said after the end, on its events
    code, reason, _ = await refused(ad_grpc.AdapterServiceStub(one.channel).DeleteAdapter(
        ad.DeleteAdapterRequest(version=published)))  # what it serves is protected, as the active version is
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ADAPTER_PROTECTED")
    router = one.app.owned.lora.gateway.router
    await until(lambda: _unrouted(router, made.live_model))  # the session's own name ends with it ...
    served, _ = await until(lambda: _answer(one, "kept-live", f"{TINY}@{published}"))  # ... its alias does not
    assert served == f"{TINY}@{published}"

    # A restart: LoraControl's reconciliation leaves the version loaded (nothing of LoraControl's serves it), and
    # the new server routes the alias to it from the controls.
    await one.app.stop(5)
    quiet = await make_pg_server(**{**FAST, "online_follow_seconds": 600})  # reconciles; routes no alias yet
    assert published in await _loaded(quiet)
    await quiet.app.stop(5)
    two = await make_pg_server(**FAST)
    served, _ = await until(lambda: _answer(two, "kept-live", f"{TINY}@{published}"))
    assert served == f"{TINY}@{published}"

    # An operator moves it (no gate), then removes it: no longer routed, the version it served unloaded, the name
    # free for another session.
    sessions = online(two)
    assert (await refused(sessions.MoveLiveAlias(ol.MoveLiveAliasRequest(name=made.name, version="latest")))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_VERSION",
        [("version", "must look like vMAJOR.MINOR or vMAJOR.MINOR.PATCH, e.g. v1.2")])
    assert (await refused(sessions.MoveLiveAlias(ol.MoveLiveAliasRequest(name=made.name, version="v9.9"))))[:2] == (
        grpc.StatusCode.NOT_FOUND, "ADAPTER_NOT_FOUND")
    assert (await refused(sessions.RemoveLiveAlias(ol.RemoveLiveAliasRequest(name="kept"))))[:2] == (
        grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_NAME")
    moved = (await sessions.MoveLiveAlias(ol.MoveLiveAliasRequest(name=made.name, version=start))).session
    assert (moved.alias_version, moved.alias_state) == (start, ol.LIVE_ALIAS_STATE_KEPT)
    await until(lambda: _answer(two, "kept-live", f"{TINY}@{start}"))
    await until(lambda: _not_loaded(two, published))  # the version it left, which nothing else serves
    removed = (await sessions.RemoveLiveAlias(ol.RemoveLiveAliasRequest(name=made.name))).session
    assert removed.alias_state == ol.LIVE_ALIAS_STATE_REMOVED
    await until(lambda: _unrouted(two.app.owned.lora.gateway.router, "kept-live"))
    await until(lambda: _not_loaded(two, start))
    for call in (sessions.RemoveLiveAlias(ol.RemoveLiveAliasRequest(name=made.name)),
                 sessions.MoveLiveAlias(ol.MoveLiveAliasRequest(name=made.name, version=start))):
        code, reason, _ = await refused(call)
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ONLINE_NO_LIVE_ALIAS")
    again = (await sessions.CreateOnlineSession(ol.CreateOnlineSessionRequest(
        spec=_spec(start, live_alias="kept-live")))).session
    assert again.alias_state == ol.LIVE_ALIAS_STATE_FOLLOWING
    await sessions.StopOnlineSession(ol.StopOnlineSessionRequest(name=again.name))
    await until(lambda: _ended(two, again.name))


async def _not_loaded(client, version: str) -> bool:
    return version not in await _loaded(client)


async def test_a_session_without_a_publication_that_passed_ends_its_alias_with_a_warning(make_pg_server):
    client = await make_pg_server(**FAST)
    start = await train(client)
    request = ol.CreateOnlineSessionRequest(spec=_spec(start, live_alias="brief-live"), request_id="brief-1")
    made = (await online(client).CreateOnlineSession(request)).session
    retried = (await online(client).CreateOnlineSession(request)).session  # the same request: its session, alias
    assert retried.name == made.name and retried.alias_state == ol.LIVE_ALIAS_STATE_FOLLOWING
    listed = (await online(client).ListOnlineSessions(ol.ListOnlineSessionsRequest())).sessions
    assert [s.name for s in listed] == [made.name]
    await until(lambda: _answer(client, "brief-live", f"{TINY}@{start}"))  # the start version, by default
    await online(client).StopOnlineSession(ol.StopOnlineSessionRequest(name=made.name))
    ended = await until(lambda: _alias_state(client, made.name, ol.LIVE_ALIAS_STATE_ENDED))
    assert ended.alias_version == ""
    events = await _said(client, made.name, lambda e: e.warning.code == "LIVE_ALIAS_ENDED")
    assert events[-1].warning.message == (
        f"the live alias 'brief-live' ended with the session: no publication of it passed the gate (0 published), "
        f"so it served only the start version {start}; it is no longer routed")
    await until(lambda: _unrouted(client.app.owned.lora.gateway.router, "brief-live"))


@pytest.mark.slow
async def test_the_sweep_deletes_ended_sessions_examples_after_the_retention_but_published_windows(
        make_pg_server):
    retention = 8.0  # seconds
    client = await make_pg_server(**FAST, online_retention_days=retention / 86_400, online_sweep_seconds=0.3)
    start = await train(client)
    sessions = online(client)
    store = PostgresOnlineStore(client.app.owned.pool)
    artifacts = client.app.owned.store
    await artifacts.put_bytes("online/live/ghost/000000001-abcdef.tar", b"left by a worker that crashed")
    await artifacts.put_bytes("online/checkpoints/ghost/000000001-abcdef.tar", b"left by a worker that crashed")

    running = (await sessions.CreateOnlineSession(ol.CreateOnlineSessionRequest(
        session_id="running", spec=_spec(start)))).session
    published = (await sessions.CreateOnlineSession(ol.CreateOnlineSessionRequest(
        session_id="published", spec=_spec(start)))).session
    unpublished = (await sessions.CreateOnlineSession(ol.CreateOnlineSessionRequest(
        session_id="unpublished", spec=_spec(start, update_every=100)))).session
    await sessions.AddExamples(ol.AddExamplesRequest(name=running.name, examples=facts(5)))
    await sessions.AddExamples(ol.AddExamplesRequest(name=published.name, examples=facts(10)))
    await sessions.AddExamples(ol.AddExamplesRequest(name=unpublished.name, examples=facts(4)))
    await until(lambda: _updated(client, running.name, 1))
    await until(lambda: _updated(client, published.name, 2))
    await sessions.PublishOnlineSession(ol.PublishOnlineSessionRequest(name=published.name))
    window = (await until(lambda: _publication(client, published.name))).publications[0]
    assert window.last_sequence - window.first_sequence == 9
    await sessions.AddExamples(ol.AddExamplesRequest(name=published.name, examples=facts(3, start=10)))
    await until(lambda: _read(client, published.name, 13))
    for name in (published.name, unpublished.name):
        await sessions.StopOnlineSession(ol.StopOnlineSessionRequest(name=name))
        await until(lambda name=name: _ended(client, name))
    # Nothing of an ended session is deleted before its retention ran out ...
    assert [len(await store.after(s, 0, 100)) for s in ("published", "unpublished")] == [13, 4]

    # ... then its examples are, but the window of its publication, which a job continuing the version reads again.
    async def swept() -> bool:
        return not await store.after("unpublished", 0, 100) and len(await store.after("published", 0, 100)) == 10

    await until(swept, timeout=60)
    left = await store.after("published", 0, 100)
    assert [r.seq for r in left] == list(range(window.first_sequence, window.last_sequence + 1))
    assert len(await store.after("running", 0, 100)) == 5  # a running session's are never touched
    live = await artifacts.list_keys("online/live/")
    assert live and all(k.startswith("online/live/running/") for k in live), live  # the others' and the ghost's go
    checkpoints = await artifacts.list_keys("online/checkpoints/")
    assert all(k.startswith("online/checkpoints/running/") for k in checkpoints), checkpoints  # likewise

    # Once its version is deleted (and nothing descends from it), nothing reads the window any more.
    await ad_grpc.AdapterServiceStub(client.channel).DeleteAdapter(ad.DeleteAdapterRequest(version=window.version))
    await until(lambda: _gone(store, "published"), timeout=60)
    assert len(await store.after("running", 0, 100)) == 5
    await sessions.StopOnlineSession(ol.StopOnlineSessionRequest(name=running.name))
    await until(lambda: _ended(client, running.name))


async def _publication(client, name: str) -> ol.OnlineSession | None:
    found = await session(client, name)
    return found if found.publications else None


async def _read(client, name: str, examples: int) -> ol.OnlineSession | None:
    found = await session(client, name)
    return found if found.stats.total_examples >= examples else None


async def _gone(store: PostgresOnlineStore, session_id: str) -> bool:
    return not await store.after(session_id, 0, 100)


@pytest.mark.slow
async def test_an_alias_whose_session_is_not_stored_yet_follows_it_until_its_controls_are_old(make_pg_server):
    """A create stores a session's controls (taking its alias name) before its job: a serving process looking in
    between finds the alias FOLLOWING a session that does not exist yet, and must leave it (it once ended it, so
    the session's publications never moved it). Controls that never got their job (a server stopped between the
    two) end their alias once they are older than a create can take."""
    client = await make_pg_server(**FAST)
    start = await train(client)
    store = PostgresOnlineStore(client.app.owned.pool)
    await store.create("unstored", 5e-3, base_model=TINY, start_version=start, live_alias="early-live")
    # followed: routed to the start version by a look of the serving loop that found no session
    await until(lambda: _answer(client, "early-live", f"{TINY}@{start}"))
    await asyncio.sleep(1.0)  # ten more looks (0.1 s apart)
    assert (await store.controls("unstored")).alias_state is AliasState.FOLLOWING
    await client.app.owned.pool.execute(
        "UPDATE online_controls SET update_time = now() - make_interval(secs => $1) WHERE session_id = 'unstored'",
        UNSTORED_SESSION_SECONDS + 1)
    await until(lambda: _alias_of(store, "unstored", AliasState.ENDED))
    await until(lambda: _unrouted(client.app.owned.lora.gateway.router, "early-live"))


async def _alias_of(store: PostgresOnlineStore, session_id: str, state: AliasState) -> bool:
    return (await store.controls(session_id)).alias_state is state
