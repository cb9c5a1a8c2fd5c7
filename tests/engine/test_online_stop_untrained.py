"""StopOnlineSession with examples received and not trained on (fewer than update_every waiting, or a backlog
still in the database): no update will ever train on them. The end says how many, in its message and as an
EXAMPLES_NOT_TRAINED warning, and does not count them as learnt from."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import Cancelled
from engine.jobs.core import Warned
from engine.jobs.ports import StopReason
from engine.online.learner import OnlineLearner
from engine.online.spec import OnlineOutput
from tests.engine.test_online_learner import loaded, rows, session
from tests.engine.test_online_publication import _Registry, _session, _Store


async def _stop(tiny_model_dir: Path, tmp_path: Path, *, sent: int, unread: int) -> tuple[str, list[Warned]]:
    """A session that read ``sent`` examples (update_every 4: one update on the first 4) with ``unread`` more in the
    database, stopped by a client: the end's message and the warnings recorded."""
    learner = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(replay_fraction=0.0))
    learner.add(rows(sent))
    running = _session(learner, tmp_path, OnlineOutput(), _Registry(), store=_Store(unread=unread))
    await running._update(1e-2)
    running.ctx.cancel.cancelled, running.ctx.cancel.reason = True, StopReason.CANCEL
    with pytest.raises(Cancelled) as stopped:
        await running._stop()
    return stopped.value.message, [p for p in running.ctx.recorded if isinstance(p, Warned)]


@pytest.fixture(autouse=True)
def _no_live(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_live(self: object, update: int) -> None:
        pass

    monkeypatch.setattr("engine.online.session.RunningSession._refresh_live", no_live)


async def test_a_stop_says_how_many_examples_were_never_trained_on(tiny_model_dir: Path, tmp_path: Path) -> None:
    message, warned = await _stop(tiny_model_dir, tmp_path, sent=6, unread=3)
    assert message == ("stopped after 1 updates on 4 examples; 5 examples received were not trained on (2 waiting "
                       "for a full update of 4, 3 not read yet)"), message
    codes = [w.code for w in warned]
    assert codes == ["EXAMPLES_NOT_TRAINED"], f"warnings recorded at the stop: {codes}"
    assert warned[0].message.startswith("5 examples received were not trained on"), warned[0].message


async def test_a_stop_with_everything_trained_on_warns_of_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    message, warned = await _stop(tiny_model_dir, tmp_path, sent=4, unread=0)
    assert message == "stopped after 1 updates on 4 examples", message
    assert warned == [], warned
