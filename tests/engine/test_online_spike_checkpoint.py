"""A negative-feedback spike puts the live model back to the start version's weights (docs/online.md: "puts the
live model back to the start version's weights ... EnableOnlineLearning goes on from there"). The worker that
takes the session over next, after this one stops (shutdown, pause, StopOnlineSession) or crashes, must resume
those weights, not the ones users rated down: the spike stores a checkpoint of them at once, and a stop after it
stores none older."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import Cancelled
from engine.jobs.ports import StopReason
from engine.online.learner import OnlineLearner
from engine.online.session import RunningSession
from engine.online.spec import OnlineOutput
from tests.engine.test_online_learner import loaded, rows, same, session, weights
from tests.engine.test_online_publication import _Archive, _Controls, _Rates, _Registry, _session


async def _spiked(tiny_model_dir: Path, tmp_path: Path) -> tuple[RunningSession, _Archive, list]:
    """A session whose update 1 was checkpointed, then a negative-feedback spike: the session, its archive and the
    start version's weights."""
    learner = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(replay_fraction=0.0))
    start = weights(learner)
    learner.add(rows(4))
    running = _session(learner, tmp_path, OnlineOutput(), _Registry(), store=_Controls(), rates=_Rates())
    running.ctx.job.spec = session(replay_fraction=0.0, checkpoint_every=1)

    async def no_live(update: int) -> None:
        pass

    running._refresh_live = no_live  # type: ignore[method-assign]
    await running._update(1e-1)  # update 1, checkpointed (checkpoint_every 1 here)
    archive = running.checkpoint_archive
    assert isinstance(archive, _Archive) and len(archive.saved) == 1
    assert not same(archive.saved[0], start), "update 1 changed nothing: the test shows nothing"
    assert await running._feedback_spike(), "the ratings make a spike"
    assert same(weights(learner), start), "the spike did not put the start weights back"
    return running, archive, start


async def test_a_feedback_spike_checkpoints_the_weights_it_put_back(tiny_model_dir: Path, tmp_path: Path) -> None:
    running, archive, start = await _spiked(tiny_model_dir, tmp_path)
    assert len(archive.saved) == 2, "the spike stored no checkpoint: a crash now resumes update 1's weights"
    assert same(archive.saved[-1], start), "the spike's checkpoint holds other weights than the start version's"
    newest = running.ctx.job.output.checkpoints[0]
    assert newest.key == "k2", f"the job resumes from {newest.key}, not from the spike's checkpoint"


@pytest.mark.parametrize("reason", [StopReason.SHUTDOWN, StopReason.PAUSE, StopReason.CANCEL])
async def test_a_stop_after_a_feedback_spike_leaves_the_weights_put_back_to_resume(
    tiny_model_dir: Path, tmp_path: Path, reason: StopReason
) -> None:
    running, archive, start = await _spiked(tiny_model_dir, tmp_path)
    running.ctx.cancel.cancelled, running.ctx.cancel.reason = True, reason
    with pytest.raises(Cancelled):
        await running._stop()
    newest = running.ctx.job.output.checkpoints[0]
    assert same(archive.saved[int(newest.key[1:]) - 1], start), (
        f"the newest checkpoint ({newest.key}) holds update 1's weights: the next worker resumes the weights users "
        "rated down")
