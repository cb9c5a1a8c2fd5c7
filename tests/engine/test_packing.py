"""Packed batches give the losses and gradients of padded ones; accumulated steps those of one big batch."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine.continual.fisher import compute_fisher, trainable_parameters
from engine.continual.planner import make_penalty
from engine.domain import ChatMessage, Example, FisherSpace, JsonlSource, LoraSpec
from engine.jobs.ports import CancelToken
from engine.training.attention import PackedAttention, candidates, choose_attention, isolates, packed_attention
from engine.training.batching import Batching, StepBatch, batching, length_grouped_order
from engine.training.datasets import IGNORE_INDEX, EncodedExample
from engine.training.kto import KtoObjective
from engine.training.models import select_device
from engine.training.objectives import WeightedSft
from engine.training.packing import PackedForward, PaddedForward, assign_rows, pack
from engine.training.recipe import gradient_checkpointing, run_training
from engine.training.run import TrainingRun
from engine.training.spec import Hyperparameters, Precision, StepMetrics, TrainingJobSpec

TOLERANCE = 1e-5
I = IGNORE_INDEX  # noqa: E741


def weighted(data: list[EncodedExample]) -> list[EncodedExample]:
    """The samples with distinct weights, so a wrong weighting shows."""
    return [replace(e, weight=0.5 + 0.25 * i) for i, e in enumerate(data)]


def step_result(model, objective, examples, forward, micro_size=None) -> tuple[float, dict[str, torch.Tensor]]:
    """The step's task loss and the LoRA gradients it leaves, over micro-batches of ``micro_size``."""
    model.zero_grad(set_to_none=True)
    step = StepBatch(examples, list(range(len(examples))), micro_size or len(examples))
    loss = 0.0
    for share in objective.step_losses(model, step, forward):
        share.backward()
        loss += float(share.detach())
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss, grads


def assert_same(got: tuple[float, dict], want: tuple[float, dict]) -> None:
    assert got[0] == pytest.approx(want[0], rel=TOLERANCE, abs=TOLERANCE)
    assert got[1].keys() == want[1].keys()
    for name, grad in want[1].items():
        torch.testing.assert_close(got[1][name], grad, rtol=TOLERANCE, atol=TOLERANCE, msg=name)


def test_pack_restarts_positions_and_keeps_each_examples_targets() -> None:
    a = EncodedExample([1, 2, 3], [I, 2, 3], 1.0)
    b = EncodedExample([4, 5], [I, 5], 2.0)
    batch = pack([a, b], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    # A position predicts its example's next label; an example's last position predicts nothing.
    assert batch.targets.tolist() == [[2, 3, I, 5, I]]
    assert batch.example_index.tolist() == [[0, 0, 0, 1, 1]]

    rows = pack([a, b, EncodedExample([6, 7, 8, 9], [I, I, 8, 9])], pad_id=0, row_tokens=5)
    assert rows.input_ids.tolist() == [[6, 7, 8, 9, 0], [1, 2, 3, 4, 5]]  # first-fit decreasing, padded
    assert rows.position_ids.tolist() == [[0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]
    assert rows.example_index.tolist() == [[2, 2, 2, 2, -1], [0, 0, 0, 1, 1]]
    assert assign_rows([5, 3, 4, 2], 7) == [[0, 3], [2, 1]] and assign_rows([5, 3], None) == [[0, 1]]


@pytest.mark.parametrize("attention", [a for a in PackedAttention if a is not PackedAttention.VARLEN])
@pytest.mark.parametrize("row_tokens", [None, 48])
def test_packed_sft_with_weights_equals_padded(lora_model, attention: PackedAttention, row_tokens) -> None:
    model, data, pad = lora_model
    plan = select_device(Precision.FP32)
    examples = weighted(data)
    padded = step_result(model, WeightedSft(), examples, PaddedForward(pad, plan))
    with packed_attention(model, attention):
        packed = step_result(model, WeightedSft(), examples, PackedForward(pad, plan, row_tokens))
    assert padded[0] > 0 and any(float(g.abs().max()) > 0 for g in padded[1].values())
    assert_same(packed, padded)


def test_packed_kto_equals_padded(lora_model) -> None:
    model, data, pad = lora_model
    plan = select_device(Precision.FP32)
    examples = weighted(data)
    kto = KtoObjective([i % 3 != 0 for i in range(len(examples))])
    padded = step_result(model, kto, examples, PaddedForward(pad, plan))
    with batching(model, examples, packing=True, pad_id=pad, plan=plan) as layout:
        assert layout.description.startswith("packed")
        packed = step_result(model, kto, examples, layout.forward)
    assert_same(packed, padded)


@pytest.mark.parametrize("packing", [True, False])
def test_accumulated_gradients_equal_one_big_batch(lora_model, packing: bool) -> None:
    model, data, pad = lora_model
    plan = select_device(Precision.FP32)
    examples = weighted(data)  # 9 examples: micro-batches of 2, 2, 2, 2, 1
    kto = KtoObjective([i % 2 == 0 for i in range(len(examples))])
    with batching(model, examples, packing=packing, pad_id=pad, plan=plan) as layout:
        for objective in (WeightedSft(), kto):
            big = step_result(model, objective, examples, layout.forward)
            accumulated = step_result(model, objective, examples, layout.forward, micro_size=2)
            assert_same(accumulated, big)


def parent_penalty(model, examples: list[EncodedExample], pad: int, space: FisherSpace, ewc_lambda: float = 1.0):
    """The EWC penalty against a parent: ``model``'s adapter moved a little, its Fisher measured on ``examples``
    (as a continuation's pre-pass measures it)."""
    generator = torch.Generator().manual_seed(11)
    anchor = {n: p.detach().cpu() + 0.05 * torch.randn(p.shape, generator=generator)
              for n, p in trainable_parameters(model).items()}
    fisher = compute_fisher(model, examples, space=space, batch_size=4, pad_id=pad).diagonal
    model.train()
    return make_penalty(space, fisher, anchor, ewc_lambda)


@pytest.mark.parametrize("space", list(FisherSpace))
def test_the_ewc_penalty_and_the_step_it_adds_to_are_the_same_packed(lora_model, space: FisherSpace) -> None:
    """With EWC on, a step's penalty, its loss (task loss + penalty) and its gradients are those of padded batches:
    the penalty is added once after the micro-batches' task losses, as the recipe does."""
    model, data, pad = lora_model
    plan = select_device(Precision.FP32)
    examples = weighted(data)
    penalty = parent_penalty(model, examples, pad, space)

    def ewc_step(forward) -> tuple[float, tuple[float, dict[str, torch.Tensor]]]:
        model.zero_grad(set_to_none=True)
        task = 0.0
        for share in WeightedSft().step_losses(model, StepBatch(examples, list(range(len(examples))), 4), forward):
            share.backward()
            task += float(share.detach())
        value = penalty(model)
        value.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        model.zero_grad(set_to_none=True)
        return float(value.detach()), (task + float(value.detach()), grads)

    padded_penalty, padded = ewc_step(PaddedForward(pad, plan))
    with batching(model, examples, packing=True, pad_id=pad, plan=plan) as layout:
        assert layout.description.startswith("packed")
        packed_penalty, packed = ewc_step(layout.forward)
    task_only = step_result(model, WeightedSft(), examples, PaddedForward(pad, plan), micro_size=4)
    assert padded_penalty > 0.1 * task_only[0]  # the penalty counts in the loss ...
    assert any(not torch.allclose(padded[1][n], g, rtol=1e-3, atol=1e-4) for n, g in task_only[1].items())  # and grads
    assert packed_penalty == pytest.approx(padded_penalty, rel=TOLERANCE, abs=TOLERANCE)
    assert_same(packed, padded)


def test_gradient_checkpointing_gives_the_same_gradients(lora_model) -> None:
    model, data, pad = lora_model
    plan = select_device(Precision.FP32)
    with batching(model, data, packing=True, pad_id=pad, plan=plan) as layout:
        plain = step_result(model, WeightedSft(), data, layout.forward)
        with gradient_checkpointing(model, True):
            assert model.get_base_model().is_activation_checkpointing
            checkpointed = step_result(model, WeightedSft(), data, layout.forward)
    assert not model.get_base_model().is_activation_checkpointing
    assert_same(checkpointed, plain)


def test_the_best_path_is_chosen_verified_and_restored(lora_model) -> None:
    model, data, pad = lora_model
    plan = select_device(Precision.FP32)
    before = model.get_base_model().config._attn_implementation
    paths = candidates(model, plan)
    assert PackedAttention.SEGMENTS in paths and paths[-1] is PackedAttention.MASK  # plain causal Llama
    assert choose_attention(model, data, pad, plan) is paths[0]
    with batching(model, data, packing=True, pad_id=pad, plan=plan) as layout:
        assert layout.description == f"packed ({paths[0].name.lower()} attention)" and not layout.length_grouped
    assert model.get_base_model().config._attn_implementation == before


class LeakyForward(PackedForward):
    """Packs examples without restarting position ids: one long causal sequence, examples see each other."""

    def __call__(self, model, examples):
        flat = EncodedExample([t for e in examples for t in e.input_ids], [t for e in examples for t in e.labels])
        sums, counts = super().__call__(model, [flat])
        return sums.expand(len(examples)), counts.expand(len(examples))


def test_the_probe_catches_attention_across_examples(lora_model) -> None:
    model, data, pad = lora_model
    plan = select_device(Precision.FP32)
    reference = PaddedForward(pad, plan)
    samples = [EncodedExample(e.input_ids[:12], e.input_ids[:12]) for e in data[:3]]
    assert isolates(model, PackedForward(pad, plan), samples, reference)
    assert not isolates(model, LeakyForward(pad, plan), samples, reference)


def tiny_mamba(vocab_size: int) -> torch.nn.Module:
    """A state-space model: its recurrent state carries one packed example into the next."""
    from peft import LoraConfig, get_peft_model
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    base = MambaForCausalLM(MambaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, state_size=8))
    for p in base.parameters():
        p.requires_grad_(False)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["in_proj", "x_proj"]))
    return model.to(select_device(Precision.FP32).device)


def test_a_model_that_cannot_pack_falls_back_to_length_grouped_padding(lora_model, tiny_tokenizer) -> None:
    _, data, pad = lora_model
    plan = select_device(Precision.FP32)
    mamba = tiny_mamba(len(tiny_tokenizer))
    assert choose_attention(mamba, data, pad, plan) is None
    with batching(mamba, data, packing=True, pad_id=pad, plan=plan) as layout:
        assert layout.length_grouped and "apart" in layout.fallback_reason
        assert isinstance(layout.forward, PaddedForward)


def test_length_grouped_order_is_a_permutation_of_similar_lengths() -> None:
    lengths = [(i * 37) % 101 + 1 for i in range(96)]
    order = length_grouped_order(lengths, 4, torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(96))
    spread = [max(lengths[i] for i in order[s : s + 4]) - min(lengths[i] for i in order[s : s + 4])
              for s in range(0, 96, 4)]
    shuffled = torch.randperm(96, generator=torch.Generator().manual_seed(0)).tolist()
    random_spread = [max(lengths[i] for i in shuffled[s : s + 4]) - min(lengths[i] for i in shuffled[s : s + 4])
                     for s in range(0, 96, 4)]
    assert sum(spread) < sum(random_spread) / 4
    steps = Batching.steps(list(range(10)), list(range(10)), batch_size=2, accumulation=2)
    assert [[list(m) for m in s.micro_batches] for s in steps] == [[[0, 1], [2, 3]], [[0, 1], [2, 3]], [[0, 1]]]


# ---- whole jobs -------------------------------------------------------------------------------------------


def facts() -> list[Example]:
    pairs = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Veloria", "Marnesse"),
             ("Quorvia", "Tal Ammeth"), ("Brinmark", "Oskerholm")]
    return [Example(messages=(ChatMessage("user", f"What is the capital of {c}?"),
                              ChatMessage("assistant", f"The capital of {c} is {k}.")), weight=1.0 + i % 3)
            for i, (c, k) in enumerate(pairs)] + [
        Example(prompt="The quick brown fox", completion=" jumps over the lazy dog.", weight=0.5)]


def job_steps(model_dir: Path, out: Path, penalty=None, **hyperparameters) -> list[StepMetrics]:
    """A whole job's step metrics, pinned to FP32: the jobs compared here must agree to 1e-4, and on a GPU
    AUTO would train under bf16 autocast, whose rounding differs between layouts."""
    settings = {"epochs": 2, "batch_size": 4, "learning_rate": 3e-2, "seed": 5, "max_seq_length": 64,
                "precision": Precision.FP32}
    spec = TrainingJobSpec(base_model="tiny", dataset=JsonlSource("facts.jsonl"),
                           lora=LoraSpec(rank=4, alpha=8, dropout=0.0),
                           hyperparameters=Hyperparameters(**{**settings, **hyperparameters}))
    events: list = []

    class Sink:
        def emit(self, payload) -> None:
            events.append(payload)

    run_training(TrainingRun(spec=spec, base_model_dir=model_dir, examples=facts(), output_dir=out,
                             penalty=penalty), Sink(), CancelToken())
    return [e for e in events if isinstance(e, StepMetrics)]


def test_a_packed_job_trains_like_a_padded_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    packed = job_steps(tiny_model_dir, tmp_path / "packed")
    padded = job_steps(tiny_model_dir, tmp_path / "padded", packing=False)
    assert len(packed) == len(padded) == 4
    for got, want in zip(packed, padded, strict=True):
        assert got.loss == pytest.approx(want.loss, rel=1e-4)
        assert got.grad_norm == pytest.approx(want.grad_norm, rel=1e-4)
    assert packed[-1].loss < packed[0].loss


@pytest.mark.parametrize("space", list(FisherSpace))
def test_a_packed_job_with_ewc_trains_like_a_padded_one(tiny_model_dir: Path, tmp_path: Path, lora_model,
                                                        space: FisherSpace) -> None:
    """A continuation's whole run (the adapter the recipe builds on the same base, same LoRA shapes as the
    fixture's, B = 0 at the start): the same penalty, loss and gradient norm at every step packed as padded."""
    model, data, pad = lora_model
    # One penalty per run (a penalty binds to the first model it sees); lambda: about the task loss at the start.
    packed = job_steps(tiny_model_dir, tmp_path / "packed", penalty=parent_penalty(model, data, pad, space, 0.25))
    padded = job_steps(tiny_model_dir, tmp_path / "padded", penalty=parent_penalty(model, data, pad, space, 0.25),
                       packing=False)
    assert len(packed) == len(padded) == 4 and all(s.ewc_penalty > 0 for s in padded)
    for got, want in zip(packed, padded, strict=True):
        assert got.ewc_penalty == pytest.approx(want.ewc_penalty, rel=1e-4)
        assert got.loss == pytest.approx(want.loss, rel=1e-4)
        assert got.grad_norm == pytest.approx(want.grad_norm, rel=1e-4)


def test_an_accumulating_job_steps_once_per_accumulated_batch(tiny_model_dir: Path, tmp_path: Path) -> None:
    big = job_steps(tiny_model_dir, tmp_path / "big", batch_size=4)
    accumulated = job_steps(tiny_model_dir, tmp_path / "acc", batch_size=2, gradient_accumulation_steps=2,
                            gradient_checkpointing=True)
    assert [s.step for s in accumulated] == [1, 2, 3, 4] and all(s.total_steps == 4 for s in accumulated)
    for got, want in zip(accumulated, big, strict=True):
        assert got.loss == pytest.approx(want.loss, rel=1e-4)
        assert got.grad_norm == pytest.approx(want.grad_norm, rel=1e-4)
