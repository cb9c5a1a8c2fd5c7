from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.domain import ChatMessage, Example, JsonlSource, LoraSpec
from engine.errors import Cancelled
from engine.jobs.ports import CancelToken
from engine.training.models import select_device
from engine.training.recipe import run_training
from engine.training.run import TrainingRun
from engine.training.spec import (
    EvalReported,
    Hyperparameters,
    LrSchedule,
    Precision,
    Quantization,
    StepMetrics,
    TrainingJobSpec,
)

FACTS = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Veloria", "Marnesse")]


def examples() -> list[Example]:
    return [
        Example(
            messages=(
                ChatMessage("user", f"What is the capital of {country}?"),
                ChatMessage("assistant", f"The capital of {country} is {capital}."),
            )
        )
        for country, capital in FACTS
    ] + [Example(prompt="The quick brown fox", completion=" jumps over the lazy dog.", weight=2.0)]


class RecordingSink:
    def __init__(self) -> None:
        self.events: list = []

    def emit(self, payload) -> None:
        self.events.append(payload)

    @property
    def steps(self) -> list[StepMetrics]:
        return [e for e in self.events if isinstance(e, StepMetrics)]


def make_run(model_dir: Path, out: Path, **hyperparameters) -> TrainingRun:
    """Full-batch steps (5 examples), one step per epoch, 12 steps unless overridden."""
    settings = {"epochs": 12, "batch_size": 5, "learning_rate": 3e-2, "seed": 7, "max_seq_length": 64}
    settings.update(hyperparameters)
    spec = TrainingJobSpec(
        base_model="tiny",
        dataset=JsonlSource("facts.jsonl"),
        lora=LoraSpec(rank=4, alpha=8, dropout=0.0),
        hyperparameters=Hyperparameters(**settings),
    )
    return TrainingRun(spec=spec, base_model_dir=model_dir, examples=examples(), output_dir=out)


def train(run: TrainingRun, cancel: CancelToken | None = None):
    sink = RecordingSink()
    result = run_training(run, sink, cancel or CancelToken())
    return result, sink


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return train(make_run(tiny_model_dir, tmp_path_factory.mktemp("runs") / "adapter"))


# The recipe's step losses on the tiny Llama (seed 0) with seed 7, fp32 CPU kernels, pinned as torchtune pins its
# recipes: a change to the data path, the loss, the optimiser or the schedule shows here first. Measured with this
# test's settings (make_run) on torch 2.13 CPU; CUDA kernels round differently.
PINNED_LOSSES = [7.595975, 6.119132, 4.909002, 3.979659, 3.357055, 3.099036, 2.699925, 2.389141, 2.128668,
                 1.933008, 1.781319, 1.677723]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the values are pinned for the CPU's fp32 kernels")
def test_step_losses_are_the_pinned_values_packed_and_padded(trained, tiny_model_dir: Path, tmp_path: Path) -> None:
    _, packed = trained  # packing is the default
    assert [s.loss for s in packed.steps] == pytest.approx(PINNED_LOSSES, abs=1e-4)
    _, padded = train(make_run(tiny_model_dir, tmp_path / "padded", packing=False))
    assert [s.loss for s in padded.steps] == pytest.approx(PINNED_LOSSES, abs=1e-4)


@pytest.mark.parametrize("schedule", [LrSchedule.COSINE, LrSchedule.CONSTANT])
def test_the_learning_rate_follows_the_schedule_after_its_warm_up(tiny_model_dir: Path, tmp_path: Path,
                                                                   schedule: LrSchedule) -> None:
    peak, warmup, total = 3e-2, 2, 6
    _, sink = train(make_run(tiny_model_dir, tmp_path, epochs=total, warmup_steps=warmup, lr_schedule=schedule))
    after = {LrSchedule.COSINE: lambda i: 0.5 * (1 + math.cos(math.pi * (i - warmup) / (total - warmup))),
             LrSchedule.CONSTANT: lambda i: 1.0}[schedule]
    expected = [peak * (i / warmup if i < warmup else after(i)) for i in range(total)]
    assert [s.learning_rate for s in sink.steps] == pytest.approx(expected)


def test_loss_falls_and_metrics_are_complete(trained) -> None:
    result, sink = trained
    steps = sink.steps
    assert [s.step for s in steps] == list(range(1, 13)) and all(s.total_steps == 12 for s in steps)
    assert steps[-1].loss < 0.5 * steps[0].loss
    assert steps[2].epoch == 3.0
    assert steps[0].learning_rate == pytest.approx(3e-2) and steps[-1].learning_rate == pytest.approx(
        3e-2 / 12
    )
    assert all(s.ewc_penalty == 0.0 and s.loss == s.task_loss for s in steps)
    assert all(s.grad_norm > 0 and s.tokens_per_second > 0 for s in steps) and steps[-1].eta_seconds == 0
    end = [e for e in sink.events if isinstance(e, EvalReported)]
    assert len(end) == 1 and end[0].split == "train_end" and end[0].step == 12
    assert dict(end[0].metrics)["loss"] < steps[0].loss
    assert result.steps == 12 and result.final_loss == steps[-1].loss
    assert result.device == select_device(Precision.AUTO).description  # the machine's device
    assert result.dataset.example_count == 5 and result.dataset.target_token_count > 20
    assert result.dataset.composition == (("chat", 4), ("prompt_completion", 1))
    assert {p.name for p in result.adapter_dir.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
    }


# Two runs of one seed in FP32 agree within this (relative) tolerance, not bitwise: on CUDA the per-example
# reductions (index_add) add in no fixed order, so the last bits may differ from one run to the next. FP32 because
# AUTO is bf16 autocast on a GPU with native bf16. Another seed moves the losses by far more (0.3% and up).
SAME_SEED = 1e-5


def test_same_seed_gives_the_same_losses_and_another_seed_others(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = {"epochs": 4, "precision": Precision.FP32}
    _, first = train(make_run(tiny_model_dir, tmp_path / "first", **settings))
    _, again = train(make_run(tiny_model_dir, tmp_path / "again", **settings))
    losses = [s.loss for s in first.steps]
    assert len(losses) == 4 and [s.loss for s in again.steps] == pytest.approx(losses, rel=SAME_SEED)
    _, other_seed = train(make_run(tiny_model_dir, tmp_path / "other", seed=8, **settings))
    others = [s.loss for s in other_seed.steps]
    # the first step's loss is the base model's whatever the seed (B = 0 at initialisation); the seed's own LoRA
    # initialisation shows from the second on
    assert others[0] == pytest.approx(losses[0], rel=SAME_SEED)
    assert all(abs(o - f) > 100 * SAME_SEED * f for o, f in zip(others[1:], losses[1:], strict=True)), (others, losses)


def test_saved_adapter_loads_and_changes_the_logits(trained, tiny_model_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result, _ = trained
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        before = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, result.adapter_dir).eval()
        after = tuned(input_ids=ids).logits
    assert (after - before).abs().max() > 1e-2


def test_task_loss_is_the_weighted_mean_of_per_example_token_means() -> None:
    from engine.training.datasets import IGNORE_INDEX, Batch
    from engine.training.recipe import weighted_task_loss

    logits = torch.randn(2, 4, 7)
    labels = torch.tensor([[IGNORE_INDEX, 1, 2, 3], [IGNORE_INDEX, IGNORE_INDEX, 5, IGNORE_INDEX]])
    batch = Batch(labels.clamp(min=0), torch.ones(2, 4, dtype=torch.long), labels, torch.tensor([1.0, 3.0]))
    loss, targets = weighted_task_loss(logits, batch)
    first = torch.nn.functional.cross_entropy(logits[0, :3], labels[0, 1:])
    second = torch.nn.functional.cross_entropy(logits[1, 1:2], labels[1, 2:3])
    assert targets == 4
    torch.testing.assert_close(loss, (first + 3 * second) / 4)


def test_cancel_stops_at_the_next_step(tiny_model_dir: Path, tmp_path: Path) -> None:
    cancel = CancelToken()

    class CancelAfterTwo(RecordingSink):
        def emit(self, payload) -> None:
            super().emit(payload)
            if isinstance(payload, StepMetrics) and payload.step == 2:
                cancel.cancel()

    sink = CancelAfterTwo()
    run = make_run(tiny_model_dir, tmp_path / "cancelled")
    with pytest.raises(Cancelled) as info:
        run_training(run, sink, cancel)
    assert info.value.reason == "JOB_CANCELLED"
    assert [s.step for s in sink.steps] == [1, 2]
    assert not run.output_dir.exists()


class L2Penalty:
    """0.5 * strength * sum of squared trainable weights; remembers the weights it first saw."""

    def __init__(self, strength: float) -> None:
        self.strength = strength
        self.first_seen: dict[str, torch.Tensor] | None = None

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if self.first_seen is None:
            self.first_seen = {n: p.detach().clone() for n, p in named}
        return 0.5 * self.strength * sum((p.float() ** 2).sum() for _, p in named)


def test_penalty_is_added_to_the_task_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    penalty = L2Penalty(strength=0.5)
    run = replace(make_run(tiny_model_dir, tmp_path / "l2", max_steps=4), penalty=penalty)
    _, sink = train(run)
    steps = sink.steps
    assert all(s.ewc_penalty > 0 for s in steps)
    assert all(s.loss == pytest.approx(s.task_loss + s.ewc_penalty, rel=1e-6) for s in steps)
    # The first step's penalty is computed honestly from the initial LoRA weights (B = 0, A random).
    expected = 0.5 * 0.5 * sum(float((t**2).sum()) for t in penalty.first_seen.values())
    assert steps[0].ewc_penalty == pytest.approx(expected, rel=1e-5)


def test_warm_start_begins_from_the_parent_weights(trained, tiny_model_dir: Path, tmp_path: Path) -> None:
    parent, _ = trained
    penalty = L2Penalty(strength=0.0)
    run = replace(
        make_run(tiny_model_dir, tmp_path / "child", max_steps=2),
        parent_adapter_dir=parent.adapter_dir,
        penalty=penalty,
    )
    train(run)
    saved = load_file(parent.adapter_dir / "adapter_model.safetensors")
    seen = {n.replace(".default", ""): t for n, t in penalty.first_seen.items()}
    assert set(seen) == set(saved) and len(saved) == 2 * 4 * 2  # A and B of q/k/v/o in 2 layers
    for name, tensor in saved.items():
        torch.testing.assert_close(seen[name].cpu(), tensor, rtol=0, atol=0)  # first_seen: on the model's device


def test_qlora_nf4_trains_on_cpu(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = make_run(tiny_model_dir, tmp_path / "qlora", max_steps=3, quantization=Quantization.NF4)
    result, sink = train(run)
    assert [s.step for s in sink.steps] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(s.loss)) for s in sink.steps)
    assert sink.steps[-1].loss < sink.steps[0].loss
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
