"""A job's reported losses are its own objective's: the ``train_end`` loss (TrainingResult.train_loss, published as
Adapter.train_loss) and the eval split's loss (at each checkpoint and at the end). For a KTO job they are KTO losses,
not the NLL of its answers (which would count the undesirable ones as targets to imitate); for an SFT job they are
the example-weighted mean token NLL they always were."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from engine.domain import ChatMessage, Example, JsonlSource, LoraSpec
from engine.jobs.ports import CancelToken
from engine.splits import Split, SplitRule
from engine.training.base_kl import BaseKlObjective
from engine.training.datasets import EncodedExample, encode_example
from engine.training.kto import KtoObjective, kto_loss, mismatched
from engine.training.models import Quantization, load_base_model, select_device
from engine.training.objectives import WeightedSft
from engine.training.packing import per_example_nll
from engine.training.preparation import ResolvedDataset
from engine.training.recipe import run_training, task_objective
from engine.training.run import TrainingRun
from engine.training.run_state import Checkpointing
from engine.training.runner import TrainingRunner
from engine.training.spec import EVAL_SPLIT, EvalReported, Hyperparameters, Precision, TrainingJobSpec
from tests.engine.test_training import RecordingSink

pytestmark = pytest.mark.model

MAX_SEQ_LENGTH = 64
CAPITALS = [("France", "Lyon"), ("Italy", "Milan"), ("Spain", "Seville"), ("Peru", "Cusco"), ("Chile", "Santiago"),
            ("Japan", "Tokyo"), ("Kenya", "Nairobi")]


def _example(country: str, capital: str, weight: float = 1.0) -> Example:
    return Example(messages=(ChatMessage("user", f"What is the capital of {country}?"),
                             ChatMessage("assistant", f"The capital of {country} is {capital}.")), weight=weight)


def _spec(**hyperparameters) -> TrainingJobSpec:
    settings = {"epochs": 1, "batch_size": 4, "learning_rate": 1e-2, "seed": 1, "max_seq_length": MAX_SEQ_LENGTH,
                "precision": Precision.FP32}
    settings.update(hyperparameters)
    return TrainingJobSpec(base_model="tiny", dataset=JsonlSource("x.jsonl"),
                           lora=LoraSpec(rank=4, alpha=8, dropout=0.0), hyperparameters=Hyperparameters(**settings))


def _losses(sink: RecordingSink, split: str) -> list[tuple[int, float]]:
    return [(e.step, dict(e.metrics)["loss"]) for e in sink.events if isinstance(e, EvalReported) and e.split == split]


class _Saved:
    """The adapter a run saved, on the tiny Llama, with a plain (unpacked, one example at a time) forward."""

    def __init__(self, model_dir: Path, adapter_dir: Path) -> None:
        from peft import PeftModel

        plan = select_device(Precision.FP32)
        base, self.tokenizer = load_base_model(model_dir, plan=plan, quantization=Quantization.NONE)
        self.model = PeftModel.from_pretrained(base, adapter_dir).eval()
        self.device = plan.torch_device

    def encode(self, examples: list[Example]) -> list[EncodedExample]:
        return [encode_example(self.tokenizer, e, MAX_SEQ_LENGTH) for e in examples]

    @torch.no_grad()
    def nll(self, examples: list[EncodedExample], *, adapter: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """[n] summed target NLL of each example, [n] its target counts."""
        sums, counts = [], []
        for e in examples:
            logits = self._logits(e, adapter)
            s, c = per_example_nll(logits, torch.tensor([e.labels], device=logits.device))
            sums.append(s[0].float().cpu())
            counts.append(c[0].cpu())
        return torch.stack(sums), torch.stack(counts)

    def _logits(self, e: EncodedExample, adapter: bool) -> torch.Tensor:
        ids = torch.tensor([e.input_ids], device=self.device)
        if adapter:
            return self.model(input_ids=ids).logits
        with self.model.disable_adapter():
            return self.model(input_ids=ids).logits

    def sft_loss(self, examples: list[Example]) -> float:
        """The weighted mean of per-example token-mean NLL (what the recipe always reported for an SFT job)."""
        sums, counts = self.nll(self.encode(examples))
        weights = torch.tensor([e.weight for e in examples])
        return float((sums / counts * weights).sum() / weights.sum())

    def kto_loss(self, examples: list[Example], desirable: list[bool]) -> float:
        """KTO's loss of the examples taken as one batch (paper eq. (7)/(8); z0 over all of their mismatched
        pairs), with engine.training.kto's formula on log-probs of this plain forward."""
        encoded = self.encode(examples)
        pairs = mismatched(encoded)
        policy, reference = -self.nll(encoded)[0], -self.nll(encoded, adapter=False)[0]
        policy_kl, reference_kl = -self.nll(pairs)[0], -self.nll(pairs, adapter=False)[0]
        weights = torch.tensor([e.weight for e in examples])
        return float(kto_loss(policy, reference, policy_kl, reference_kl, torch.tensor(desirable), weights).loss)


def test_a_kto_jobs_train_loss_is_its_kto_loss_not_the_nll_of_its_undesirable_answers(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The reviewer's finding: a KTO job of undesirable examples only (lambda_U = 0.5) minimises
    lambda_U * (1 - sigmoid(beta * (z0 - r))) <= 0.5 per example; its train loss was the NLL of its rejected
    answers (about 5 on the tiny Llama), a number that goes down as the adapter imitates what users rejected."""
    examples = [_example(c, k, weight=0.5) for c, k in CAPITALS[:4]]
    sink = RecordingSink()
    result = run_training(TrainingRun(spec=_spec(), base_model_dir=tiny_model_dir, examples=examples,
                                      output_dir=tmp_path / "adapter", objective=KtoObjective([False] * 4)),
                          sink, CancelToken())
    assert result.final_task_loss <= 0.5  # the step's KTO loss, bounded by lambda_U
    assert result.train_loss <= 0.5, (
        f"a KTO job's train loss is {result.train_loss:.3f}: the NLL of its rejected answers, not its KTO loss "
        f"(last step's KTO task loss {result.final_task_loss:.3f})")
    assert _losses(sink, "train_end") == [(1, result.train_loss)]
    saved = _Saved(tiny_model_dir, tmp_path / "adapter")
    assert result.train_loss == pytest.approx(saved.kto_loss(examples, [False] * 4), rel=1e-4, abs=1e-6)


def test_a_kto_jobs_eval_loss_is_the_kto_loss_of_its_held_out_examples(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Held-out examples carry their own labels; their loss, at the end and at each checkpoint, is KTO's."""
    trained = [_example(c, k, 2.0 if i % 2 else 0.5) for i, (c, k) in enumerate(CAPITALS[:4])]
    trained_labels = [bool(i % 2) for i in range(4)]
    held_out = [_example(c, k, w) for (c, k), w in zip(CAPITALS[4:], (2.0, 0.5, 0.5), strict=True)]
    held_out_labels = [True, False, False]

    def run(out: Path, **hyperparameters) -> TrainingRun:
        return TrainingRun(spec=_spec(**hyperparameters), base_model_dir=tiny_model_dir, examples=trained,
                           output_dir=out, eval_examples=held_out, objective=KtoObjective(trained_labels),
                           eval_objective=KtoObjective(held_out_labels))

    sink = RecordingSink()
    result = run_training(run(tmp_path / "one", epochs=2, max_steps=1), sink, CancelToken())
    assert result.eval_loss is not None and 0 < result.eval_loss <= 2.0  # bounded by the largest lambda
    assert _losses(sink, EVAL_SPLIT) == [(1, result.eval_loss)]
    saved = _Saved(tiny_model_dir, tmp_path / "one")
    assert result.eval_loss == pytest.approx(saved.kto_loss(held_out, held_out_labels), rel=1e-4, abs=1e-6)
    assert result.eval_loss != pytest.approx(saved.sft_loss(held_out), rel=1e-2)  # not what it used to report
    assert result.train_loss == pytest.approx(saved.kto_loss(trained, trained_labels), rel=1e-4, abs=1e-6)

    # A run two steps long checkpoints after its first, the state the run above ended in (same seed, order and
    # learning rate): the eval loss that checkpoint reports and records is the same KTO loss.
    kept: list[float | None] = []
    checkpointed = replace(run(tmp_path / "two", epochs=2, max_steps=2), checkpointing=Checkpointing(
        every_steps=1, every_seconds=0, scratch_dir=tmp_path / "scratch",
        save=lambda step, state_dir, loss, eval_loss=None: kept.append(eval_loss)))
    sink = RecordingSink()
    run_training(checkpointed, sink, CancelToken())
    (first_step, at_checkpoint), _ = _losses(sink, EVAL_SPLIT)
    assert first_step == 1 and kept == [at_checkpoint]
    assert at_checkpoint == pytest.approx(result.eval_loss, rel=1e-4, abs=1e-6)


def test_an_sft_jobs_reported_losses_are_unchanged(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Weighted SFT's loss over a set is the example-weighted mean of per-example token-mean NLL, as before; a KL
    term to the base model wrapped around it (here at the prompt positions) is left out of the train loss."""
    trained = [_example(c, k, 2.0 if i % 2 else 1.0) for i, (c, k) in enumerate(CAPITALS[:4])]
    held_out = [_example(c, k, w) for (c, k), w in zip(CAPITALS[4:], (2.0, 0.5, 1.0), strict=True)]
    wrapped = BaseKlObjective(WeightedSft(), [False] * 4, 1.0, trained=False, prompt_weight=0.5)
    assert isinstance(task_objective(wrapped), WeightedSft)
    for name, objective in (("plain", None), ("wrapped", wrapped)):
        sink = RecordingSink()
        result = run_training(TrainingRun(spec=_spec(epochs=2, batch_size=3), base_model_dir=tiny_model_dir,
                                          examples=trained, output_dir=tmp_path / name, eval_examples=held_out,
                                          objective=objective), sink, CancelToken())
        saved = _Saved(tiny_model_dir, tmp_path / name)
        assert result.train_loss == pytest.approx(saved.sft_loss(trained), rel=1e-4)
        assert result.eval_loss == pytest.approx(saved.sft_loss(held_out), rel=1e-4)
        assert _losses(sink, "train_end") == [(result.steps, result.train_loss)]


@dataclass(frozen=True)
class _Output:
    eval_split: SplitRule | None = None


def test_the_runners_split_keeps_the_held_out_examples_kto_labels() -> None:
    """The eval split of a KTO job's dataset keeps each held-out example's own label (they make its eval loss)."""
    examples = [_example(f"Country {i}", f"City {i}") for i in range(12)]
    desirable = tuple(i % 3 == 0 for i in range(12))
    rule = SplitRule(eval_fraction=0.4, seed=3)
    ctx = SimpleNamespace(record=lambda event: None, set_output=lambda output: None,
                          job=SimpleNamespace(output=_Output()))
    dataset = ResolvedDataset(examples, summary=None, desirable=desirable, split=rule)  # type: ignore[arg-type]
    (trained, trained_labels), (held_out, held_out_labels) = TrainingRunner._split(ctx, _spec(), dataset)  # type: ignore[arg-type]
    label = dict(zip((id(e) for e in examples), desirable, strict=True))
    assert held_out and trained and all(rule.of(e) is Split.EVAL for e in held_out)
    assert trained_labels == tuple(label[id(e)] for e in trained)
    assert held_out_labels == tuple(label[id(e)] for e in held_out)
    assert set(held_out_labels) == {True, False}  # both kinds held out: the labels are not all one value
    sft = ResolvedDataset(examples, summary=None, split=rule)  # type: ignore[arg-type]
    assert [labels for _, labels in TrainingRunner._split(ctx, _spec(), sft)] == [None, None]  # type: ignore[arg-type]
