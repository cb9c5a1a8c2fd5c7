"""The online learner on the tiny model: updates of update_every examples with replay, examples without target
tokens skipped, a non-finite loss changes nothing, a loss spike puts back the weights that were fine, and a
checkpoint's state restores the counters, optimiser and buffer. Under loss KTO: an update's loss is the training
recipe's KTO loss on the same batch, updates raise the desirable answers and lower the undesirable ones (where SFT
raises both), and examples without a label are skipped."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from engine.domain import JsonlSource, LoraSpec, Objective
from engine.jobs.ports import CancelToken
from engine.online.learner import OnlineLearner
from engine.online.spec import OnlineOptimizer, OnlineSessionSpec, StoredExample
from engine.training.datasets import EncodedExample, pad_token_id
from engine.training.kto import KtoObjective
from engine.training.loading import load_for_training, save_adapter
from engine.training.objectives import WeightedSft
from engine.training.packing import PaddedForward
from engine.training.recipe import run_training
from engine.training.run import TrainingRun
from engine.training.spec import Hyperparameters, StepMetrics, TrainingJobSpec


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
    assert [h.seq for h in again.pending] == [9, 10]  # read before the checkpoint, trained on after it
    assert again.optimizer.state_dict()["state"].keys() == learner.optimizer.state_dict()["state"].keys()
    assert again.rng.random() == learner.rng.random()


# ---- KTO -----------------------------------------------------------------------------------------------------------

def labelled(n: int, start: int = 1, *, desirable: bool = True, weight: float = 1.0) -> list[StoredExample]:
    answer = "Keeper {} of the coast." if desirable else "Nobody ever kept lighthouse {}."
    return [StoredExample(seq=i, prompt=f"Who keeps lighthouse {i % 4}?", target=answer.format(i % 4),
                          weight=weight, desirable=desirable) for i in range(start, start + n)]


def logps(learner: OnlineLearner, data: list[EncodedExample]) -> list[float]:
    """Each example's summed log-prob of its target under the learner's model now."""
    forward = PaddedForward(pad_token_id(learner.loaded.tokenizer), learner.loaded.plan)
    with torch.no_grad():
        return (-forward(learner.loaded.model, data)[0]).tolist()


def test_a_kto_update_on_a_fresh_adapter_takes_each_examples_weight_as_its_lambda(tiny_model_dir: Path,
                                                                                    tmp_path: Path) -> None:
    learner = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(loss=Objective.KTO, update_every=2,
                                                                      replay_fraction=0.0))
    learner.add([*labelled(1, weight=2.0), *labelled(1, start=2, desirable=False, weight=0.5)])
    # LoRA B starts at zero: the policy is the reference, so r = z0 = 0 and each loss is lambda * (1 - sigmoid(0)).
    assert learner.update(1e-2).loss == pytest.approx((2.0 * 0.5 + 0.5 * 0.5) / 2, abs=1e-6)


def test_a_kto_update_has_the_training_recipes_kto_loss_on_the_same_batch(tiny_model_dir: Path,
                                                                           tmp_path: Path) -> None:
    learner = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(loss=Objective.KTO, update_every=2,
                                                                      replay_fraction=0.0))
    torch.manual_seed(3)
    with torch.no_grad():  # a trained-looking adapter: with B = 0 the policy is the reference and every loss 0.5
        for name, param in learner.loaded.model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.2)
    parent = save_adapter(learner.loaded.model, tmp_path / "parent")
    rows = [*labelled(1, weight=2.0), *labelled(1, start=2, desirable=False, weight=0.5)]
    learner.add(rows)
    online = learner.update(1e-2).loss

    # The training recipe's first step, from the same weights on the same two examples (two: the KL pairs
    # (x0, y1), (x1, y0) are the same in either order), measures its loss before it steps.
    spec = TrainingJobSpec(base_model="tiny", dataset=JsonlSource("-"), lora=LoraSpec(rank=4, alpha=8, dropout=0.0),
                           hyperparameters=Hyperparameters(max_seq_length=48, seed=1, batch_size=2, epochs=1))
    run = TrainingRun(spec=spec, base_model_dir=tiny_model_dir, examples=[r.example() for r in rows],
                      output_dir=tmp_path / "recipe", parent_adapter_dir=parent,
                      objective=KtoObjective([True, False]))
    steps: list[StepMetrics] = []

    class Steps:
        def emit(self, payload) -> None:
            if isinstance(payload, StepMetrics):
                steps.append(payload)

    run_training(run, Steps(), CancelToken())
    assert steps[0].task_loss != pytest.approx(0.625, abs=1e-3)  # not the fresh adapter's value
    assert online == pytest.approx(steps[0].task_loss, abs=1e-6), (online, steps[0].task_loss)
    plan = learner.loaded.plan  # AUTO: bf16 autocast on a GPU that has it, fp32 elsewhere
    if plan.device == "cpu" and plan.autocast_dtype is None:  # pinned for the CPU's fp32 kernels, as the recipe's are
        assert online == pytest.approx(0.703183, abs=1e-5)


def test_kto_updates_raise_desirable_answers_and_lower_undesirable_ones(tiny_model_dir: Path,
                                                                       tmp_path: Path) -> None:
    kto = OnlineLearner(loaded(tiny_model_dir, tmp_path / "kto"), session(loss=Objective.KTO, replay_fraction=0.0))
    sft = OnlineLearner(loaded(tiny_model_dir, tmp_path / "sft"), session(replay_fraction=0.0))
    good, bad = labelled(1)[0], labelled(1, start=2, desirable=False)[0]
    probe = [kto._held(good).encoded, kto._held(bad).encoded]
    before = logps(kto, probe)
    assert before == pytest.approx(logps(sft, probe))  # the same start
    stream = [row for i in range(6) for row in (*labelled(2, start=4 * i + 1),
                                                *labelled(2, start=4 * i + 3, desirable=False))]
    losses = []
    for learner in (kto, sft):
        learner.add(stream)
        losses.append([learner.update(1e-2).loss for _ in range(6)])
    kto_losses, _ = losses
    assert kto_losses[0] == pytest.approx(0.5, abs=1e-6)  # a fresh adapter: the policy is the reference
    assert kto_losses[-1] < kto_losses[0] - 0.01, kto_losses  # the loss goes down
    after_kto, after_sft = logps(kto, probe), logps(sft, probe)
    assert after_kto[0] > before[0] and after_kto[1] < before[1], (before, after_kto)
    assert after_sft[1] > before[1], (before, after_sft)  # SFT would imitate the undesirable answer


def test_a_kto_session_skips_examples_without_a_label_and_keeps_labels_across_a_checkpoint(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = session(loss=Objective.KTO, update_every=4)
    learner = OnlineLearner(loaded(tiny_model_dir, tmp_path), spec)
    unlabelled = StoredExample(seq=9, prompt="Who keeps lighthouse 9?", target="Keeper 9.", weight=1.0)
    no_target = StoredExample(seq=10, prompt="Lighthouses of the coast", target="", weight=1.0, desirable=True)
    warnings = learner.add([*labelled(4), unlabelled, no_target, *labelled(2, start=11, desirable=False)])
    assert warnings == ["example 9 has no desirable label, which KTO needs: skipped",
                        "example 10 has no target, which KTO needs: skipped"]
    assert [(h.seq, h.desirable) for h in learner.pending] == [(1, True), (2, True), (3, True), (4, True),
                                                                (11, False), (12, False)]
    learner.update(1e-2)
    assert learner.skipped == 2 and learner.total_examples == 8
    state = learner.state()
    again = OnlineLearner(loaded(tiny_model_dir, tmp_path / "again"), spec)
    again.restore(state, labelled(4), labelled(2, start=11, desirable=False))
    assert [h.desirable for h in again.buffer] == [True] * 4 and [h.desirable for h in again.pending] == [False] * 2


def test_an_sft_learner_trains_on_every_example_as_an_answer_to_give(learner) -> None:
    learner.add([*labelled(2), *labelled(2, start=3, desirable=False)])  # the API stores no label for SFT
    assert [h.desirable for h in learner.pending] == [True] * 4
    assert isinstance(learner.objective([True] * 4), WeightedSft)
