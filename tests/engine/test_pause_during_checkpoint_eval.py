"""A pause that arrives while a periodic checkpoint measures the eval split keeps that checkpoint
(engine.training.recipe)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from engine.domain import Example
from engine.errors import Cancelled
from engine.jobs.ports import CancelToken, StopReason
from engine.training import packing
from engine.training.recipe import run_training
from engine.training.spec import StepMetrics
from tests.engine.test_checkpoints import SETTINGS, Kept, with_checkpoints
from tests.engine.test_training import RecordingSink, make_run

pytestmark = pytest.mark.model


class StopDuringCheckpointEval(RecordingSink):
    """Once step ``step`` is reported, the next eval-mode forward pass (the eval split's loss at that step's
    checkpoint) is where a client's PauseTrainingJob (or CancelTrainingJob) arrives."""

    def __init__(self, step: int, cancel: CancelToken) -> None:
        super().__init__()
        self.step, self.cancel, self.armed = step, cancel, False

    def emit(self, payload) -> None:
        super().emit(payload)
        if isinstance(payload, StepMetrics) and payload.step == self.step:
            self.armed = True


@pytest.mark.parametrize(("reason", "kept_steps"), [(StopReason.PAUSE, [4]), (StopReason.CANCEL, [])])
def test_a_pause_during_a_periodic_checkpoints_eval_keeps_that_steps_checkpoint(
        tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reason: StopReason,
        kept_steps: list[int]) -> None:
    """A periodic checkpoint with an eval split first measures the eval loss; a pause arriving during that
    evaluation raised Cancelled out of ``checkpoint()`` before ``save_state``: the step was never stored and the
    pause (which promises to keep progress) lost every step since the previous checkpoint (here: all of them). The
    step is kept now, without its eval loss; a cancel keeps nothing, as before."""
    cancel = CancelToken()
    sink = StopDuringCheckpointEval(4, cancel)
    for cls in (packing.PackedForward, packing.PaddedForward):
        original = cls.__call__

        def forward(self, model, examples, _original=original):
            if sink.armed and not model.training:
                cancel.cancel(reason)  # the stop arrives while the eval split is measured
            return _original(self, model, examples)

        monkeypatch.setattr(cls, "__call__", forward)
    kept = Kept(tmp_path / "kept")
    held_out = [Example(prompt=f"Held out {i}:", completion=f" answer {i}") for i in range(3)]
    run = replace(with_checkpoints(make_run(tiny_model_dir, tmp_path / "out", **SETTINGS), kept,
                                   tmp_path / "scratch", every_steps=4), eval_examples=held_out)
    with pytest.raises(Cancelled):
        run_training(run, sink, cancel)
    assert cancel.keeps_progress is (reason is StopReason.PAUSE)
    assert [m.step for m in sink.steps] == [1, 2, 3, 4]
    assert kept.steps == kept_steps, f"stopped after step 4 was trained, checkpoints kept: {kept.steps}"

