"""The versions online sessions rely on, against real PostgreSQL: besides what the live aliases serve, a session
that has not ended (also one whose job is not stored yet, being created) relies on its start version, which a
worker taking it over loads, and on its latest publication, its next one's parent. Once it ends they are free to
go; an alias it kept still holds its version."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from engine.jobs.core import Job, JobState
from engine.online.spec import ONLINE_SESSION, OnlineOutput, OnlineSessionSpec, Publication
from engine.registry import PublishRequest
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.job_store import PostgresJobStore
from engine.stores.online_store import PostgresOnlineStore
from tests.registry.conftest import TINY, make_peft, make_registry, pool  # noqa: F401 - fixtures


def _job(session_id: str, start: str, *published: str) -> Job[OnlineSessionSpec, OnlineOutput]:
    now = datetime.now(UTC)
    output = OnlineOutput(publications=tuple(Publication(v, i + 1, i + 1, i + 1, now) for i, v in enumerate(published)))
    return Job(id=session_id, kind=ONLINE_SESSION.name, spec=OnlineSessionSpec(TINY, start), output=output,
               state=JobState.RUNNING, create_time=now, last_sequence=0)


async def test_a_running_session_protects_its_start_version_and_latest_publication_until_it_ends(
    make_registry, make_peft, pool, tmp_path: Path  # noqa: F811 - fixtures
) -> None:
    registry = make_registry(LocalArtifactStore(tmp_path / "artifacts"))
    start = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(0)))
    first = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(1), parent=start,
                                                  patch=True))
    latest = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(2), parent=first,
                                                   patch=True))
    store, jobs = PostgresOnlineStore(pool), PostgresJobStore(pool, ONLINE_SESSION)
    await store.create("s1", 1e-3, base_model=TINY, start_version=start.version)  # no live alias
    protected = await store.protected_versions(TINY)  # its job not stored yet: being created
    assert protected == {start.version: "the start version of online session onlineSessions/s1, which has not ended;"
                                        " stop it first"}
    assert await store.routed_versions(TINY) == set()  # nothing routed: LoraControl may unload what it likes

    job = await jobs.insert_job(_job("s1", start.version, first.version, latest.version))
    assert set(await store.protected_versions(TINY)) == {start.version, latest.version}
    assert "latest publication of online session onlineSessions/s1" in (await store.protected_versions(TINY))[
        latest.version]
    assert await store.protected_versions("other-model") == {}

    await jobs.write(replace(job, state=JobState.CANCELLED), [], None)
    assert await store.protected_versions(TINY) == {}


async def test_an_alias_an_ended_session_kept_still_protects_its_version(
    make_registry, make_peft, pool, tmp_path: Path  # noqa: F811 - fixtures
) -> None:
    registry = make_registry(LocalArtifactStore(tmp_path / "artifacts"))
    start = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(0)))
    child = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(1), parent=start,
                                                  patch=True))
    store, jobs = PostgresOnlineStore(pool), PostgresJobStore(pool, ONLINE_SESSION)
    await store.create("s1", 1e-3, base_model=TINY, start_version=start.version, live_alias="live")
    job = await jobs.insert_job(_job("s1", start.version, child.version))
    await store.move_alias("s1", child.version)
    await jobs.write(replace(job, state=JobState.CANCELLED), [], None)
    await store.end_alias("s1")
    assert set(await store.protected_versions(TINY)) == {child.version} == await store.routed_versions(TINY)
    assert "move or remove the alias first" in (await store.protected_versions(TINY))[child.version]


async def test_retention_keeps_a_running_sessions_start_version_though_it_has_no_live_alias(
    make_registry, make_peft, pool, tmp_path: Path  # noqa: F811 - fixtures
) -> None:
    """The registry asks the same question before it prunes or deletes: a running session without a live alias
    keeps its start version, which a worker taking it over loads."""
    sessions = PostgresOnlineStore(pool)
    registry = make_registry(LocalArtifactStore(tmp_path / "artifacts"), aliases=sessions)
    start = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(0)))
    await sessions.create("s1", 1e-3, base_model=TINY, start_version=start.version)  # no live alias
    later = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(1), parent=start,
                                                  patch=True))
    deleted, _ = await registry.prune(TINY, keep=1)
    assert start.version not in deleted and later.version not in deleted, deleted
    assert (await registry.get(TINY, start.version)).version == start.version


async def test_a_session_created_without_a_start_version_holds_none(pool) -> None:  # noqa: F811 - fixture
    """The store takes a session with no start version (a base model's own), which protects nothing: a create
    without one once failed on a query argument it had no placeholder for."""
    store = PostgresOnlineStore(pool)
    await store.create("s0", 1e-3, base_model=TINY)
    assert await store.protected_versions(TINY) == {}
    assert await store.feedback_through("s0") is None
