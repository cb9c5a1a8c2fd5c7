"""Checkpoints in the recipe: a run paused at a step and resumed from its checkpoint continues the very loss
trajectory of an uninterrupted run (dropout on, mid-epoch, warmup and decay); checkpoints come at the policy's
steps; a checkpoint that cannot be stored fails that checkpoint, not the run; one taken on other examples is
not resumed from."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.domain import Example
from engine.errors import Cancelled, Unavailable
from engine.jobs.core import Noticed, Warned
from engine.jobs.ports import CancelToken, StopReason
from engine.training.recipe import run_training
from engine.training.run import TrainingRun
from engine.training.run_state import Checkpointing
from engine.training.spec import EvalReported
from tests.engine.test_training import RecordingSink, examples, make_run

pytestmark = pytest.mark.model

# Three optimiser steps per epoch (5 examples, batches of 2), so a pause at step 4 is inside an epoch; dropout
# draws from torch's RNG, which the checkpoint must carry; warmup and linear decay, which the scheduler's does.
SETTINGS = {"epochs": 4, "batch_size": 2, "warmup_steps": 2, "learning_rate": 2e-2}


class Kept:
    """A ``save`` that keeps each checkpoint directory it is handed, by step."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.steps: list[int] = []
        self.eval_losses: list[float | None] = []

    def __call__(self, step: int, state_dir: Path, loss: float, eval_loss: float | None = None) -> None:
        shutil.copytree(state_dir, self.root / str(step))
        self.steps.append(step)
        self.eval_losses.append(eval_loss)


def with_checkpoints(run: TrainingRun, save, scratch: Path, *, every_steps: int = 0,
                     resume_from: Path | None = None) -> TrainingRun:
    dropout = replace(run.spec, lora=replace(run.spec.lora, dropout=0.1))
    return replace(run, spec=dropout, checkpointing=Checkpointing(
        every_steps=every_steps, every_seconds=0, scratch_dir=scratch, save=save, resume_from=resume_from))


class PauseAt(RecordingSink):
    """Pauses the run (as a client's PauseTrainingJob does) once it reports ``step``."""

    def __init__(self, step: int, cancel: CancelToken) -> None:
        super().__init__()
        self._step, self._cancel = step, cancel

    def emit(self, payload) -> None:
        super().emit(payload)
        if getattr(payload, "step", None) == self._step and not isinstance(payload, Noticed):
            self._cancel.cancel(StopReason.PAUSE)


def test_a_resumed_run_continues_the_uninterrupted_loss_trajectory(tiny_model_dir: Path, tmp_path: Path) -> None:
    kept = Kept(tmp_path / "kept")
    whole = RecordingSink()
    run = with_checkpoints(make_run(tiny_model_dir, tmp_path / "whole", **SETTINGS), kept, tmp_path / "scratch")
    run_training(run, whole, CancelToken())

    cancel = CancelToken()
    paused = PauseAt(4, cancel)
    first = with_checkpoints(make_run(tiny_model_dir, tmp_path / "first", **SETTINGS), kept, tmp_path / "scratch")
    with pytest.raises(Cancelled):
        run_training(first, paused, cancel)
    assert [m.step for m in paused.steps] == [1, 2, 3, 4] and kept.steps == [4]
    assert not (tmp_path / "first").exists() and list((tmp_path / "scratch").iterdir()) == []

    resumed = RecordingSink()
    second = with_checkpoints(make_run(tiny_model_dir, tmp_path / "second", **SETTINGS), kept,
                              tmp_path / "scratch", resume_from=kept.root / "4")
    run_training(second, resumed, CancelToken())
    assert [e for e in resumed.events if isinstance(e, Noticed)][0].code == "RESUMED"
    assert [m.step for m in resumed.steps] == list(range(5, 13))
    expected = {m.step: m for m in whole.steps}
    for got in paused.steps + resumed.steps:
        assert got.loss == pytest.approx(expected[got.step].loss, abs=1e-5), got.step
        assert got.learning_rate == pytest.approx(expected[got.step].learning_rate, abs=1e-12), got.step
    a = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "second" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_checkpoints_come_at_the_policy_steps_and_a_failed_one_does_not_fail_the_run(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    kept = Kept(tmp_path / "kept")
    attempts: list[int] = []

    def flaky(step: int, state_dir: Path, loss: float, eval_loss: float | None) -> None:
        attempts.append(step)
        if step == 4:
            raise Unavailable("ARTIFACT_STORE_UNAVAILABLE", "the store is down")
        kept(step, state_dir, loss, eval_loss)

    sink = RecordingSink()
    run = with_checkpoints(make_run(tiny_model_dir, tmp_path / "out", **SETTINGS), flaky, tmp_path / "scratch",
                           every_steps=4)
    result = run_training(run, sink, CancelToken())
    assert result.steps == 12 and attempts == [4, 8] and kept.steps == [8]  # none at the end: the result is it
    warned = [e for e in sink.events if isinstance(e, Warned)]
    assert [w.code for w in warned] == ["CHECKPOINT_FAILED"] and "step 4" in warned[0].message
    assert list((tmp_path / "scratch").iterdir()) == []  # nothing partial left behind
    assert sorted(p.name for p in (kept.root / "8").iterdir()) == ["adapter", "state.pt"]
    assert kept.eval_losses == [None]  # no eval split


def test_the_eval_split_is_reported_at_each_checkpoint_and_at_the_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Held-out examples are never trained on; their loss comes with each checkpoint and at the end, and equals
    a fresh evaluation of the saved adapter on them."""
    kept = Kept(tmp_path / "kept")
    sink = RecordingSink()
    held_out = [Example(prompt=f"Held out {i}:", completion=f" answer {i}") for i in range(3)]
    run = replace(with_checkpoints(make_run(tiny_model_dir, tmp_path / "out", **SETTINGS), kept, tmp_path / "scratch",
                                   every_steps=4), eval_examples=held_out)
    result = run_training(run, sink, CancelToken())
    evals = [e for e in sink.events if isinstance(e, EvalReported) and e.split == "eval"]
    assert [e.step for e in evals] == [4, 8, 12]
    losses = [dict(e.metrics)["loss"] for e in evals]
    assert kept.steps == [4, 8] and kept.eval_losses == losses[:2]
    assert result.eval_loss == losses[-1] and all(math.isfinite(x) for x in losses)
    assert result.dataset.example_count == len(run.examples)  # the held-out ones are not in what it trained on
    again = evaluate_adapter(tiny_model_dir, tmp_path / "out", held_out)
    assert again == pytest.approx(result.eval_loss, rel=1e-3)  # rel: bf16 on a CUDA host


def evaluate_adapter(model_dir: Path, adapter_dir: Path, held_out: list[Example]) -> float:
    from peft import PeftModel

    from engine.training.datasets import encode_example, pad_token_id
    from engine.training.models import Precision, Quantization, load_base_model, select_device
    from engine.training.recipe import evaluate_loss

    plan = select_device(Precision.AUTO)
    base, tokenizer = load_base_model(model_dir, plan=plan, quantization=Quantization.NONE)
    model = PeftModel.from_pretrained(base, adapter_dir)
    data = [encode_example(tokenizer, e, 128) for e in held_out]
    return evaluate_loss(model, data, batch_size=2, pad_id=pad_token_id(tokenizer), plan=plan, cancel=CancelToken())


def test_a_checkpoint_of_other_examples_is_not_resumed_from(tiny_model_dir: Path, tmp_path: Path) -> None:
    kept = Kept(tmp_path / "kept")
    run = with_checkpoints(make_run(tiny_model_dir, tmp_path / "a", **SETTINGS), kept, tmp_path / "s", every_steps=4)
    run_training(run, RecordingSink(), CancelToken())
    other = [*examples(), Example(prompt="One more", completion=" example.")]
    sink = RecordingSink()
    resumed = with_checkpoints(replace(make_run(tiny_model_dir, tmp_path / "b", **SETTINGS), examples=other),
                               kept, tmp_path / "s", resume_from=kept.root / "4")
    run_training(resumed, sink, CancelToken())
    assert [e.code for e in sink.events if isinstance(e, Warned)] == ["CHECKPOINT_DATA_CHANGED"]
    assert sink.steps[0].step == 1
