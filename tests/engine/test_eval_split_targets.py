"""Held-out examples cut to nothing by max_seq_length are reported, as training examples are."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.domain import ChatMessage, Example, JsonlSource, LoraSpec
from engine.jobs.core import Warned
from engine.jobs.ports import CancelToken
from engine.training.recipe import run_training
from engine.training.run import TrainingResult, TrainingRun
from engine.training.spec import EvalReported, Hyperparameters, Precision, TrainingJobSpec

LONG_PROMPT = "The quick brown fox jumps over the lazy dog. " * 20


def chat(question: str, answer: str) -> Example:
    return Example(messages=(ChatMessage("user", question), ChatMessage("assistant", answer)))


def train(model_dir: Path, out: Path, trained: list[Example], held_out: list[Example]) -> tuple[TrainingResult, list]:
    """One step of a job with ``held_out`` as its eval split, cut at 32 tokens: its result and events."""
    spec = TrainingJobSpec(base_model="tiny", dataset=JsonlSource("x.jsonl"),
                           lora=LoraSpec(rank=4, alpha=8, dropout=0.0),
                           hyperparameters=Hyperparameters(epochs=1, batch_size=2, max_seq_length=32, max_steps=1,
                                                           precision=Precision.FP32))
    events: list = []

    class Sink:
        def emit(self, payload) -> None:
            events.append(payload)

    result = run_training(TrainingRun(spec=spec, base_model_dir=model_dir, examples=trained, eval_examples=held_out,
                                      output_dir=out), Sink(), CancelToken())
    return result, events


def capitals() -> list[Example]:
    return [chat(f"What is the capital of {c}?", f"It is {k}.") for c, k in [("France", "Paris"), ("Italy", "Rome")]]


def eval_reports(events: list) -> list[EvalReported]:
    return [e for e in events if isinstance(e, EvalReported) and e.split == "eval"]


def skipped(events: list) -> list[str]:
    return [e.message for e in events if isinstance(e, Warned) and e.code == "EXAMPLES_WITHOUT_TARGETS"]


def test_held_out_examples_without_targets_are_reported(tiny_model_dir: Path, tmp_path: Path) -> None:
    held_out = [chat(LONG_PROMPT + c, k) for c, k in [("Spain", "Madrid."), ("Veloria", "Marnesse.")]]
    result, events = train(tiny_model_dir, tmp_path / "out", capitals(), held_out)
    assert result.eval_loss is None and not eval_reports(events)
    assert len(skipped(events)) == 1 and skipped(events)[0].startswith("2 of 2 held-out (eval split) examples"), events


def test_some_held_out_examples_without_targets_are_reported(tiny_model_dir: Path, tmp_path: Path) -> None:
    held_out = [chat("What is the capital of Spain?", "Madrid."), chat(LONG_PROMPT + "Veloria", "Marnesse.")]
    result, events = train(tiny_model_dir, tmp_path / "out", capitals(), held_out)
    assert result.eval_loss is not None and len(eval_reports(events)) == 1
    assert eval_reports(events)[0].metrics == (("loss", pytest.approx(result.eval_loss)),)
    assert len(skipped(events)) == 1 and skipped(events)[0].startswith("1 of 2 held-out (eval split) examples"), events


def test_training_examples_without_targets_are_reported_as_such(tiny_model_dir: Path, tmp_path: Path) -> None:
    trained = [*capitals(), chat(LONG_PROMPT, "Dropped.")]
    _, events = train(tiny_model_dir, tmp_path / "out", trained, [chat("What is the capital of Spain?", "Madrid.")])
    assert len(eval_reports(events)) == 1
    assert len(skipped(events)) == 1 and skipped(events)[0].startswith("1 of 3 training examples"), events
