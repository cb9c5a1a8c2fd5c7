"""A pause that arrives after the last optimiser step, while the run measures base retention or runs its final
evaluations, leaves a checkpoint of that last step: the resumed run goes straight to the final phases instead of
training every step again."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from engine.errors import Cancelled
from engine.jobs.core import Noticed
from engine.jobs.ports import CancelToken, StopReason
from engine.training.recipe import run_training
from engine.training.spec import EvalReported
from tests.engine.test_checkpoints import SETTINGS, Kept, with_checkpoints
from tests.engine.test_training import RecordingSink, make_run

pytestmark = pytest.mark.model


class PausedWhileProbing:
    """A base-retention probe during which the client pauses the job: it stops at its next batch, as
    engine.continual.base_knowledge.GreedyAnswers does."""

    def measure(self, model, tokenizer, plan, *, base_model_dir, quantization, step, sink, cancel):
        cancel.cancel(StopReason.PAUSE)  # PauseTrainingJob arrives while the probe generates
        if cancel.cancelled:
            raise Cancelled("JOB_CANCELLED", "stopped while measuring base retention")
        return None


class PauseAtTrainEnd(RecordingSink):
    """Pauses the run (as a client's PauseTrainingJob does) once it reports its train_end evaluation, before the
    eval split's."""

    def __init__(self, cancel: CancelToken) -> None:
        super().__init__()
        self._cancel = cancel

    def emit(self, payload) -> None:
        super().emit(payload)
        if isinstance(payload, EvalReported) and payload.split == "train_end":
            self._cancel.cancel(StopReason.PAUSE)


def test_a_pause_during_the_base_retention_probe_keeps_the_last_steps_checkpoint(tiny_model_dir: Path,
                                                                                 tmp_path: Path) -> None:
    kept = Kept(tmp_path / "kept")
    cancel = CancelToken()
    sink = RecordingSink()
    run = with_checkpoints(make_run(tiny_model_dir, tmp_path / "out", **SETTINGS), kept, tmp_path / "scratch")
    with pytest.raises(Cancelled):
        run_training(replace(run, probe=PausedWhileProbing()), sink, cancel)
    assert [m.step for m in sink.steps] == list(range(1, 13))
    assert cancel.keeps_progress
    assert kept.steps == [12], f"paused after all 12 steps were trained, checkpoints kept: {kept.steps}"

    resumed = RecordingSink()
    again = with_checkpoints(make_run(tiny_model_dir, tmp_path / "again", **SETTINGS), kept, tmp_path / "scratch",
                             resume_from=kept.root / "12")
    result = run_training(again, resumed, CancelToken())
    assert [e.code for e in resumed.events if isinstance(e, Noticed)][0] == "RESUMED"
    assert resumed.steps == [] and result.steps == 12
    assert [e.split for e in resumed.events if isinstance(e, EvalReported)] == ["train_end"]


def test_a_pause_during_the_final_evaluations_keeps_the_last_steps_checkpoint(tiny_model_dir: Path,
                                                                              tmp_path: Path) -> None:
    kept = Kept(tmp_path / "kept")
    cancel = CancelToken()
    sink = PauseAtTrainEnd(cancel)
    run = make_run(tiny_model_dir, tmp_path / "out", **SETTINGS)
    held_out, trained = run.examples[:2], run.examples[2:]
    run = replace(with_checkpoints(run, kept, tmp_path / "scratch"), examples=trained, eval_examples=held_out)
    with pytest.raises(Cancelled):
        run_training(run, sink, cancel)
    last = sink.steps[-1].step
    assert last == sink.steps[-1].total_steps
    assert kept.steps == [last], f"paused after all {last} steps were trained, checkpoints kept: {kept.steps}"
