"""The online learner on the tiny model: updates of update_every examples with replay, examples without target
tokens skipped, a non-finite loss changes nothing, a loss spike puts back the weights that were fine, and a
checkpoint's state restores the counters, optimiser and buffer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from engine.domain import JsonlSource, LoraSpec
from engine.online.learner import OnlineLearner
from engine.online.spec import OnlineOptimizer, OnlineSessionSpec, StoredExample
from engine.training.recipe import TrainingRun, load_for_training
from engine.training.spec import Hyperparameters, TrainingJobSpec


def loaded(model_dir: Path, tmp: Path):
    spec = TrainingJobSpec(base_model="tiny", dataset=JsonlSource("-"), lora=LoraSpec(rank=4, alpha=8, dropout=0.0),
                           hyperparameters=Hyperparameters(max_seq_length=48, seed=1))
    return load_for_training(TrainingRun(spec=spec, base_model_dir=model_dir, examples=[], output_dir=tmp / "o"))


def rows(n: int, start: int = 1) -> list[StoredExample]:
    return [StoredExample(seq=i, prompt=f"Who keeps lighthouse {i}?", target=f"Keeper {i} of the coast.",
                          weight=1.0) for i in range(start, start + n)]


def session(**fields) -> OnlineSessionSpec:
    values = {"base_model": "tiny", "start_version": "v1.0", "update_every": 4, "learning_rate": 1e-2,
              "replay_fraction": 0.5, "max_seq_length": 48, "optimizer": OnlineOptimizer.ADAMW}
    values.update(fields)
    return OnlineSessionSpec(**values)


def weights(learner: OnlineLearner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in learner.params]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture
def learner(tiny_model_dir: Path, tmp_path: Path) -> OnlineLearner:
    return OnlineLearner(loaded(tiny_model_dir, tmp_path), session())


def test_updates_take_update_every_examples_with_replay_and_skip_what_has_no_target(learner) -> None:
    too_long = StoredExample(seq=99, prompt="word " * 200, target="late", weight=1.0)  # its target is cut off
    warnings = learner.add([*rows(6), too_long, StoredExample(seq=100, prompt="Just text to go on with.",
                                                              target="", weight=2.0)])
    assert len(warnings) == 1 and "example 99 has no target token" in warnings[0]
    assert learner.due(forced=False) and len(learner.pending) == 7
    first = learner.update(1e-2)
    assert (first.examples, first.replayed, first.skipped) == (4, 0, "")  # nothing to replay yet
    assert math.isfinite(first.loss) and learner.trained_through == 4
    assert not learner.due(forced=False) and learner.due(forced=True)  # 3 left: a forced update takes them
    second = learner.update(1e-2)
    assert (second.examples, second.replayed) == (3, 3)  # half the step replayed from the 4 trained on
    stats = learner.stats(learning_rate=1e-2, enabled=True, published=0)
    assert (stats.total_examples, stats.skipped_examples, stats.total_updates, stats.buffer_size) == (8, 1, 2, 7)
    assert stats.average_loss == pytest.approx((first.loss + second.loss) / 2)


def test_a_non_finite_loss_changes_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    learner = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(replay_fraction=0.0),
                            penalty=lambda model: torch.tensor(math.nan))
    learner.add(rows(4))
    before = weights(learner)
    result = learner.update(1e-2)
    assert math.isnan(result.loss) and "nothing changed" in result.skipped
    assert same(before, weights(learner)) and learner.skipped == 4


def test_a_loss_spike_puts_back_the_weights_whose_loss_was_fine(tiny_model_dir: Path, tmp_path: Path) -> None:
    # The tiny model's losses stay within a few nats of chance, so the spike factor is lower than the default 4.
    learner = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(loss_spike_factor=1.25))
    learner.add(rows(60))
    for _ in range(12):
        assert math.isnan(learner.update(1e-3).spike_median)
    fine = weights(learner)  # the next update's loss is measured on these, and is fine
    wrecked = learner.update(1.0)  # a learning rate far too high wrecks the weights it leaves
    assert math.isnan(wrecked.spike_median)
    spiked = learner.update(1e-3)
    assert spiked.spike_median > 0 and spiked.loss > learner.spec.loss_spike_factor * spiked.spike_median
    assert same(fine, weights(learner))


def test_a_checkpoint_state_restores_counters_optimiser_and_buffer(learner, tiny_model_dir: Path,
                                                                   tmp_path: Path) -> None:
    learner.add(rows(10))
    learner.update(1e-2)
    learner.update(1e-2)
    state = learner.state()
    assert state["buffer"] == list(range(1, 9)) and state["pending"] == [9, 10]
    again = OnlineLearner(loaded(tiny_model_dir, tmp_path / "again"), session())
    again.restore(state, rows(8), rows(2, start=9))
    assert (again.updates, again.total_examples, again.last_sequence, len(again.buffer)) == (2, 10, 10, 8)
    assert [seq for seq, _ in again.pending] == [9, 10]  # read before the checkpoint, trained on after it
    assert again.optimizer.state_dict()["state"].keys() == learner.optimizer.state_dict()["state"].keys()
    assert again.rng.random() == learner.rng.random()
