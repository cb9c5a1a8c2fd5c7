"""A session publishes between checkpoints (PublishOnlineSession), then its worker dies and another takes it over
from the older checkpoint (docs/online.md, "Publication and the gate": windows follow on from each other, so no
example counts twice). The worker that takes it over knows from the session's publications what they claimed: its
next window starts after the last one, a publication with nothing new since it is skipped, and one at an update
the last publication is at or past (the checkpoint's older weights, which would be published as its child) too."""

from __future__ import annotations

from pathlib import Path

from engine.jobs.core import Noticed
from engine.online.learner import OnlineLearner
from engine.online.session import RunningSession
from engine.online.spec import OnlineOutput, Publication
from tests.engine.test_online_learner import loaded, rows, session
from tests.engine.test_online_publication import _by_seq, _Registry, _session, _windows

SENT = rows(12)


async def _taken_over(tiny_model_dir: Path, tmp_path: Path) -> tuple[OnlineLearner, tuple[Publication, ...]]:
    """Update 1 on examples 1..4 (checkpointed), update 2 on 5..8, a client's publication at update 2 (window
    1..8), and the worker dies: a learner restored from the checkpoint of update 1, and the publications."""
    before = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(replay_fraction=0.0))
    before.add(SENT[:4])
    before.update(1e-2)
    checkpoint = before.state()
    before.add(SENT[4:8])
    before.update(1e-2)
    first = _Registry()
    dead = _session(before, tmp_path / "one", OnlineOutput(), first)
    await dead._publish()
    assert _windows(first) == [(1, 8)], "the first publication claims what updates 1 and 2 trained on"
    resumed = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(replay_fraction=0.0))
    resumed.restore(checkpoint, _by_seq(SENT, checkpoint["buffer"]), _by_seq(SENT, checkpoint["pending"]))
    return resumed, dead.ctx.job.output.publications


def _skips(running: RunningSession) -> list[str]:
    return [p.message for p in running.ctx.recorded if isinstance(p, Noticed) and p.code == "PUBLISH_SKIPPED"]


async def test_the_next_window_after_a_takeover_starts_after_the_last_publications(tiny_model_dir: Path,
                                                                                  tmp_path: Path) -> None:
    learner, publications = await _taken_over(tiny_model_dir, tmp_path)
    learner.add(SENT[4:12])
    registry = _Registry()
    running = _session(learner, tmp_path / "two", OnlineOutput(publications=publications), registry)
    learner.update(1e-2)  # update 2 again, on 5..8 (no publication is asked at this update any more)
    learner.update(1e-2)  # update 3, on 9..12
    await running._publish()  # publish_every, or another PublishOnlineSession
    assert _windows(registry) == [(9, 12)], (
        f"the publication after the takeover claims {_windows(registry)}: examples 1..8 are v1.0.1's window already, "
        "so they would count twice")


async def test_a_publication_asked_right_after_a_takeover_publishes_nothing_and_says_why(tiny_model_dir: Path,
                                                                                         tmp_path: Path) -> None:
    learner, publications = await _taken_over(tiny_model_dir, tmp_path)
    registry = _Registry()
    running = _session(learner, tmp_path / "two", OnlineOutput(publications=publications), registry)
    assert learner.updates == 1
    await running._publish()  # PublishOnlineSession before the resumed worker got back to update 2
    assert registry.published == [], (
        "the checkpoint's weights of update 1 were published as a child of v1.0.1, the weights of update 2")
    assert running.ctx.job.output.publications == publications
    said = _skips(running)
    assert len(said) == 1 and "v1.0.1 was published at update 2" in said[0], said


async def test_a_publication_with_nothing_trained_on_since_the_last_one_is_skipped(tiny_model_dir: Path,
                                                                                   tmp_path: Path) -> None:
    learner, publications = await _taken_over(tiny_model_dir, tmp_path)
    registry = _Registry()
    running = _session(learner, tmp_path / "two", OnlineOutput(publications=publications), registry)
    for part in (SENT[4:6], SENT[6:8]):  # two forced updates: 2 on 5..6, 3 on 7..8
        learner.add(part)
        learner.update(1e-2)
    assert learner.updates == 3
    await running._publish()
    assert registry.published == [], f"a publication claimed {_windows(registry)}, all of them v1.0.1's already"
    said = _skips(running)
    assert len(said) == 1 and "no example was trained on since v1.0.1" in said[0], said
