"""DeleteUserFeedback and a running online session that replays an erased user's examples from its lineage.

docs/online.md: DeleteUserFeedback deletes the examples online sessions made from the user's feedback "so no later
update, replay, publication's data or resumed worker reads them; a running session drops them from the examples
it holds in memory at its next look at its controls". A session started from a version another session published
holds that publication's window in memory as its lineage's data to replay (engine.continual.planner
``_earlier_examples`` -> ``VersionDatasets.of``; ``OnlineLearner.earlier``) for as long as it runs. The erasure
counts on every session that has not ended, not only on the one that made the examples, and a session told reads
its lineage's data again and drops from what it holds what is gone. Against real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from engine.continual.planner import EwcPlanner
from engine.continual.version_data import VersionDatasets
from engine.domain import DatasetSummary, Example, OnlineExamplesSource
from engine.jobs.core import Job, JobState
from engine.online.runner import OnlineRunner, training_spec
from engine.online.session import RunningSession
from engine.online.session_state import OnlineConfig
from engine.online.spec import ONLINE_SESSION, NewExample, OnlineOutput, OnlineSessionSpec
from engine.registry import PublishRequest
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.feedback_store import PostgresFeedbackStore
from engine.stores.job_store import PostgresJobStore
from engine.stores.online_store import PostgresOnlineStore
from engine.training.ports import PlanRequest
from tests.engine.test_online_feedback_window import _Ctx
from tests.engine.test_online_learner import loaded
from tests.registry.conftest import TINY, make_peft, make_registry, pool  # noqa: F401 - fixtures

SECRET_PROMPT = "I live above the bakery on Quay Street, which bus goes to the clinic?"


async def test_a_session_replaying_an_erased_users_examples_is_told(
    pool, make_registry, make_peft, tmp_path: Path  # noqa: F811 - fixtures
) -> None:
    online = PostgresOnlineStore(pool)
    registry = make_registry(LocalArtifactStore(tmp_path / "artifacts"), aliases=online)
    await online.create("made", 1e-4, base_model=TINY)  # learns from u-7's feedback, publishes a version of it
    stored = await online.add_feedback("made", [NewExample(SECRET_PROMPT, "Take the 42.")], [["u-7"]],
                                       since=None, through=datetime.now(UTC))
    assert stored == 1
    window = OnlineExamplesSource("made", 1, await online.last_sequence("made"))
    published = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(0),
                                                      dataset=DatasetSummary(example_count=1, source=window)))

    # A second session starts from that version with replay: its planner loads the version's data to replay
    # (held in OnlineLearner.earlier while the session runs).
    await online.create("replaying", 1e-4, base_model=TINY, start_version=published.version)
    held = (await VersionDatasets(datasets_dir=tmp_path, online=online).of(published)).examples
    assert len(held) == 1 and SECRET_PROMPT in repr(held[0])

    erased = await PostgresFeedbackStore(pool).delete_user("u-7")
    assert erased.online_examples == 1  # the rows are gone from PostgreSQL ...

    # ... but the running session that replays them from memory is never told: its controls, the only thing its
    # loop looks at to forget erased examples, did not change.
    controls = await online.controls("replaying")
    assert controls.erasures > 0, (
        "DeleteUserFeedback deleted u-7's online example, yet the running session started from the version made "
        "of it, which replays it from memory (OnlineLearner.earlier), is not told: every later update replays it")


def _asked(examples: list[Example]) -> list[str]:
    """The user turns of chat examples (an online example with a target is one)."""
    return [e.messages[0].content for e in examples]


class _Sink:
    def __init__(self) -> None:
        self.emitted: list[object] = []

    def emit(self, payload: object) -> None:
        self.emitted.append(payload)


async def test_a_running_session_stops_replaying_an_erased_users_examples(
    pool, make_registry, make_peft, tiny_model_dir: Path, tmp_path: Path  # noqa: F811 - fixtures
) -> None:
    """The running loop of a session replaying another session's publication, told of u-7's erasure at its next look
    at its controls, holds none of u-7's examples to replay any more, and still holds the others'."""
    online = PostgresOnlineStore(pool)
    registry = make_registry(LocalArtifactStore(tmp_path / "artifacts"), aliases=online)
    await online.create("made", 1e-4, base_model=TINY)
    kept = NewExample("Who keeps cove 3?", "Ilsa Varn keeps it.")
    await online.add_feedback("made", [NewExample(SECRET_PROMPT, "Take the 42."), kept], [["u-7"], ["u-8"]],
                              since=None, through=datetime.now(UTC))
    window = OnlineExamplesSource("made", 1, await online.last_sequence("made"))
    published = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(0),
                                                      dataset=DatasetSummary(example_count=2, source=window)))

    # The replaying session as a worker runs it: its job claimed, its learner prepared as OnlineRunner.run does.
    spec = OnlineSessionSpec(TINY, published.version, ewc_lambda=0.0, replay_fraction=0.5, max_seq_length=48)
    await online.create("replaying", 1e-4, base_model=TINY, start_version=published.version)
    jobs: PostgresJobStore = PostgresJobStore(pool, ONLINE_SESSION)
    await jobs.insert_job(Job(id="replaying", kind=ONLINE_SESSION.name, spec=spec, output=OnlineOutput(),
                              state=JobState.RUNNING, create_time=datetime.now(UTC)))
    claim = await jobs.claim("replaying", "worker-1")
    assert claim is not None
    ctx = _Ctx(jobs, claim, tmp_path / "w1")
    ctx.cancel = SimpleNamespace(cancelled=False)  # type: ignore[attr-defined]
    planner = EwcPlanner(registry=registry, snapshots=None,  # type: ignore[arg-type]  # no EWC: no Fisher
                         versions=VersionDatasets(datasets_dir=tmp_path, online=online))
    runner = OnlineRunner(store=online, registry=registry, preparer=None, planner=planner,  # type: ignore[arg-type]
                          artifacts=None, config=OnlineConfig(poll_seconds=0.05))  # type: ignore[arg-type]
    request = PlanRequest(spec=training_spec(spec, published, 4), parent=published, parent_dir=tmp_path,
                          model_dir=tiny_model_dir, examples=[], model=loaded(tiny_model_dir, tmp_path),
                          in_worker=ctx.in_worker, sink=_Sink(), cancel=ctx.cancel)  # type: ignore[attr-defined]
    erasures = (await online.controls("replaying")).erasures
    learner = await runner._prepare(ctx, request)  # type: ignore[arg-type]
    assert sorted(_asked(learner.earlier)) == sorted([SECRET_PROMPT, kept.prompt])
    session = RunningSession(runner._parts, ctx, learner, published, erasures=erasures,  # type: ignore[arg-type]
                       lineage=functools.partial(runner._replay_pool, request))
    loop = asyncio.create_task(session.loop())
    try:
        await asyncio.sleep(0.3)  # a few looks at its controls: nothing to drop yet
        assert not [p for p in ctx.recorded if getattr(p, "code", "") == "EXAMPLES_ERASED"]
        assert (await PostgresFeedbackStore(pool).delete_user("u-7")).online_examples == 1
        for _ in range(100):
            erased = [p.message for p in ctx.recorded if getattr(p, "code", "") == "EXAMPLES_ERASED"]
            if erased:
                break
            await asyncio.sleep(0.05)
    finally:
        loop.cancel()
    assert erased and erased[0].startswith("dropped 1 of the examples held in memory"), ctx.recorded
    assert _asked(learner.earlier) == [kept.prompt], (
        "the session still replays u-7's example from its lineage after DeleteUserFeedback")


async def test_an_erasure_tells_the_sessions_that_have_not_ended_and_only_when_it_deleted_something(
    pool,  # noqa: F811 - a fixture
) -> None:
    online = PostgresOnlineStore(pool)
    jobs: PostgresJobStore = PostgresJobStore(pool, ONLINE_SESSION)
    for name, state in (("running", JobState.RUNNING), ("paused", JobState.PAUSED), ("ended", JobState.CANCELLED)):
        await online.create(name, 1e-4, base_model=TINY)
        await jobs.insert_job(Job(id=name, kind=ONLINE_SESSION.name, spec=OnlineSessionSpec(TINY, "v1.0"),
                                  output=OnlineOutput(), state=state, create_time=datetime.now(UTC)))
    await online.create("creating", 1e-4, base_model=TINY)  # its job not stored yet
    await pool.execute("UPDATE jobs SET state = $2 WHERE id = $1", "ended", JobState.RUNNING.value)
    await online.add("ended", [NewExample(SECRET_PROMPT, "Take the 42.")], users=[["u-7"]])  # before it ended
    await pool.execute("UPDATE jobs SET state = $2 WHERE id = $1", "ended", JobState.CANCELLED.value)
    feedback = PostgresFeedbackStore(pool)

    async def counts() -> dict[str, int]:
        controls = await online.controls_of(["running", "paused", "ended", "creating"])
        return {s: c.erasures for s, c in controls.items()}

    assert (await feedback.delete_user("u-0")).online_examples == 0  # nothing of theirs anywhere
    assert await counts() == {"running": 0, "paused": 0, "ended": 0, "creating": 0}
    assert (await feedback.delete_user("u-7")).online_examples == 1  # the ended session's example
    assert await counts() == {"running": 1, "paused": 1, "ended": 0, "creating": 1}
