"""tokens_per_second is every token a step's rows hold (prompt, chat markup and targets; padding not counted) per
second: what the step's compute follows (docs/training.md, the proto's StepMetrics). A review found the docs saying
*target* tokens while the code counted every token; the docs now say what is counted, and this holds the count."""

from __future__ import annotations

from pathlib import Path

from engine.jobs.ports import CancelToken
from engine.training.datasets import encode_dataset
from engine.training.recipe import run_training
from tests.engine.test_training import RecordingSink, examples, make_run


class OneSecondPerCall:
    """A clock for the recipe that moves one second each time it is read (one read per step)."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now


def test_tokens_per_second_counts_every_token_of_the_steps_rows(tiny_model_dir: Path, tmp_path: Path,
                                                                 tiny_tokenizer, monkeypatch) -> None:
    import engine.training.recipe as recipe

    monkeypatch.setattr(recipe, "time", OneSecondPerCall())
    run = make_run(tiny_model_dir, tmp_path / "out", epochs=1)  # one full-batch step over the 5 examples
    sink = RecordingSink()
    run_training(run, sink, CancelToken())
    [step] = sink.steps
    encoded = encode_dataset(tiny_tokenizer, examples(), 64)
    every_token = sum(len(e.input_ids) for e in encoded)
    target_tokens = sum(e.target_token_count for e in encoded)
    assert target_tokens < every_token  # the two counts differ here, so the assertion tells them apart
    assert step.tokens_per_second == every_token, (step.tokens_per_second, every_token, target_tokens)
