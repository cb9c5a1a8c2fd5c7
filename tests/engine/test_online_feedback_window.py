"""An online session's windows of feedback, against real PostgreSQL (the online, job and feedback stores, the
feedback dataset builder): a window's feedback becomes examples once. Its examples and its end (the session's
watermark) are stored in one transaction, so a worker that dies after storing them, before it stores its job,
leaves the window read, and the worker that takes the session over from its job goes on after it, never making the
same feedback into examples (trained on) a second time. The job still shows how far it got, from the store."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.errors import NotFound, Unavailable
from engine.feedback.dataset import FeedbackDatasetBuilder
from engine.feedback.events import FeedbackKind
from engine.feedback.ingest import FeedbackBases, FeedbackIngestor
from engine.feedback.scrub import Scrubber
from engine.jobs.core import Job, JobState
from engine.jobs.ports import Claim
from engine.online.session import RunningSession
from engine.online.session_state import OnlineConfig, SessionParts
from engine.online.spec import ONLINE_SESSION, NewExample, OnlineOutput, OnlineSessionSpec, live_model
from engine.registry import PublishRequest
from engine.stores import postgres
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.feedback_store import PostgresFeedbackStore
from engine.stores.job_store import PostgresJobStore
from engine.stores.online_store import PostgresOnlineStore
from tests.conftest import create_database
from tests.feedback.conftest import event
from tests.registry.conftest import TINY, make_peft, make_registry, pool  # noqa: F401 - fixtures

SESSION = "s1"


@pytest.fixture
async def start_version(make_registry, make_peft, tmp_path: Path) -> str:  # noqa: F811 - fixtures
    """A published version to start sessions from, in ``pool``'s database."""
    return await _publish(make_registry(LocalArtifactStore(tmp_path / "artifacts")), make_peft)


async def _publish(registry, make_peft) -> str:  # noqa: F811 - a fixture's value
    return (await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(0)))).version


class _Ctx:
    """The job context of a session as RunningSession uses it to read feedback: the job as a worker claimed it from the
    job store, stored back there on persist (under the worker's lease). ``failing`` persists raise first, as one
    does when the database goes away or the worker dies before its job is stored."""

    def __init__(self, jobs: PostgresJobStore, claim: Claim, work_dir: Path, failing: int = 0) -> None:
        self.jobs = jobs
        self.job = claim.job
        self.lease = claim.lease
        self.work_dir = work_dir
        self.lease_token = claim.lease.token
        self.failing = failing
        self.recorded: list[object] = []

    def set_output(self, output: OnlineOutput) -> None:
        self.job = replace(self.job, output=output)

    def record(self, payload: object) -> None:
        self.recorded.append(payload)

    async def persist(self) -> None:
        if self.failing:
            self.failing -= 1
            raise Unavailable("DATABASE_UNAVAILABLE", "the connection to PostgreSQL was lost")
        await self.jobs.write(self.job, [], self.lease)

    async def in_worker(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)


class _World:
    """One session learning from feedback (SFT) on real stores."""

    def __init__(self, pool, tmp_path: Path, start_version: str) -> None:  # noqa: F811 - a fixture's value
        self.start_version = start_version
        self.online = PostgresOnlineStore(pool)
        self.jobs: PostgresJobStore = PostgresJobStore(pool, ONLINE_SESSION)
        feedback = PostgresFeedbackStore(pool)
        self.ingestor = FeedbackIngestor(feedback, Scrubber(), bases=FeedbackBases(TINY))
        self.parts = SessionParts(store=self.online, registry=None, artifacts=None,  # type: ignore[arg-type]
                            config=OnlineConfig(), feedback=FeedbackDatasetBuilder(feedback), rates=None)
        self.tmp_path = tmp_path
        self.workers = 0

    async def start(self, output: OnlineOutput | None = None) -> None:
        await self.online.create(SESSION, 1e-4, base_model=TINY, start_version=self.start_version)
        spec = OnlineSessionSpec(TINY, self.start_version, learn_from_feedback=True)
        await self.jobs.insert_job(Job(id=SESSION, kind=ONLINE_SESSION.name, spec=spec, output=output or OnlineOutput(),
                                       state=JobState.RUNNING, create_time=datetime.now(UTC) - timedelta(hours=2)))

    async def worker(self, *, failing: int = 0) -> RunningSession:
        """A worker taking the session (over) from its job as stored."""
        self.workers += 1
        claim = await self.jobs.claim(SESSION, f"worker-{self.workers}")
        assert claim is not None
        ctx = _Ctx(self.jobs, claim, self.tmp_path / f"w{self.workers}", failing)
        learner = SimpleNamespace(updates=0)  # reading feedback does not touch the model
        return RunningSession(self.parts, ctx, learner, SimpleNamespace(version=self.start_version))  # type: ignore[arg-type]

    async def feedback(self, *events) -> None:
        for e in events:
            assert not e.adapter_version
        await self.ingestor.submit([replace(e, adapter_version=live_model(TINY, SESSION)) for e in events])

    async def examples(self) -> list[tuple[str, str]]:
        return [(r.prompt, r.target) for r in await self.online.after(SESSION, 0, 100)]


FIRST = [
    event("up", FeedbackKind.THUMBS_UP, prompt="Capital of Veloria?", response="Marnesse."),
    event("fix", FeedbackKind.CORRECTION, prompt="Capital of Quorvia?", response="Oskerholm.", correction="Talameth.",
          user="u2"),
    event("down", FeedbackKind.THUMBS_DOWN, prompt="Capital of Brinmark?", response="No idea."),  # SFT drops it
]
TAKEN = [("Capital of Veloria?", "Marnesse."), ("Capital of Quorvia?", "Talameth.")]


async def test_a_worker_that_dies_before_storing_its_job_leaves_the_window_read(
    pool, start_version: str, tmp_path: Path  # noqa: F811 - fixtures
) -> None:
    world = _World(pool, tmp_path, start_version)
    await world.start()
    await world.feedback(*(replace(e, time=datetime.now(UTC) - timedelta(hours=1)) for e in FIRST))
    dying = await world.worker(failing=1)
    with pytest.raises(Unavailable):
        await dying._take_feedback()  # the examples are stored, then storing the job fails: the worker is gone
    assert await world.examples() == TAKEN
    read_to = dying.ctx.job.output.feedback_through
    assert read_to is not None

    # Feedback timed after that window, sent while nobody held the session.
    await world.feedback(replace(event("late", FeedbackKind.THUMBS_UP, prompt="Capital of Dunmoor?",
                                       response="Pellacre."), time=read_to + timedelta(milliseconds=1)))
    taking_over = await world.worker()
    assert taking_over.ctx.job.output.feedback_through is None  # its job never said the window was read
    await taking_over._take_feedback()
    # The window the dead worker read is not read again: its feedback is in the examples once; the later one joins.
    assert await world.examples() == [*TAKEN, ("Capital of Dunmoor?", "Pellacre.")]
    notices = [p.message for p in taking_over.ctx.recorded]  # type: ignore[attr-defined]
    assert len(notices) == 1 and notices[0].startswith(f"1 examples from the feedback on {TINY}@{SESSION}"), notices

    # The job shows how far the session got, as the store has it.
    stored = await world.jobs.get_job(SESSION)
    assert stored is not None and stored.output.feedback_through is not None
    assert stored.output.feedback_through == await world.online.feedback_through(SESSION)
    assert stored.output.feedback_through > read_to


async def test_a_job_later_than_the_store_is_read_on_from(
    pool, start_version: str, tmp_path: Path  # noqa: F811 - fixtures
) -> None:
    """A session a worker of an earlier server version read feedback for after migration 0026 copied its job's
    watermark: the job's is later, and what it read (stored as examples then) is not read again."""
    world = _World(pool, tmp_path, start_version)
    before = datetime.now(UTC) - timedelta(minutes=30)
    await world.start(OnlineOutput(feedback_through=before))
    await world.feedback(*(replace(e, time=before - timedelta(minutes=5)) for e in FIRST))  # read by that worker
    await world.feedback(replace(event("late", FeedbackKind.THUMBS_UP, prompt="Capital of Dunmoor?",
                                       response="Pellacre."), time=before + timedelta(minutes=5)))
    assert await world.online.feedback_through(SESSION) is None
    session = await world.worker()
    await session._take_feedback()
    assert await world.examples() == [("Capital of Dunmoor?", "Pellacre.")]
    assert await world.online.feedback_through(SESSION) == session.ctx.job.output.feedback_through > before


async def test_the_watermark_moves_with_the_examples_and_only_from_where_the_writer_read_it(
    pool, start_version: str  # noqa: F811 - fixtures
) -> None:
    """Two workers reading the same window (one lost the session and has not noticed yet) store it once: the
    store moves the watermark only from where the writer found it, with the examples, in one transaction."""
    store = PostgresOnlineStore(pool)
    await store.create(SESSION, 1e-4, base_model=TINY, start_version=start_version)
    assert await store.feedback_through(SESSION) is None
    one, two = datetime.now(UTC) - timedelta(minutes=2), datetime.now(UTC) - timedelta(minutes=1)
    rows = [NewExample("Capital of Veloria?", "Marnesse."), NewExample("Capital of Quorvia?", "Talameth.")]
    done = await asyncio.gather(*(store.add_feedback(SESSION, rows, [{"u1"}, {"u2"}], since=None, through=one)
                                  for _ in range(2)))
    assert sorted(done, key=str) == [2, None]  # one stored both rows, the other nothing
    assert [r.prompt for r in await store.after(SESSION, 0, 10)] == ["Capital of Veloria?", "Capital of Quorvia?"]
    assert await store.feedback_through(SESSION) == one
    # A window with nothing in it moves the watermark too; one read from an earlier watermark stores nothing.
    assert await store.add_feedback(SESSION, [], [], since=one, through=two) == 0
    assert await store.add_feedback(SESSION, rows[:1], [{"u1"}], since=one, through=datetime.now(UTC)) is None
    assert await store.feedback_through(SESSION) == two
    assert len(await store.after(SESSION, 0, 10)) == 2
    # The examples carry their users (DeleteUserFeedback deletes them by user), as those ``add`` stores.
    assert await pool.fetchval("SELECT users FROM online_examples WHERE session_id = $1 ORDER BY seq DESC LIMIT 1",
                               SESSION) == ["u2"]
    with pytest.raises(NotFound) as missing:
        await store.feedback_through("nobody")
    assert missing.value.reason == "ONLINE_SESSION_NOT_FOUND"


async def test_migration_0026_takes_each_sessions_watermark_from_its_job(
    pg_admin_url: str, make_registry, make_peft, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """A database migrated before 0026 with two sessions, one whose job had read feedback: the migration copies its
    watermark to the store."""
    files = postgres._migration_files()
    # every migration but 0026 (the registry's later ones too, which publishing the start version needs)
    monkeypatch.setattr(postgres, "_migration_files", lambda: [f for f in files if f[0] != 26])
    pool = await postgres.connect(await create_database(pg_admin_url), max_size=4)  # noqa: F811 - not the fixture
    try:
        await postgres.migrate(pool)
        start = await _publish(make_registry(LocalArtifactStore(tmp_path / "artifacts"), db_pool=pool), make_peft)
        store, jobs = PostgresOnlineStore(pool), PostgresJobStore(pool, ONLINE_SESSION)
        read_to = datetime.now(UTC) - timedelta(minutes=3)
        for session_id, through in (("read", read_to), ("unread", None)):
            await store.create(session_id, 1e-4, base_model=TINY, start_version=start)
            await jobs.insert_job(Job(id=session_id, kind=ONLINE_SESSION.name,
                                      spec=OnlineSessionSpec(TINY, start, learn_from_feedback=True),
                                      output=OnlineOutput(feedback_through=through), state=JobState.RUNNING,
                                      create_time=datetime.now(UTC)))
        monkeypatch.undo()
        applied = await postgres.migrate(pool)
        assert [n for n in applied if n.startswith("0026_")] == ["0026_online_feedback_through.sql"]
        assert await store.feedback_through("read") == read_to
        assert await store.feedback_through("unread") is None
    finally:
        await pool.close()
